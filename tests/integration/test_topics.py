import pytest
from confluent_kafka.admin import AdminClient, NewTopic

from loanstream.config import KafkaSettings
from loanstream.errors import TopicError
from loanstream.topics import PREDICTIONS, TOPICS, create_topics, describe_topics


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
