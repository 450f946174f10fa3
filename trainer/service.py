"""The retrain service: consumes loan.retrain-requests and runs training rounds.

Requests that arrive while a round runs queue up in Kafka; when the round ends they are read
together, and those that arrived before it finished are counted as covered by it, not trained
again. A round trains on the window the requests name (the union of their windows) or, if none
names one, on the newest ``recent_window_days`` of labelled event time.

A drift is confirmed a few hundred labelled rows after it began, far too few to train on: a
request whose window is still short waits (up to ``wait_for_rows_s``) until enough outcomes of
the new regime have been labelled. The request stays uncommitted meanwhile, so a trainer killed
while it waits reads it again.

When a challenger asked for by a drift loses, the shared ``RetryPolicy`` asks again (a new
request on loan.retrain-requests, read back like any other) with a window from the drift's
confirmation on, once it holds as many labelled rows as the lost round had; attempts are bounded.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import pandas as pd
from confluent_kafka import Message
from pydantic import ValidationError

from loanstream.config import KafkaSettings
from loanstream.contracts import DeadLetter, ModelUpdate, RetrainRequest
from loanstream.errors import LoanStreamError
from loanstream.kafka.clients import CommittingConsumer, IdempotentProducer
from loanstream.retraining import RetryPolicy
from loanstream.spec import FeatureSpec
from loanstream.topics import DEAD_LETTER, RETRAIN_REQUESTS
from trainer.data import read_labelled, rows_to_train
from trainer.metrics import TrainerMetrics
from trainer.pipeline import RoundResult, options_from, training_round
from trainer.registry import Registry
from trainer.settings import TrainerSettings

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Window:
    start: datetime | None
    end: datetime | None


def union_window(requests: list[RetrainRequest]) -> Window:
    """The smallest window covering every request's; open-ended if any request is."""
    starts = [r.window_start for r in requests]
    ends = [r.window_end for r in requests]
    start = None if any(s is None for s in starts) else min(s for s in starts if s)
    end = None if any(e is None for e in ends) else max(e for e in ends if e)
    return Window(start, end)


def rows_needed(requests: list[RetrainRequest], min_rows: int) -> int:
    """Labelled rows a round on ``requests`` waits for: enough for a training split of
    ``min_rows``, and at least what any request asks for itself (a retry asks for as many as
    the round it follows had)."""
    return max(rows_to_train(min_rows), *(r.min_rows or 0 for r in requests))


class RetrainService:
    def __init__(
        self,
        kafka: KafkaSettings,
        spec: FeatureSpec,
        settings: TrainerSettings,
        registry: Registry,
        metrics: TrainerMetrics,
        publisher: Callable[[ModelUpdate], None],
    ) -> None:
        self.kafka = kafka
        self.spec = spec
        self.settings = settings
        self.registry = registry
        self.metrics = metrics
        self.publisher = publisher
        self.last_round_end_ms = 0
        self.retry = RetryPolicy(settings.retry_attempts)
        self.retries: list[RetrainRequest] = []  # follow-ups of lost rounds, for run() to send
        self.rounds_started = 0

    def parse(self, messages: list[Message], dead: IdempotentProducer) -> list[RetrainRequest]:
        requests = []
        for msg in messages:
            try:
                request = RetrainRequest.from_json(msg.value() or b"")
            except ValidationError as err:
                self.metrics.requests.labels("invalid").inc()
                logger.warning(
                    "invalid retrain request topic=%s partition=%s offset=%s",
                    msg.topic(),
                    msg.partition(),
                    msg.offset(),
                )
                letter = DeadLetter.of(
                    source_topic=msg.topic() or "",
                    partition=msg.partition() or 0,
                    offset=msg.offset() or 0,
                    key=msg.key(),
                    value=msg.value(),
                    reason="invalid",
                    error=str(err)[:2000],
                    service="trainer",
                )
                dead.produce(self.kafka.topic(DEAD_LETTER), msg.key(), letter.to_json())
                continue
            # A follow-up of the retry policy is sent right after the round it follows, often
            # within the same millisecond: it is never covered by that round.
            if request.attempt == 1 and msg.timestamp()[1] <= self.last_round_end_ms:
                self.metrics.requests.labels("deduplicated").inc()
                logger.info(
                    "request %s arrived during the last round: covered by it", request.request_id
                )
                continue
            requests.append(request)
        return requests

    def window_frame(self, window: Window) -> pd.DataFrame:
        """The labelled rows a round trains on: the window's, or the newest recent_window_days."""
        frame = read_labelled(self.kafka, self.spec, window.start, window.end)
        if window.start is None and window.end is None and len(frame):
            times = pd.to_datetime(frame[self.spec.event_time_column], utc=True)
            recent = times >= times.max() - pd.Timedelta(days=self.settings.recent_window_days)
            frame = frame[recent]
        return frame

    def wait_for_rows(
        self, window: Window, stop: threading.Event, needed: int
    ) -> pd.DataFrame | None:
        """The window's rows once there are ``needed`` of them, or whatever the wait ends with;
        None if the service was stopped while it waited."""
        deadline = time.monotonic() + self.settings.wait_for_rows_s
        frame = self.window_frame(window)
        while len(frame) < needed and time.monotonic() < deadline:
            logger.info(
                "retrain waits for labelled rows since %s: %d of the %d it needs",
                window.start,
                len(frame),
                needed,
            )
            self.metrics.rows_missing.set(needed - len(frame))
            self.metrics.row_checks.inc()
            if stop.wait(self.settings.rows_poll_s):
                return None
            frame = self.window_frame(window)
        self.metrics.rows_missing.set(0)
        return frame

    def handle(
        self, requests: list[RetrainRequest], stop: threading.Event | None = None
    ) -> RoundResult | None:
        """One training round for a batch of requests; failures are logged and counted."""
        if not requests:
            return None
        try:
            needed = rows_needed(requests, self.settings.min_rows)
            frame = self.wait_for_rows(union_window(requests), stop or threading.Event(), needed)
        except LoanStreamError as err:
            self.metrics.rounds.labels("failed").inc()
            logger.error("retrain failed reading its rows: %s", err)
            return None
        if frame is None:
            return None  # stopped while waiting: the requests stay uncommitted, read again
        self.metrics.requests.labels("trained").inc(len(requests))
        began = time.monotonic()
        try:
            result = training_round(
                frame,
                self.spec,
                self.settings,
                self.registry,
                options_from(self.settings, shuffle_labels=self.drilled()),
                self.publisher,
                tags={
                    "requests": ",".join(r.request_id for r in requests)[:5000],
                    "reason": requests[0].reason[:500],
                },
                on_step=lambda step: logger.info("retrain: %s", step),
            )
        except LoanStreamError as err:
            self.metrics.rounds.labels("failed").inc()
            logger.error("retrain failed: %s", err)
            return None
        except Exception:  # a bug in one round must not end the service: count it, keep serving
            self.metrics.rounds.labels("failed").inc()
            logger.exception("retrain failed unexpectedly")
            return None
        finally:
            self.metrics.seconds.observe(time.monotonic() - began)
            self.last_round_end_ms = int(time.time() * 1000)
        self.metrics.rounds.labels("promoted" if result.promoted else "rejected").inc()
        if result.promoted:
            self.metrics.champion.set(float(result.version.version))
        self.retries += self.follow_ups(requests, result.promoted, len(frame))
        return result

    def drilled(self) -> bool:
        """Whether this round is one of the drill's deliberately losing ones."""
        self.rounds_started += 1
        drill = self.rounds_started <= self.settings.drill_losing_rounds
        if drill:
            logger.warning("drill: round %d trains on shuffled labels", self.rounds_started)
        return drill

    def follow_ups(
        self, requests: list[RetrainRequest], promoted: bool, rows_used: int
    ) -> list[RetrainRequest]:
        """The retry policy's requests after a round: one per drift whose challenger lost
        (the champion that drifted still serves, so the drift stands)."""
        out: dict[str, RetrainRequest] = {}
        needed = rows_to_train(self.settings.min_rows)
        for request in requests:
            again = self.retry.follow_up(
                request, promoted, True, rows_used, needed, datetime.now(UTC)
            )
            if again is not None and again.drift_event_id not in out:
                out[again.drift_event_id or ""] = again
                logger.info("the challenger lost; asking again: %s", again.reason)
        return list(out.values())

    def run(self, stop: threading.Event, group_id: str = "loanstream-trainer") -> None:
        topic = self.kafka.topic(RETRAIN_REQUESTS)
        dead = IdempotentProducer(self.kafka)
        # A round may wait for rows and then train for minutes without polling: the group must
        # not count the trainer as dead meanwhile (librdkafka's default allows 5 minutes).
        overrides = {"max.poll.interval.ms": 3_600_000}
        with CommittingConsumer(self.kafka, group_id, [topic], overrides) as consumer:
            logger.info("trainer waiting for retrain requests on %s", topic)
            for batch in consumer.batches(max_messages=100, timeout=1.0):
                if stop.is_set():
                    break  # this batch stays uncommitted: the next start reads it again
                self.handle(self.parse(batch, dead), stop)
                if stop.is_set():
                    break  # stopped mid-round or while waiting for rows: read again next start
                for retry in self.retries:
                    dead.produce(topic, retry.model_name.encode(), retry.to_json())
                self.retries.clear()
                dead.poll(0)
        dead.flush()
