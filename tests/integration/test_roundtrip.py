import random
import time
import uuid

from aiokafka.partitioner import DefaultPartitioner
from confluent_kafka import Consumer
from confluent_kafka.admin import AdminClient, NewTopic

from loanstream.config import KafkaSettings
from loanstream.kafka.clients import (
    CommittingConsumer,
    IdempotentProducer,
    arrived,
    whole_topic_reader,
)
from loanstream.spec import load_spec
from loanstream.topics import APPLICATIONS, MODEL_UPDATES, create_topics
from loanstream.validation import ApplicationValidator
from tests.helpers import application_json

N = 10_000


def test_ten_thousand_applications_round_trip_none_lost_none_duplicated(
    kafka: KafkaSettings,
) -> None:
    spec = load_spec()
    validator = ApplicationValidator(spec)
    create_topics(kafka)
    topic = kafka.topic(APPLICATIONS)
    rng = random.Random(42)
    sent = {}
    with IdempotentProducer(kafka) as producer:
        for i in range(N):
            value = application_json(spec, i, rng)
            key = f"app-{i:07d}"
            sent[key] = value
            producer.produce(topic, key.encode(), value)
    assert producer.report.delivered == N and producer.report.failed == 0

    received: dict[str, list[bytes]] = {}
    deadline = time.monotonic() + 60
    with CommittingConsumer(kafka, f"g-{uuid.uuid4().hex}", [topic]) as consumer:
        for batch in consumer.batches(max_messages=1000, timeout=0.5):
            for msg in batch:
                app = validator.parse(msg.value())
                assert msg.key().decode() == app.application_id
                received.setdefault(app.application_id, []).append(msg.value())
            if sum(map(len, received.values())) >= N or time.monotonic() > deadline:
                consumer.mark_processed(batch)
                break
    assert len(received) == N
    assert all(len(values) == 1 for values in received.values())
    assert {k: v[0] for k, v in received.items()} == sent


def test_a_consumer_group_resumes_after_what_it_committed(kafka: KafkaSettings) -> None:
    create_topics(kafka)
    topic = kafka.topic(APPLICATIONS)
    group = f"g-{uuid.uuid4().hex}"
    with IdempotentProducer(kafka) as producer:
        for i in range(100):
            producer.produce(topic, f"k{i}".encode(), f"v{i}".encode())

    def drain(limit: int) -> list[str]:
        seen: list[str] = []
        deadline = time.monotonic() + 30
        with CommittingConsumer(kafka, group, [topic]) as consumer:
            for batch in consumer.batches(max_messages=limit - len(seen), timeout=0.5):
                seen.extend(m.value().decode() for m in batch)
                if len(seen) >= limit or time.monotonic() > deadline:
                    consumer.mark_processed(batch)
                    break
        return seen

    first = drain(40)
    rest = drain(100 - len(first))
    assert len(first) >= 40
    assert sorted(first + rest, key=lambda v: int(v[1:])) == [f"v{i}" for i in range(100)]


def test_our_producer_partitions_keys_as_faust_does(kafka: KafkaSettings) -> None:
    """Outcomes (confluent-kafka) and predictions (Faust, aiokafka) keyed by one application id
    must land in the same partition number, or the monitor's join misses them."""
    topic = kafka.topic(f"partitions-{uuid.uuid4().hex[:6]}")
    admin = AdminClient(kafka.confluent())
    admin.create_topics([NewTopic(topic, 6, 1)])[topic].result(30)
    keys = [f"app-{i}".encode() for i in range(200)]
    with IdempotentProducer(kafka) as producer:
        for key in keys:
            producer.produce(topic, key, b"{}")
    consumer = Consumer(
        {**kafka.confluent(), "group.id": uuid.uuid4().hex, "auto.offset.reset": "earliest"}
    )
    consumer.subscribe([topic])
    seen: dict[bytes, int] = {}
    deadline = time.monotonic() + 30
    while len(seen) < len(keys) and time.monotonic() < deadline:
        for message in consumer.consume(500, 1.0):
            if message.error() is None:
                seen[message.key()] = message.partition()
    consumer.close()
    partitioner = DefaultPartitioner()
    assert seen == {k: partitioner(k, list(range(6)), list(range(6))) for k in keys}


def test_a_follower_of_a_quiet_topic_gets_each_record_when_it_comes(kafka: KafkaSettings) -> None:
    # how the scorer's watcher follows loan.model-updates
    create_topics(kafka)
    topic = kafka.topic(MODEL_UPDATES)
    reader = whole_topic_reader(kafka, topic)
    try:
        assert arrived(reader, 0.2) == []
        with IdempotentProducer(kafka) as producer:
            producer.produce(topic, b"m", b"v1")
        began = time.monotonic()
        (first,) = arrived(reader, 60)
        # consume(100, 60) would have waited out the minute for a full batch
        assert first.value() == b"v1" and time.monotonic() - began < 30
        with IdempotentProducer(kafka) as producer:
            for i in range(2, 6):
                producer.produce(topic, b"m", f"v{i}".encode())
        burst: list[bytes] = []
        while len(burst) < 4:
            got = arrived(reader, 10, most=3)
            assert 1 <= len(got) <= 3
            burst += [m.value() for m in got]
        assert burst == [b"v2", b"v3", b"v4", b"v5"]
    finally:
        reader.close()
