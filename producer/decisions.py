"""The Kafka shell of selective labels: decisions read from loan.predictions feed the pure
`SelectiveGate`, which says which due outcomes the producer sends.

The feed reads every partition from where it ended when the run began (outside any group), so
the decisions of this run's applications are all seen and older predictions are skipped.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import orjson
from confluent_kafka import Consumer, TopicPartition

from loanstream.config import KafkaSettings
from loanstream.contracts import Decision
from loanstream.errors import LoanStreamError
from loanstream.kafka.clients import whole_topic_reader
from loanstream.topics import PREDICTIONS
from producer.metrics import ProducerMetrics
from producer.selective import Fate, Released, Selection, SelectiveGate

logger = logging.getLogger(__name__)

Item = tuple[bytes, bytes, int]  # an outcome message: key, value, timestamp (ms)
DECISIONS = frozenset(d.value for d in Decision)


class DecisionFeed:
    """``(application_id, decision)`` pairs from loan.predictions written since ``start``."""

    def __init__(self, kafka: KafkaSettings, timeout_s: float = 30.0) -> None:
        self.kafka = kafka
        self.timeout_s = timeout_s
        self.skipped = 0  # records without a usable id and decision (the monitor dead-letters)
        self._consumer: Consumer | None = None

    def start(self) -> None:
        """Pin the start at each partition's current end; idempotent."""
        if self._consumer is not None:
            return
        topic = self.kafka.topic(PREDICTIONS)
        consumer = whole_topic_reader(self.kafka, topic, self.timeout_s)
        metadata = consumer.list_topics(topic, timeout=self.timeout_s).topics[topic]
        if metadata.error is not None or not metadata.partitions:
            consumer.close()
            raise LoanStreamError(
                f"--labels approved reads decisions from {topic}, which is not there "
                f"({metadata.error.str() if metadata.error else 'no partitions'}): "
                "create the topics and start the scorer"
            )
        ends = [
            TopicPartition(
                topic,
                p,
                consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=self.timeout_s)[1],
            )
            for p in sorted(metadata.partitions)
        ]
        consumer.assign(ends)  # replaces the reader's from-the-beginning assignment
        self._consumer = consumer

    def poll(self, wait_s: float = 0.0, max_messages: int = 10_000) -> list[tuple[str, str]]:
        self.start()
        assert self._consumer is not None
        out = []
        for msg in self._consumer.consume(max_messages, wait_s):
            if msg.error() is not None:
                logger.warning("predictions feed error: %s", msg.error())
                continue
            pair = _decision(msg.value())
            if pair is None:
                self.skipped += 1
                logger.debug(
                    "no decision in topic=%s partition=%s offset=%s",
                    msg.topic(),
                    msg.partition(),
                    msg.offset(),
                )
            else:
                out.append(pair)
        return out

    def close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None
        if self.skipped:
            logger.warning("%d predictions without an id and a decision were skipped", self.skipped)


def _decision(value: bytes | None) -> tuple[str, str] | None:
    try:
        record = orjson.loads(value or b"")
    except orjson.JSONDecodeError:
        return None
    if not isinstance(record, dict):
        return None
    application_id, decision = record.get("application_id"), record.get("decision")
    if isinstance(application_id, str) and decision in DECISIONS:
        return application_id, decision
    return None


class SelectiveOutcomes:
    """The producer's outcomes under ``--labels approved``: the gate, fed by the decision feed,
    with running counts by fate for the summary and the metrics."""

    def __init__(
        self,
        kafka: KafkaSettings,
        selection: Selection,
        metrics: ProducerMetrics,
        feed: DecisionFeed | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.selection = selection
        self.metrics = metrics
        self.feed = feed or DecisionFeed(kafka)
        self.clock = clock
        self.gate: SelectiveGate[Item] = SelectiveGate(
            selection.exploration, selection.seed, selection.decision_timeout_s
        )
        self.counts = dict.fromkeys(Fate, 0)
        self.undecided_examples: list[str] = []
        for fate in Fate:  # every series shows from the start
            metrics.outcome_fates.labels(fate.value)

    @property
    def waiting(self) -> int:
        return self.gate.waiting

    def start(self) -> None:
        self.feed.start()

    def expect(self, outcomes: list[Item]) -> None:
        self.gate.expect(key.decode() for key, _, _ in outcomes)

    def release(self, due: list[Item], wait_s: float = 0.0) -> list[Item]:
        """The outcomes to send now, of those just due and those that waited for a decision."""
        decided = self.feed.poll(wait_s)
        now = self.clock()
        send: list[Item] = []
        for released in (
            self.gate.decide(decided, now),
            self.gate.offer(((item[0].decode(), item) for item in due), now),
            self.gate.expire(now),
        ):
            send += released.send
            self._count(released)
        self.metrics.awaiting_decision.set(self.gate.waiting)
        return send

    def _count(self, released: Released[Item]) -> None:
        for fate, n in (
            (Fate.APPROVED, released.approved),
            (Fate.EXPLORED, released.explored),
            (Fate.WITHHELD, released.withheld),
            (Fate.UNDECIDED, len(released.undecided)),
        ):
            if n:
                self.counts[fate] += n
                self.metrics.outcome_fates.labels(fate.value).inc(n)
        if released.undecided:
            logger.warning(
                "%d outcomes withheld: no prediction within %.0f s (e.g. %s)",
                len(released.undecided),
                self.selection.decision_timeout_s,
                ", ".join(released.undecided[:3]),
            )
            room = 10 - len(self.undecided_examples)
            self.undecided_examples += list(released.undecided[: max(room, 0)])

    def close(self) -> None:
        self.feed.close()
