"""Consumer lag read from a real broker: a real consumer commits, the gauge tells what is left."""

from __future__ import annotations

import time
import uuid

from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from prometheus_client import CollectorRegistry

from loanstream.config import KafkaSettings
from loanstream.kafka.clients import IdempotentProducer
from loanstream.lag import LagSettings, watch_lag

N, K = 60, 23


def make_topics(kafka: KafkaSettings, *names: str) -> None:
    admin = AdminClient(kafka.confluent())
    topics = [NewTopic(kafka.topic(n), num_partitions=3, replication_factor=1) for n in names]
    for future in admin.create_topics(topics).values():
        future.result(30)


def consume_and_commit(kafka: KafkaSettings, group: str, topic: str, count: int) -> None:
    """A consumer of ``group`` reads ``count`` records of ``topic`` and commits each one."""
    consumer = Consumer(
        {
            **kafka.confluent(),
            "group.id": group,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        }
    )
    consumer.subscribe([topic])
    read, deadline = 0, time.monotonic() + 60
    try:
        while read < count and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None or msg.error():
                continue
            consumer.commit(message=msg, asynchronous=False)
            read += 1
    finally:
        consumer.close()
    assert read == count


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


def test_the_gauge_tells_what_the_group_has_left(kafka: KafkaSettings) -> None:
    make_topics(kafka, "apps", "trimmed")
    apps, trimmed = kafka.topic("apps"), kafka.topic("trimmed")
    with IdempotentProducer(kafka) as producer:
        for i in range(N):
            producer.produce(apps, f"a-{i}", b"{}")
        for _ in range(9):
            producer.produce(trimmed, b"same-key", b"{}")  # one partition, offsets 0..8
    group = f"lag-{uuid.uuid4().hex[:8]}"
    consume_and_commit(kafka, group, apps, K)
    # Retention-like deletion on a topic the group never read: lag counts from the low mark.
    admin = AdminClient(kafka.confluent())
    [partition] = [
        p
        for p, meta in admin.list_topics(trimmed, timeout=10).topics[trimmed].partitions.items()
        if consumer_high(kafka, trimmed, p) > 0
    ]
    for future in admin.delete_records([TopicPartition(trimmed, partition, 4)]).values():
        future.result(30)

    registry = CollectorRegistry()
    watcher = watch_lag(
        kafka, registry, group, ["apps", "trimmed", "absent"], LagSettings(interval_s=0.2)
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if sample(registry, "loanstream_consumer_lag", group=group, topic=apps) == N - K:
                break
            time.sleep(0.1)
        assert sample(registry, "loanstream_consumer_lag", group=group, topic=apps) == N - K
        assert sample(registry, "loanstream_consumer_lag", group=group, topic=trimmed) == 9 - 4
        absent = kafka.topic("absent")
        assert sample(registry, "loanstream_consumer_lag", group=group, topic=absent) is None
        assert sample(registry, "loanstream_consumer_lag_errors_total", group=group) == 0
        since = sample(registry, "loanstream_consumer_lag_seconds_since_update", group=group)
        assert since is not None and since < 5

        consume_and_commit(kafka, group, apps, N - K)  # the group catches up
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if sample(registry, "loanstream_consumer_lag", group=group, topic=apps) == 0:
                break
            time.sleep(0.1)
        assert sample(registry, "loanstream_consumer_lag", group=group, topic=apps) == 0
    finally:
        watcher.stop()


def consumer_high(kafka: KafkaSettings, topic: str, partition: int) -> int:
    consumer = Consumer({**kafka.confluent(), "group.id": f"peek-{uuid.uuid4().hex}"})
    try:
        _, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
        return int(high)
    finally:
        consumer.close()
