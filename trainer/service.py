"""The retrain service: consumes loan.retrain-requests and runs training rounds.

Requests that arrive while a round runs queue up in Kafka; when the round ends they are read
together, and those that arrived before it finished are counted as covered by it, not trained
again. A round trains on the window the requests name (the union of their windows) or, if none
names one, on the newest ``recent_window_days`` of labelled event time.

Nothing read can end the service. A request that is invalid, for another model, or names a
window the trainer will not train on (:mod:`trainer.requests`) goes to the dead-letter topic with
the reason; so does a labelled record that breaks the contract or the spec, once per process; so
do the requests of a round that failed. A round the registry failed (it could not say which
model is champion) is tried again ``registry_attempts`` times before its requests go there: a
round never promotes on a registry it could not read. Every batch is committed once handled.

A drift is confirmed a few hundred labelled rows after it began, far too few to train on: a
request whose window is still short waits (up to ``wait_for_rows_s``) until enough outcomes of
the new regime have been labelled. The request stays uncommitted meanwhile, so a trainer killed
while it waits reads it again.

When a challenger asked for by a drift loses, the shared ``RetryPolicy`` asks again (a new
request on loan.retrain-requests, read back like any other) with a window from the drift's
confirmation on, once it holds as many labelled rows as the lost round had; attempts are bounded.

At start, the champion in the registry and the last ModelUpdate are reconciled
(:mod:`trainer.reconcile`).

How each round ends is published on loan.retrain-results (waiting for rows, promoted, in shadow,
champion kept, failed), for people and the alerts command; a result that cannot be published is
logged. Under the ``shadow`` promotion policy, between request batches and every
``shadow_check_s``, the challenger in shadow is judged on the live outcomes it shares with the
champion (:mod:`trainer.shadow`): promoted as a round would promote it, or dropped.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pandas as pd
from confluent_kafka import KafkaException, Message
from pydantic import ValidationError

from loanstream.config import KafkaSettings
from loanstream.contracts import (
    DeadLetter,
    ModelUpdate,
    RetrainOutcome,
    RetrainRequest,
    RetrainResult,
)
from loanstream.errors import InvalidRecord, LoanStreamError
from loanstream.kafka.clients import CommittingConsumer, IdempotentProducer
from loanstream.retraining import RetryPolicy
from loanstream.spec import FeatureSpec
from loanstream.topics import DEAD_LETTER, LABELLED, RETRAIN_REQUESTS, RETRAIN_RESULTS
from trainer.data import read_labelled, rows_to_train
from trainer.metrics import TrainerMetrics
from trainer.pipeline import RoundResult, options_from, round_outcome, training_round
from trainer.reconcile import announcement, last_update
from trainer.registry import BY_SHADOW, Registry, RegistryError
from trainer.requests import Window, bounded_window, refusal, union_window
from trainer.settings import TrainerSettings
from trainer.shadow import ShadowVerdict, Verdict, decide_shadow, read_shared

logger = logging.getLogger(__name__)

__all__ = ["Received", "RetrainService", "Window", "rows_needed", "union_window"]

LETTERED_LIMIT = 100_000
"""Invalid labelled records remembered as already dead-lettered (each round reads its window
again, and a waiting request every few seconds: one letter per record, not one per read)."""


@dataclass(frozen=True)
class Received:
    """A request as read, with the message it came in: a round that fails dead-letters it."""

    request: RetrainRequest
    message: Message


def rows_needed(requests: list[RetrainRequest], min_rows: int) -> int:
    """Labelled rows a round on ``requests`` waits for: enough for a training split of
    ``min_rows``, and at least what any request asks for itself (a retry asks for as many as
    the round it follows had)."""
    return max(rows_to_train(min_rows), *(r.min_rows or 0 for r in requests))


class RetrainService:
    """Reads retrain requests, trains on their window, dead-letters what it cannot use."""

    def __init__(
        self,
        kafka: KafkaSettings,
        spec: FeatureSpec,
        settings: TrainerSettings,
        registry: Registry,
        metrics: TrainerMetrics,
        publisher: Callable[[ModelUpdate], None],
        letters: Callable[[bytes | None, DeadLetter], None] | None = None,
        results: Callable[[RetrainResult], None] | None = None,
    ) -> None:
        """``letters(key, letter)`` receives each dead letter; by default it is produced to
        loan.dead-letter. ``results`` receives how each round or shadow verdict ended; by
        default it is produced to loan.retrain-results."""
        self.kafka = kafka
        self.spec = spec
        self.settings = settings
        self.registry = registry
        self.metrics = metrics
        self.publisher = publisher
        self.letters = letters or self.send_letter
        self.results = results or self.send_result
        self.next_shadow_check = 0.0
        self.last_round_end_ms = 0
        self.retry = RetryPolicy(settings.retry_attempts)
        self.retries: list[RetrainRequest] = []  # follow-ups of lost rounds, for run() to send
        self.rounds_started = 0
        self.lettered: dict[bytes, None] = {}  # digests of labelled records already sent
        self._producer: IdempotentProducer | None = None

    @property
    def producer(self) -> IdempotentProducer:
        if self._producer is None:
            self._producer = IdempotentProducer(self.kafka)
        return self._producer

    def send(self, topic: str, key: bytes | None, value: bytes) -> None:
        """Produce, logging what Kafka refuses at once (a record too large, say): a record the
        trainer cannot send must not end it."""
        try:
            self.producer.produce(topic, key, value)
        except KafkaException as err:
            logger.error("could not send a record to %s: %s", topic, err)

    def send_letter(self, key: bytes | None, letter: DeadLetter) -> None:
        self.send(self.kafka.topic(DEAD_LETTER), key, letter.to_json())

    def send_result(self, result: RetrainResult) -> None:
        self.send(self.kafka.topic(RETRAIN_RESULTS), result.model_name.encode(), result.to_json())

    def tell(
        self, requests: list[RetrainRequest], outcome: RetrainOutcome, **fields: object
    ) -> None:
        """Publish how a round on ``requests`` ended; a failure to is logged, never raised."""
        drifts = sorted({r.drift_event_id for r in requests if r.drift_event_id})
        self.publish_result(
            outcome,
            request_ids=[r.request_id for r in requests][:1000],
            drift_event_ids=drifts[:1000],
            **fields,
        )

    def publish_result(self, outcome: RetrainOutcome, **fields: object) -> None:
        """Publish a RetrainResult (a round's, or a shadow verdict's); a failure to is logged,
        never raised."""
        try:
            self.results(
                RetrainResult(model_name=self.settings.model_name, outcome=outcome, **fields)
            )
        except Exception as err:  # a result is news, not a decision: never end the trainer
            logger.error("could not publish the retrain result (%s): %s", outcome, err)

    def dead_letter(
        self,
        source: str,
        position: tuple[int, int],
        key: bytes | None,
        value: bytes | None,
        reason: str,
        error: str | BaseException,
    ) -> None:
        """Send one record the trainer could not use to the dead-letter topic, with why.
        ``source`` is the declared topic name; ``position`` (partition, offset), or (-1, -1).
        An exception as ``error`` keeps the paths of the fields that failed."""
        letter = DeadLetter.of(
            source_topic=self.kafka.topic(source),
            partition=position[0],
            offset=position[1],
            key=key,
            value=value,
            reason=reason,
            error=error,
            service="trainer",
            raw=self.kafka.dead_letter_raw,
        )
        self.metrics.dead_letters.labels(source, reason).inc()
        self.letters(key, letter)

    def dead_letter_request(self, msg: Message, reason: str, error: str | BaseException) -> None:
        logger.warning(
            "retrain request refused (%s) topic=%s partition=%s offset=%s",
            reason,
            msg.topic(),
            msg.partition(),
            msg.offset(),
        )
        position = (msg.partition() or 0, msg.offset() or 0)
        self.dead_letter(RETRAIN_REQUESTS, position, msg.key(), msg.value(), reason, error)

    def labelled_invalid(self, key: bytes | None, value: bytes, error: InvalidRecord) -> None:
        """Dead-letter an invalid loan.labelled record the first time this process reads it.
        (The reader does not say where the record was: its key names it.)"""
        digest = hashlib.sha256(b"%d:" % len(key or b"") + (key or b"") + value).digest()
        if digest in self.lettered:
            return
        self.lettered[digest] = None
        if len(self.lettered) > LETTERED_LIMIT:
            del self.lettered[next(iter(self.lettered))]  # the oldest: it may be sent again
        self.dead_letter(LABELLED, (-1, -1), key, value, error.reason, error)

    def parse(self, messages: list[Message]) -> list[Received]:
        """The requests of a batch to train on; the others are dead-lettered or, when a round
        already covered them, counted."""
        received = []
        now = datetime.now(UTC)
        for msg in messages:
            value = msg.value() or b""
            if len(value) > self.settings.max_request_bytes:
                self.metrics.requests.labels("invalid").inc()
                self.dead_letter_request(
                    msg,
                    "oversize",
                    f"a retrain request must be at most {self.settings.max_request_bytes} bytes, "
                    f"got {len(value)}",
                )
                continue
            try:
                request = RetrainRequest.from_json(value)
            except ValidationError as err:
                self.metrics.requests.labels("invalid").inc()
                self.dead_letter_request(msg, "invalid", err)
                continue
            refused = refusal(request, self.settings, now)
            if refused is not None:
                self.metrics.requests.labels("refused").inc()
                self.dead_letter_request(msg, refused.reason, refused.error)
                continue
            # A follow-up of the retry policy is sent right after the round it follows, often
            # within the same millisecond: it is never covered by that round.
            if request.attempt == 1 and msg.timestamp()[1] <= self.last_round_end_ms:
                self.metrics.requests.labels("deduplicated").inc()
                logger.info(
                    "request %s arrived during the last round: covered by it", request.request_id
                )
                continue
            received.append(Received(request, msg))
        return received

    def window_frame(self, window: Window) -> pd.DataFrame:
        """The labelled rows a round trains on: at most ``max_training_rows``, the newest, of
        at most ``max_window_days`` of event time (``recent_window_days`` when no end is named)."""
        window = bounded_window(window, self.settings.max_window_days)
        frame = read_labelled(
            self.kafka,
            self.spec,
            window.start,
            window.end,
            self.settings.max_training_rows,
            self.labelled_invalid,
            datetime.now(UTC) + timedelta(days=self.settings.max_future_days),
        )
        if (window.start is None or window.end is None) and len(frame):
            days = self.settings.max_window_days
            if window.start is None and window.end is None:
                days = min(days, self.settings.recent_window_days)
            times = frame[self.spec.event_time_column]
            frame = frame[times >= times.max() - pd.Timedelta(days=days)]
        return frame

    def wait_for_rows(
        self,
        window: Window,
        stop: threading.Event,
        needed: int,
        on_wait: Callable[[int], None] | None = None,
    ) -> pd.DataFrame | None:
        """The window's rows once there are ``needed`` of them, or whatever the wait ends with;
        None if the service was stopped while it waited. ``on_wait(rows)`` is called once, when
        the wait begins."""
        deadline = time.monotonic() + self.settings.wait_for_rows_s
        frame = self.window_frame(window)
        if len(frame) < needed and on_wait is not None and self.settings.wait_for_rows_s > 0:
            on_wait(len(frame))
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
        self, received: list[Received], stop: threading.Event | None = None
    ) -> RoundResult | None:
        """One training round for a batch of requests. A round the registry failed is tried
        again after ``registry_retry_s``; a round that fails for good dead-letters its requests.
        None when no round ran to its end (failed, or stopped: then the batch is read again)."""
        if not received:
            return None
        stop = stop or threading.Event()
        for attempt in range(1, self.settings.registry_attempts + 1):
            try:
                return self.train_round([r.request for r in received], stop)
            except RegistryError as err:
                self.metrics.rounds.labels("failed").inc()
                if attempt == self.settings.registry_attempts:
                    logger.error("retrain failed: %s; its requests go to the dead letters", err)
                    self.dead_letter_round(received, "registry_unavailable", str(err))
                    return None
                logger.warning(
                    "retrain stopped, the registry did not answer (attempt %d of %d, again in "
                    "%.0f s): %s",
                    attempt,
                    self.settings.registry_attempts,
                    self.settings.registry_retry_s,
                    err,
                )
                if stop.wait(self.settings.registry_retry_s):
                    return None
            except LoanStreamError as err:
                self.metrics.rounds.labels("failed").inc()
                logger.error("retrain failed: %s", err)
                self.dead_letter_round(received, "round_failed", str(err))
                return None
            except Exception as err:  # a bug in one round must not end the service
                self.metrics.rounds.labels("failed").inc()
                logger.exception("retrain failed unexpectedly")
                self.dead_letter_round(received, "round_failed", err)
                return None
        return None

    def dead_letter_round(
        self, received: list[Received], reason: str, error: str | BaseException
    ) -> None:
        self.tell(
            [r.request for r in received],
            RetrainOutcome.FAILED,
            reason=f"{reason}: {error}"[:2000],
        )
        self.metrics.requests.labels("failed").inc(len(received))
        for r in received:
            self.dead_letter_request(r.message, reason, error)

    def train_round(
        self, requests: list[RetrainRequest], stop: threading.Event
    ) -> RoundResult | None:
        """Wait for the rows, train, register, promote or not; None when stopped meanwhile."""
        needed = rows_needed(requests, self.settings.min_rows)

        def waiting(rows: int) -> None:
            self.tell(
                requests,
                RetrainOutcome.WAITING,
                reason=f"waiting for labelled rows: {rows} of the {needed} a round needs",
                rows=rows,
                rows_needed=needed,
            )

        frame = self.wait_for_rows(union_window(requests), stop, needed, waiting)
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
                self.announce,
                tags={
                    "requests": ",".join(r.request_id for r in requests)[:5000],
                    "drift_events": ",".join(
                        sorted({r.drift_event_id for r in requests if r.drift_event_id})
                    )[:5000],
                    "reason": requests[0].reason[:500],
                },
                on_step=lambda step: logger.info("retrain: %s", step),
            )
        finally:
            self.metrics.seconds.observe(time.monotonic() - began)
            self.last_round_end_ms = int(time.time() * 1000)
        self.metrics.rounds.labels(
            "shadowing" if result.shadowing else "promoted" if result.promoted else "rejected"
        ).inc()
        if result.promoted:
            self.metrics.champion.set(float(result.version.version))
        self.tell(
            requests,
            round_outcome(result),
            reason=result.reason[:2000],
            challenger_version=result.version.version,
            champion_version=result.champion_version,
            metrics=result.version.metrics,
            champion_metrics=result.champion_metrics or {},
            rows=len(frame),
            rows_needed=needed,
        )
        # A challenger in shadow has not lost: no retry for its drift (its verdict comes later).
        self.retries += self.follow_ups(requests, result.promoted or result.shadowing, len(frame))
        return result

    def announce(self, update: ModelUpdate) -> None:
        """Publish a promotion; one that cannot be published still stands (the registry
        decides), and the next start announces it again."""
        try:
            self.publisher(update)
        except (LoanStreamError, KafkaException) as err:
            logger.error(
                "%s v%s is champion but its ModelUpdate was not published (%s): the scorers "
                "take it from the registry when they next look",
                update.model_name,
                update.version,
                err,
            )

    def reconcile(self) -> ModelUpdate | None:
        """Announce the registry's champion when loan.model-updates last named another (a
        promotion whose update was lost); what was announced, or None."""
        try:
            champion = self.registry.champion()
            last = last_update(self.kafka, self.settings.model_name)
        except (LoanStreamError, KafkaException) as err:
            logger.warning("could not compare the champion with loan.model-updates: %s", err)
            return None
        update = announcement(champion, last)
        if update is not None:
            logger.info(
                "loan.model-updates last named v%s, the registry's champion is v%s: announcing it",
                last.version if last else "-",
                update.version,
            )
            self.announce(update)
            self.metrics.champion.set(float(update.version))
        elif champion is not None:
            self.metrics.champion.set(float(champion.version))
        return update

    def check_shadow(self) -> ShadowVerdict | None:
        """Judge the challenger in shadow on the live outcomes it shares with the champion, and
        promote or drop it; None when there is none to judge or it could not be read (logged,
        judged again next time)."""
        settings = self.settings
        try:
            shadowing = self.registry.challenger()
            if shadowing is None:
                return None
            champion = self.registry.champion()
            challenger = shadowing.version
            if champion is None or champion.version == challenger.version:
                return None
            shared = read_shared(
                self.kafka,
                settings.model_name,
                challenger.version,
                champion.version,
                shadowing.since,
                settings.shadow_max_rows,
            )
            verdict = decide_shadow(
                shared,
                settings.shadow_min_outcomes,
                settings.shadow_auc_margin,
                settings.shadow_ece_bound,
            )
            self.metrics.shadow_outcomes.set(verdict.outcomes)
            self.metrics.shadow_verdicts.labels(verdict.verdict.value).inc()
            if verdict.verdict == Verdict.WAIT:
                logger.info("challenger v%s in shadow: %s", challenger.version, verdict.reason)
                return verdict
            requests = shadowing.tags.get("requests", "")
            drifts = shadowing.tags.get("drift_events", "")
            fields: dict[str, object] = {
                "reason": verdict.reason,
                "request_ids": [r for r in requests.split(",") if r][:1000],
                "drift_event_ids": [d for d in drifts.split(",") if d][:1000],
                "challenger_version": challenger.version,
                "metrics": verdict.challenger_metrics,
                "champion_metrics": verdict.champion_metrics,
                "rows": verdict.outcomes,
            }
            if verdict.verdict == Verdict.PROMOTE:
                self.registry.promote(challenger.version, f"shadow: {verdict.reason}", BY_SHADOW)
                self.metrics.champion.set(float(challenger.version))
                logger.info("challenger v%s promoted: %s", challenger.version, verdict.reason)
                self.announce(challenger.update())
                outcome, serving = RetrainOutcome.PROMOTED, challenger.version
            else:
                self.registry.clear_challenger()
                self.registry.tag_version(
                    challenger.version, "rejection_reason", f"shadow: {verdict.reason}"
                )
                logger.info("challenger v%s dropped: %s", challenger.version, verdict.reason)
                outcome, serving = RetrainOutcome.KEPT_CHAMPION, champion.version
        except (LoanStreamError, KafkaException) as err:
            self.metrics.shadow_verdicts.labels("failed").inc()
            logger.error("could not judge the challenger in shadow: %s", err)
            return None
        except Exception:  # a bug in a verdict must not end the service
            self.metrics.shadow_verdicts.labels("failed").inc()
            logger.exception("judging the challenger in shadow failed unexpectedly")
            return None
        self.publish_result(outcome, champion_version=serving, **fields)
        return verdict

    def shadow_due(self) -> bool:
        """Whether it is time to judge the challenger in shadow (policy ``shadow`` only)."""
        if self.settings.promotion_policy != "shadow":
            return False
        now = time.monotonic()
        if now < self.next_shadow_check:
            return False
        self.next_shadow_check = now + self.settings.shadow_check_s
        return True

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
        self.reconcile()
        # A round may wait for rows and then train for minutes without polling: the group must
        # not count the trainer as dead meanwhile (librdkafka's default allows 5 minutes).
        overrides = {"max.poll.interval.ms": 3_600_000}
        with CommittingConsumer(self.kafka, group_id, [topic], overrides) as consumer:
            logger.info("trainer waiting for retrain requests on %s", topic)
            for batch in consumer.batches(max_messages=100, timeout=1.0):
                if stop.is_set():
                    break  # this batch stays uncommitted: the next start reads it again
                self.handle(self.parse(batch), stop)
                if stop.is_set():
                    break  # stopped mid-round or while waiting for rows: read again next start
                for retry in self.retries:
                    self.send(topic, retry.model_name.encode(), retry.to_json())
                self.retries.clear()
                if self.shadow_due():
                    self.check_shadow()
                if self._producer is not None:
                    self._producer.poll(0)  # serve delivery reports
        self.flush()

    def flush(self) -> None:
        """Wait for what was produced, then let the producer go (a run is over); a failure is
        logged, not raised."""
        producer, self._producer = self._producer, None
        if producer is None:
            return
        try:
            producer.flush()
        except LoanStreamError as err:
            logger.error("not every dead letter or request was delivered: %s", err)
