import time

import pytest
from confluent_kafka.admin import AdminClient, NewTopic

from loanstream.config import KafkaSettings
from loanstream.errors import DeliveryError, TopicError
from loanstream.kafka.clients import IdempotentProducer
from loanstream.topics import (
    APPLICATIONS,
    LABELLED,
    OUTCOMES,
    PREDICTIONS,
    TOPICS,
    create_topics,
    describe_topics,
)


def test_topics_are_created_once_with_their_declared_shape(kafka: KafkaSettings) -> None:
    created = create_topics(kafka)
    assert created == [kafka.topic(t.name) for t in TOPICS]
    assert create_topics(kafka) == []  # idempotent
    states = {s.name: s for s in describe_topics(kafka)}
    for declared in TOPICS:
        state = states[kafka.topic(declared.name)]
        assert state.exists
        assert state.partitions == state.declared_partitions
        assert state.replication == 1
    assert states[kafka.topic("loan.model-updates")].config["cleanup.policy"] == "compact"
    assert states[kafka.topic("loan.labelled")].config["retention.ms"] == "-1"
    assert states[kafka.topic("loan.applications")].config["retention.ms"] == "-1"


def test_a_topic_with_another_partition_count_is_reported(kafka: KafkaSettings) -> None:
    admin = AdminClient(kafka.confluent())
    name = kafka.topic(PREDICTIONS)
    admin.create_topics([NewTopic(name, num_partitions=1, replication_factor=1)])[name].result()
    with pytest.raises(TopicError, match=f"{name} has 1 partitions, declared 3"):
        create_topics(kafka)


def test_event_time_topics_take_records_stamped_years_ahead(kafka: KafkaSettings) -> None:
    # A simulated stream runs event time ahead of the wall clock; Kafka 4 refuses a timestamp
    # more than an hour ahead unless the topic allows it, as the declared ones do.
    create_topics(kafka)
    ahead_ms = int((time.time() + 5 * 365 * 86_400) * 1000)
    with IdempotentProducer(kafka) as producer:
        for name in (APPLICATIONS, OUTCOMES, PREDICTIONS, LABELLED):
            producer.produce(kafka.topic(name), b"a-1", b"{}", timestamp_ms=ahead_ms)
    plain = kafka.topic("plain")
    admin = AdminClient(kafka.confluent())
    admin.create_topics([NewTopic(plain, num_partitions=1, replication_factor=1)])[plain].result()
    with pytest.raises(DeliveryError, match=r"(?i)timestamp"), IdempotentProducer(kafka) as p:
        p.produce(plain, b"a-1", b"{}", timestamp_ms=ahead_ms)
