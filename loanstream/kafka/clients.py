"""Thin helpers over confluent-kafka: an idempotent producer and a consumer that commits only
what was processed. Used by the producer, trainer and benchmarks (the Faust services have their
own clients)."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)

from loanstream.config import KafkaSettings
from loanstream.errors import DeliveryError

logger = logging.getLogger(__name__)

ANY_PARTITION = -1  # librdkafka's RD_KAFKA_PARTITION_UA: the configured partitioner decides

PRODUCER_DEFAULTS = {
    "enable.idempotence": True,
    "acks": "all",
    "linger.ms": 5,
    "batch.size": 256 * 1024,
    "compression.type": "lz4",
    "queue.buffering.max.messages": 500_000,
    "message.timeout.ms": 120_000,
    # Only failures call back into Python: a callback per acknowledged message costs more than
    # producing it. Successes are counted as produced minus failed once flush has drained.
    "delivery.report.only.error": True,
    # The Java client's partitioner (murmur2), which Faust's producer (aiokafka) also uses: an
    # application's outcome then lands in the same partition number as its prediction, as the
    # monitor's join and its table changelogs need. librdkafka's default (CRC32) would not.
    "partitioner": "murmur2_random",
}


@dataclass
class DeliveryReport:
    """What was produced, what Kafka refused, and why (a few examples kept).

    ``delivered`` is exact after a flush that drained the queue.
    """

    produced: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)

    @property
    def delivered(self) -> int:
        return self.produced - self.failed

    def record(self, err: KafkaError | None, msg: Message) -> None:
        if err is None:
            return
        self.failed += 1
        if len(self.errors) < 20:
            self.errors.append(f"topic={msg.topic()} partition={msg.partition()}: {err.str()}")


class IdempotentProducer:
    """A producer with ``enable.idempotence`` and ``acks=all`` whose failures are never silent.

    ``produce`` waits (serving delivery reports) when the local queue is full instead of
    raising; ``flush`` raises :class:`DeliveryError` if anything was not acknowledged.

    Example (needs a broker)::

        with IdempotentProducer(KafkaSettings()) as producer:
            producer.produce("loan.applications", b"a-1", b"{...}")
    """

    def __init__(
        self,
        settings: KafkaSettings,
        overrides: Mapping[str, Any] | None = None,
        on_delivery: Callable[[KafkaError | None, Message], None] | None = None,
    ) -> None:
        self.settings = settings
        self.overrides = dict(overrides or {})
        self.report = DeliveryReport()
        self._on_delivery = on_delivery
        self._producer: Producer | None = None
        self._unpolled = 0

    @property
    def producer(self) -> Producer:
        if self._producer is None:
            conf = {**self.settings.confluent(), **PRODUCER_DEFAULTS, **self.overrides}
            # The producer-wide callback: produce_many passes none per message
            self._producer = Producer({**conf, "on_delivery": self._delivered})
        return self._producer

    def _delivered(self, err: KafkaError | None, msg: Message) -> None:
        self.report.record(err, msg)
        if self._on_delivery is not None:
            self._on_delivery(err, msg)

    def produce(
        self,
        topic: str,
        key: bytes | str | None,
        value: bytes | str | None,
        timestamp_ms: int | None = None,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> None:
        kwargs: dict[str, Any] = {"on_delivery": self._delivered}
        if timestamp_ms is not None:
            kwargs["timestamp"] = timestamp_ms
        if headers:
            kwargs["headers"] = headers
        while True:
            try:
                self.producer.produce(topic, value, key, **kwargs)
                break
            except BufferError:
                self.producer.poll(0.05)  # queue full: serve delivery reports, then retry
        self.report.produced += 1
        self._unpolled += 1
        if self._unpolled >= 1000:  # serve delivery reports without a call per message
            self._unpolled = 0
            self.producer.poll(0)

    def produce_many(self, topic: str, messages: Iterable[tuple[bytes, bytes, int]]) -> None:
        """Produce ``(key, value, timestamp_ms)`` messages: the hot path of replay and producer.

        Failures reach the producer-wide callback, not one passed per message, and arguments go
        by position (topic, value, key, partition, callback, on_delivery, timestamp): parsing
        keywords costs more than the call. A full local queue is waited out, serving reports.
        """
        producer = self.producer
        send = producer.produce
        sent = 0
        for key, value, timestamp in messages:
            while True:
                try:
                    send(topic, value, key, ANY_PARTITION, None, None, timestamp)
                    break
                except BufferError:
                    producer.poll(0.05)
            sent += 1
        producer.poll(0)
        self.report.produced += sent

    def poll(self, timeout: float = 0.0) -> int:
        return int(self.producer.poll(timeout))

    def flush(self, timeout: float = 60.0) -> DeliveryReport:
        """Wait until every message is acknowledged or failed; raise if any failed."""
        if self._producer is None:
            return self.report
        remaining = self._producer.flush(timeout)
        if remaining or self.report.failed:
            raise DeliveryError(
                f"{self.report.failed} messages failed and {remaining} were still unacknowledged "
                f"after {timeout:.0f} s: " + "; ".join(self.report.errors[:5])
            )
        return self.report

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.flush()
        elif self._producer is not None:
            self._producer.flush(10.0)


class CommittingConsumer:
    """A consumer that commits an offset only after the caller has processed its message.

    ``batches`` yields lists of messages; a batch counts as processed when the caller asks for the
    next one (so after its loop body ran) or calls ``mark_processed``. Only processed offsets are
    stored, librdkafka commits stored offsets in the background, and ``close`` commits
    synchronously. At-least-once: a crash or a ``break`` replays the unmarked batch.

    Example (needs a broker)::

        consumer = CommittingConsumer(KafkaSettings(), group_id="g", topics=["t"])
        for batch in consumer.batches(max_messages=500, timeout=0.5):
            handle(batch)
    """

    def __init__(
        self,
        settings: KafkaSettings,
        group_id: str,
        topics: list[str],
        overrides: Mapping[str, Any] | None = None,
    ) -> None:
        self.settings = settings
        self.group_id = group_id
        self.topics = topics
        self.overrides = dict(overrides or {})
        self._consumer: Consumer | None = None

    @property
    def consumer(self) -> Consumer:
        if self._consumer is None:
            conf = {
                **self.settings.confluent(),
                "group.id": self.group_id,
                "enable.auto.commit": True,
                "enable.auto.offset.store": False,
                "auto.offset.reset": "earliest",
                "enable.partition.eof": False,
                # librdkafka's default (45 s) left a SIGKILLed consumer's partitions unread that
                # long: its successor waits for the dead member's session to expire (the trainer
                # took ~40 s to read its request again in tests/integration/test_faults.py).
                # Heartbeats come from librdkafka's own thread, so long rounds are unaffected;
                # max.poll.interval.ms is what bounds the time between batches.
                "session.timeout.ms": 10_000,
                **self.overrides,
            }
            self._consumer = Consumer(conf)
            self._consumer.subscribe(self.topics)
        return self._consumer

    def batches(self, max_messages: int = 500, timeout: float = 1.0) -> Iterator[list[Message]]:
        """Yield batches (possibly empty, when ``timeout`` passes with no message), forever."""
        while True:
            messages = self.consumer.consume(max_messages, timeout)
            batch = []
            for msg in messages:
                err = msg.error()
                if err is None:
                    batch.append(msg)
                elif err.fatal():
                    raise KafkaException(err)
                else:
                    logger.warning(
                        "consumer error topic=%s partition=%s: %s",
                        msg.topic(),
                        msg.partition(),
                        err.str(),
                    )
            yield batch
            self.mark_processed(batch)

    def mark_processed(self, batch: list[Message]) -> None:
        """Store the offsets of ``batch`` for the next commit."""
        if not batch:
            return
        last: dict[tuple[str, int], int] = {}
        for msg in batch:  # consumed messages always carry topic, partition and offset
            last[(str(msg.topic()), int(msg.partition() or 0))] = int(msg.offset() or 0)
        self.consumer.store_offsets(
            offsets=[TopicPartition(t, p, offset + 1) for (t, p), offset in last.items()]
        )

    def close(self) -> None:
        if self._consumer is not None:
            try:
                self._consumer.commit(asynchronous=False)
            except KafkaException as err:
                if err.args[0].code() != KafkaError._NO_OFFSET:
                    raise
            finally:
                self._consumer.close()
                self._consumer = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def whole_topic_reader(settings: KafkaSettings, topic: str, timeout: float = 30.0) -> Consumer:
    """A consumer of every partition of ``topic`` from its beginning, outside any group (for
    following a compacted topic such as loan.model-updates: each reader must see all of it)."""
    consumer = Consumer(
        {
            **settings.confluent(),
            "group.id": f"whole-{uuid.uuid4().hex}",  # never joins: partitions are assigned
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        }
    )
    partitions = consumer.list_topics(topic, timeout=timeout).topics[topic].partitions
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
    return consumer


def arrived(consumer: Consumer, timeout: float, most: int = 100) -> list[Message]:
    """The messages that have arrived: waits up to ``timeout`` for the first, returns as soon as
    it comes, with what else is already queued (at most ``most`` in all). ``consume(most,
    timeout)`` waits out its timeout unless ``most`` messages come, so a follower of a quiet
    topic such as loan.model-updates saw each new record only when that wait ended."""
    first = consumer.poll(timeout)
    if first is None:
        return []
    return [first, *consumer.consume(most - 1, 0)] if most > 1 else [first]
