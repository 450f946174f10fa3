"""Send applications in event-time order at a pace, and each outcome when its time comes.

Pacing is one of: a fixed rate (token bucket), ``speed`` x event time, or as fast as possible.
Outcomes wait in a queue keyed by their outcome time and go out when the event-time clock
passes it, so the merged stream is in event-time order whatever the pace. Failed deliveries are
retried; what still fails is reported, never dropped silently. Under selective labels
(``--labels approved``) due outcomes pass a gate that sends only approved and explored ones.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import orjson
import pandas as pd
from confluent_kafka import KafkaError, Message

from loanstream.config import KafkaSettings
from loanstream.contracts import SCHEMA_VERSION
from loanstream.errors import DeliveryError
from loanstream.frames import application_columns, iso_millis, json_values, message_template
from loanstream.kafka.clients import IdempotentProducer
from loanstream.spec import FeatureSpec
from loanstream.topics import APPLICATIONS, OUTCOMES
from producer.decisions import SelectiveOutcomes
from producer.metrics import ProducerMetrics
from producer.outcomes import OutcomeQueue
from producer.rate import TokenBucket
from producer.selective import Fate

logger = logging.getLogger(__name__)

# As fast as possible, nobody waits for one message: fuller batches mean fewer requests for the
# broker (sharing the machine) to handle. Paced production keeps the low-latency defaults.
BULK_PRODUCER = {"linger.ms": 20, "batch.size": 1_000_000}


@dataclass(frozen=True)
class Pacing:
    """``rate`` applications/s, or ``speed`` x event time, or neither (as fast as possible).

    ``time_scale`` is event seconds per wall second: it says when outcomes are due.
    """

    rate: float | None = None
    speed: float | None = None
    time_scale: float | None = None

    @property
    def paced(self) -> bool:
        return self.rate is not None or self.speed is not None


@dataclass
class EmitSummary:
    applications: int = 0
    outcomes: int = 0
    pending_outcomes: int = 0  # not sent: interrupted, or --no-wait-outcomes
    # --labels approved: outcomes (above) are the approved plus the explored ones
    labels: str = "all"
    explored: int = 0
    withheld: int = 0  # declined or reviewed, not explored: no loan, so no outcome
    undecided: int = 0  # no prediction came within the timeout: not sent, counted
    awaiting_decision: int = 0  # still waiting for their prediction when the run ended
    undecided_examples: list[str] = field(default_factory=list)
    retried: int = 0
    failed: int = 0
    seconds: float = 0.0
    app_seconds: float = 0.0
    first_event: pd.Timestamp | None = None
    last_event: pd.Timestamp | None = None
    errors: list[str] = field(default_factory=list)

    @property
    def rate(self) -> float:
        """Achieved applications per second, from the first send to the last."""
        return self.applications / self.app_seconds if self.app_seconds else 0.0


def outcome_messages(
    rows: pd.DataFrame, spec: FeatureSpec, label_time: str
) -> tuple[list[tuple[bytes, bytes, int]], np.ndarray]:
    """Outcome messages for the labelled rows, and their outcome times (ns).

    Each value is the bytes ``orjson.dumps`` gives for the Outcome dict, built from one orjson
    call per column and one template, as for applications.
    """
    known = rows[label_time].notna() & rows[spec.target_column].notna()
    labelled = rows.loc[known, [spec.id_column, spec.target_column, label_time]]
    times = pd.to_datetime(labelled[label_time], utc=True).to_numpy(dtype="datetime64[ms]")
    stamps = iso_millis(times)
    millis = times.astype(np.int64).tolist()
    ids = labelled[spec.id_column].tolist()
    labels = json_values(labelled[spec.target_column].astype(int).tolist())
    template = message_template(
        [
            b'{"schema_version":' + orjson.dumps(SCHEMA_VERSION) + b',"application_id":',
            b',"label":',
            b',"outcome_time":"',
            b'Z"}',
        ]
    )
    values = [template % row for row in zip(json_values(ids), labels, stamps, strict=True)]
    keys = [key.encode() for key in ids]
    return list(zip(keys, values, millis, strict=True)), times.astype(np.int64) * 1_000_000


class Emitter:
    def __init__(
        self,
        kafka: KafkaSettings,
        spec: FeatureSpec,
        pacing: Pacing,
        metrics: ProducerMetrics,
        label_time: str | None,
        on_sent: Callable[[int], None] = lambda n: None,
        selective: SelectiveOutcomes | None = None,
    ) -> None:
        self.kafka = kafka
        self.spec = spec
        self.pacing = pacing
        self.metrics = metrics
        self.label_time = label_time
        self.on_sent = on_sent
        self.selective = selective
        self.summary = EmitSummary(labels="approved" if selective else "all")
        self._queue = OutcomeQueue()
        self._failed: list[tuple[str, bytes | None, bytes | None, int]] = []
        self._producer = IdempotentProducer(
            kafka, {} if pacing.paced else BULK_PRODUCER, on_delivery=self._delivered
        )
        self._bucket = TokenBucket(pacing.rate) if pacing.rate else None
        self._wall0: float | None = None
        self._event0: int | None = None
        self._clock_ns = np.iinfo(np.int64).min

    def _delivered(self, err: KafkaError | None, msg: Message) -> None:
        if err is None:  # only failures are reported (delivery.report.only.error)
            return
        topic = msg.topic() or ""
        self.metrics.delivery_errors.inc()
        ts = msg.timestamp()[1]
        self._failed.append((topic, msg.key(), msg.value(), ts))
        if len(self.summary.errors) < 10:
            self.summary.errors.append(f"topic={topic} partition={msg.partition()}: {err.str()}")

    def _event_clock(self) -> int:
        """Event time (ns) up to which outcomes are due."""
        if not self.pacing.paced or self._wall0 is None or self._event0 is None:
            return self._clock_ns
        scale = self.pacing.time_scale or self.pacing.speed or 1.0
        return self._event0 + int((time.monotonic() - self._wall0) * scale * 1e9)

    def emit(self, rows: pd.DataFrame) -> None:
        """Send one chunk of checked rows, sorted by event time, interleaving due outcomes."""
        if rows.empty:
            return
        apps = application_columns(rows, self.spec)
        if self.label_time:
            outcomes, due = outcome_messages(rows, self.spec, self.label_time)
            self._queue.push_many(due, outcomes)
            if self.selective is not None:
                self.selective.expect(outcomes)
        times = rows[self.spec.event_time_column]
        if self._wall0 is None:
            self._wall0, self._event0 = time.monotonic(), int(times.iloc[0].value)
            self.summary.first_event = times.iloc[0]
        self.summary.last_event = times.iloc[-1]
        app_topic = self.kafka.topic(APPLICATIONS)
        keys, values, millis = apps.keys, apps.values, apps.millis
        sent = 0
        while sent < len(apps):
            n = self._allowed(millis, sent)
            end = sent + n
            batch = zip(keys[sent:end], values[sent:end], millis[sent:end], strict=True)
            self._producer.produce_many(app_topic, batch)
            if not self.pacing.paced:
                self._clock_ns = millis[end - 1] * 1_000_000
            sent += n
            self.summary.applications += n
            self.metrics.produced.labels("application").inc(n)
            self._send_due_outcomes()
            self.summary.app_seconds = time.monotonic() - self._wall0
            self.on_sent(n)

    def _allowed(self, millis: list[int], sent: int) -> int:
        remaining = len(millis) - sent
        if self._bucket is not None:
            return self._bucket.take(remaining)
        if self.pacing.speed and self._wall0 is not None and self._event0 is not None:
            due_wall = self._wall0 + (millis[sent] * 1e6 - self._event0) / self.pacing.speed / 1e9
            wait = due_wall - time.monotonic()
            if wait > 0:
                time.sleep(min(wait, 1.0))
                self._producer.poll(0)
                return 0
            limit = self._event0 + (time.monotonic() - self._wall0) * self.pacing.speed * 1e9
            n = 1
            while n < remaining and millis[sent + n] * 1e6 <= limit:
                n += 1
            return n
        return remaining

    def _send_due_outcomes(self, wait_s: float = 0.0) -> None:
        """Send the outcomes now due (under selective labels: those the gate lets out)."""
        topic = self.kafka.topic(OUTCOMES)
        due = self._queue.pop_due(self._event_clock())
        if self.selective is not None:
            due = self.selective.release(due, wait_s)
            self._tally(self.selective)
        self._producer.produce_many(topic, due)
        self.summary.outcomes += len(due)
        self.metrics.produced.labels("outcome").inc(len(due))

    def _tally(self, selective: SelectiveOutcomes) -> None:
        counts = selective.counts
        self.summary.explored = counts[Fate.EXPLORED]
        self.summary.withheld = counts[Fate.WITHHELD]
        self.summary.undecided = counts[Fate.UNDECIDED]
        self.summary.awaiting_decision = selective.waiting
        self.summary.undecided_examples = list(selective.undecided_examples)

    def _outstanding(self) -> int:
        """Outcomes not yet sent or settled: queued for their time, or awaiting a decision."""
        return len(self._queue) + (self.selective.waiting if self.selective else 0)

    def finish(self, wait_for_outcomes: bool = True, deadline_s: float = 3600.0) -> EmitSummary:
        """Send the outcomes still waiting (at their time if paced), flush, retry failures."""
        if wait_for_outcomes:
            give_up = time.monotonic() + deadline_s
            while self._outstanding() and time.monotonic() < give_up:
                if not self.pacing.paced:
                    self._clock_ns = np.iinfo(np.int64).max
                elif self.selective is None:
                    time.sleep(0.05)
                # under selective labels the wait is spent reading decisions instead
                self._send_due_outcomes(0.05 if self.selective is not None else 0.0)
                self._producer.poll(0)
        self.summary.pending_outcomes = len(self._queue)
        if self.selective is not None:
            self._tally(self.selective)
        self.close()
        return self.summary

    def close(self) -> None:
        """Flush; re-send what failed (up to 3 rounds); count what never got through.

        Each flush waits until the queue is empty, so every message sent (a re-sent one too) is
        then acknowledged or has reported its failure (``message.timeout.ms`` bounds the wait).
        """
        for attempt in range(4):
            try:
                while self._producer.producer.flush(60):
                    logger.info("still waiting for acknowledgements")
            except Exception:  # pragma: no cover - flush itself only raises on fatal errors
                logger.exception("flush failed")
            if not self._failed or attempt == 3:
                break
            retry, self._failed = self._failed, []
            self.summary.retried += len(retry)
            for topic, key, value, ts in retry:
                self._producer.produce(topic, key, value, timestamp_ms=ts)
        self.summary.failed = len(self._failed)
        if self._wall0 is not None:
            self.summary.seconds = time.monotonic() - self._wall0
        if self.summary.failed:
            raise DeliveryError(
                f"{self.summary.failed} messages were not acknowledged after 3 retries: "
                + "; ".join(self.summary.errors[:3])
            )
