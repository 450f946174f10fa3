import pytest

from loanstream.config import BrokerSettings, KafkaSettings
from loanstream.topics import (
    APPLICATIONS,
    LABELLED,
    MODEL_UPDATES,
    OUTCOMES,
    PREDICTIONS,
    SHADOW_PREDICTIONS,
    TOPICS,
    declared,
)


def test_sasl_ssl_settings_reach_every_client(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOANSTREAM_KAFKA_BOOTSTRAP_SERVERS", "kafka-1:9093,kafka-2:9093")
    monkeypatch.setenv("LOANSTREAM_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("LOANSTREAM_KAFKA_SASL_MECHANISM", "SCRAM-SHA-512")
    monkeypatch.setenv("LOANSTREAM_KAFKA_SASL_USERNAME", "scorer")
    monkeypatch.setenv("LOANSTREAM_KAFKA_SASL_PASSWORD", "s3cret")
    monkeypatch.setenv("LOANSTREAM_KAFKA_SSL_CA_LOCATION", "/etc/ssl/ca.pem")
    settings = KafkaSettings()
    assert settings.confluent() == {
        "bootstrap.servers": "kafka-1:9093,kafka-2:9093",
        "client.id": "loanstream",
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "scorer",
        "sasl.password": "s3cret",
        "ssl.ca.location": "/etc/ssl/ca.pem",
    }
    assert "s3cret" not in repr(settings)


def test_invalid_settings_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOANSTREAM_KAFKA_SECURITY_PROTOCOL", "TLS")
    with pytest.raises(ValueError, match="security_protocol"):
        KafkaSettings()
    monkeypatch.setenv("LOANSTREAM_BROKER_PORT", "70000")
    with pytest.raises(ValueError, match="port"):
        BrokerSettings()


def test_every_topic_of_the_design_is_declared_once() -> None:
    names = [t.name for t in TOPICS]
    assert names == [
        "loan.applications",
        "loan.predictions",
        "loan.shadow-predictions",
        "loan.outcomes",
        "loan.labelled",
        "loan.drift-events",
        "loan.retrain-requests",
        "loan.retrain-results",
        "loan.model-updates",
        "loan.monitor-state",
        "loan.dead-letter",
    ]
    by_name = {t.name: t for t in TOPICS}
    assert by_name[MODEL_UPDATES].config["cleanup.policy"] == "compact"
    keyed = {
        by_name[n].partitions
        for n in (APPLICATIONS, PREDICTIONS, SHADOW_PREDICTIONS, OUTCOMES, LABELLED)
    }
    assert len(keyed) == 1


def test_prefix_and_partition_override_apply_to_the_declaration() -> None:
    topics = {t.name: t for t in declared(KafkaSettings(topic_prefix="test-", partitions=2))}
    assert topics["test-loan.applications"].partitions == 2
    assert topics["test-loan.labelled"].partitions == 2
    assert topics["test-loan.model-updates"].partitions == 1
