"""Consumer lag per group and topic, exported as Prometheus gauges by each consuming service.

Lag is what a group still has to read: per partition, the high watermark minus the offset the
group committed. A partition the group never committed counts from its low watermark (all of it
is still to read), and so does a commit below the low watermark (retention deleted what it
pointed at). The offsets come from the broker through a consumer that names the group but never
joins it (:class:`BrokerOffsets`), so Faust's groups are measured the same way as the trainer's.

A daemon thread refreshes the gauges every ``LOANSTREAM_LAG_INTERVAL_S`` seconds and never
raises: a broker that does not answer leaves the last values in place, counts an error and lets
``loanstream_consumer_lag_seconds_since_update`` grow, which an alert watches.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from confluent_kafka import Consumer, TopicPartition
from prometheus_client import CollectorRegistry, Counter, Gauge
from pydantic import Field
from pydantic_settings import BaseSettings

from loanstream.config import KafkaSettings, settings_config

logger = logging.getLogger(__name__)


class LagSettings(BaseSettings):
    """How often and how patiently the lag is read (env prefix ``LOANSTREAM_LAG_``)."""

    model_config = settings_config("LOANSTREAM_LAG_")

    interval_s: float = Field(default=10.0, gt=0, description="seconds between two readings")
    timeout_s: float = Field(default=5.0, gt=0, description="per admin request to the broker")


@dataclass(frozen=True)
class PartitionOffsets:
    """One partition's watermarks and the group's committed offset (None: never committed)."""

    topic: str
    partition: int
    low: int
    high: int
    committed: int | None

    @property
    def lag(self) -> int:
        """Records between where the group would resume and the end of the partition.

        >>> PartitionOffsets("t", 0, low=0, high=10, committed=4).lag
        6
        >>> PartitionOffsets("t", 0, low=3, high=10, committed=None).lag
        7
        >>> PartitionOffsets("t", 0, low=8, high=10, committed=2).lag  # retention passed it
        2
        """
        start = self.low if self.committed is None else max(self.committed, self.low)
        return max(self.high - start, 0)


def lag_by_topic(partitions: Iterable[PartitionOffsets]) -> dict[str, int]:
    """The lag of each topic: the sum over its partitions.

    >>> lag_by_topic([
    ...     PartitionOffsets("a", 0, 0, 10, 10),
    ...     PartitionOffsets("a", 1, 0, 5, None),
    ...     PartitionOffsets("b", 0, 0, 7, 2),
    ... ])
    {'a': 5, 'b': 5}
    """
    lags: dict[str, int] = {}
    for p in partitions:
        lags[p.topic] = lags.get(p.topic, 0) + p.lag
    return lags


class OffsetReader(Protocol):
    def read(self) -> list[PartitionOffsets]: ...


class BrokerOffsets:
    """Reads a group's committed offsets and the watermarks of its topics from the broker.

    Through a consumer that names the group but never subscribes: it joins nothing, commits
    nothing and moves no partition, and only asks the group's coordinator what was committed.
    Not through the admin API's ``list_consumer_group_offsets``: librdkafka (2.16, through
    confluent-kafka 2.16.2) segfaults in its main thread when that request meets a coordinator
    that is still loading (NOT_COORDINATOR), as it does for a group just created: the monitor died
    that way at start, within a second (confluent-kafka-python #1982, librdkafka's
    rd_kafka_cgrp_op on an admin client, which has no group). A consumer has the group machinery
    that retries instead.

    Topics that do not exist (yet) are left out. Raises what confluent-kafka raises when the
    broker does not answer within ``timeout`` seconds per request.
    """

    def __init__(
        self, kafka: KafkaSettings, group: str, topics: Sequence[str], timeout: float
    ) -> None:
        self.kafka = kafka
        self.group = group
        self.topics = tuple(topics)
        self.timeout = timeout
        self._consumer: Consumer | None = None

    def read(self) -> list[PartitionOffsets]:
        if self._consumer is None:
            self._consumer = Consumer(
                {
                    **self.kafka.confluent(),
                    "group.id": self.group,
                    "enable.auto.commit": False,
                    "enable.auto.offset.store": False,
                }
            )
        consumer, timeout = self._consumer, self.timeout
        metadata = consumer.list_topics(timeout=timeout).topics
        partitions = [
            TopicPartition(topic, p)
            for topic in self.topics
            if topic in metadata and not metadata[topic].error
            for p in sorted(metadata[topic].partitions)
        ]
        if not partitions:
            return []
        committed = {
            (tp.topic, tp.partition): tp.offset if tp.offset >= 0 else None
            for tp in consumer.committed(partitions, timeout=timeout)
        }
        out = []
        for tp in partitions:
            low, high = consumer.get_watermark_offsets(tp, timeout=timeout, cached=False)
            out.append(
                PartitionOffsets(
                    tp.topic, tp.partition, low, high, committed.get((tp.topic, tp.partition))
                )
            )
        return out


class LagMetrics:
    """The lag gauges, built against an injected registry (a service's own)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.lag = Gauge(
            "loanstream_consumer_lag",
            "Records a consumer group still has to read, per topic (high watermark minus the "
            "committed offset, summed over partitions)",
            ["group", "topic"],
            registry=registry,
        )
        self.since_update = Gauge(
            "loanstream_consumer_lag_seconds_since_update",
            "Seconds since the lag was last read from the broker (since start if never)",
            ["group"],
            registry=registry,
        )
        self.errors = Counter(
            "loanstream_consumer_lag_errors_total",
            "Lag readings that failed (the broker did not answer in time, or refused)",
            ["group"],
            registry=registry,
        )


class LagWatcher:
    """Refreshes one group's lag gauges from ``reader`` every ``interval_s`` in a daemon thread.

    ``refresh`` never raises: a failed reading keeps the last values and counts an error; the
    first failure of a run of them is logged as a warning, the rest at debug.
    """

    def __init__(
        self, group: str, reader: OffsetReader, metrics: LagMetrics, interval_s: float
    ) -> None:
        self.group = group
        self.reader = reader
        self.metrics = metrics
        self.interval_s = interval_s
        self.failures = 0
        self._last_ok = time.monotonic()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def refresh(self) -> bool:
        """One reading into the gauges; False when the broker could not be read."""
        try:
            lags = lag_by_topic(self.reader.read())
        except Exception as err:  # confluent-kafka raises KafkaException, timeouts and more
            self.metrics.errors.labels(self.group).inc()
            self.failures += 1
            log = logger.warning if self.failures == 1 else logger.debug
            log("cannot read the lag of group %s: %s: %s", self.group, type(err).__name__, err)
            return False
        for topic, lag in lags.items():
            self.metrics.lag.labels(self.group, topic).set(lag)
        if self.failures:
            logger.info("lag of group %s read again after %d failures", self.group, self.failures)
        self.failures = 0
        self._last_ok = time.monotonic()
        return True

    def seconds_since_update(self) -> float:
        return time.monotonic() - self._last_ok

    def start(self) -> None:
        self._last_ok = time.monotonic()
        self.metrics.since_update.labels(self.group).set_function(self.seconds_since_update)
        self.metrics.errors.labels(self.group)  # exported at 0 before the first failure
        self._thread = threading.Thread(target=self._run, name=f"lag-{self.group}", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.refresh()
            self._stop.wait(self.interval_s)


def watch_lag(
    kafka: KafkaSettings,
    registry: CollectorRegistry,
    group: str,
    topics: Sequence[str],
    settings: LagSettings | None = None,
) -> LagWatcher:
    """Export ``group``'s lag on the declared ``topics`` (prefix applied) into ``registry`` and
    keep it fresh. Called from a service's entry point; reads ``LagSettings`` when none given."""
    settings = settings or LagSettings()
    reader = BrokerOffsets(kafka, group, [kafka.topic(t) for t in topics], settings.timeout_s)
    watcher = LagWatcher(group, reader, LagMetrics(registry), settings.interval_s)
    watcher.start()
    return watcher
