"""Losses of the monitor, each made to happen on cue against the real broker.

**Outputs before table changes.** A batch of the monitor changes its tables (a joined
prediction leaves the pending store) and writes its outputs (the labelled example). The two go
to different topics; a monitor killed when Kafka has the first and not the second leaves a
table that says "joined" and no labelled example. The next monitor reads the outcome again (it
was never acknowledged), finds no prediction waiting and keeps the outcome as an orphan: the
example is lost. Here Kafka refuses loan.labelled (its ``max.message.bytes`` is below any
record) while the outcomes are handled, so the monitor is always killed in that state.

**A snapshot at a graceful stop.** Faust handles and commits what it has fetched as it stops;
the restarted monitor resumes at the commit and skips what its restored snapshot counted. A
snapshot older than the last commit leaves the records in between counted by no detector (the
restart test lost 3,000-5,000 labelled positions so, with either fetch size).
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import (
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
)

from loanstream.config import KafkaSettings
from loanstream.contracts import Decision, Outcome, Prediction
from loanstream.kafka.broker import free_port
from loanstream.kafka.clients import IdempotentProducer
from loanstream.topics import LABELLED, OUTCOMES, PREDICTIONS, create_topics
from monitor.app import covered_offsets
from tests.integration.consume import read_all
from tests.integration.faults import admin, await_, end_offsets, group_stable, metric
from tests.integration.processes import Service, service_env
from trainer.pipeline import publish
from trainer.registry import Registry
from trainer.settings import TrainerSettings

AT = datetime(2026, 1, 1, tzinfo=UTC)
IDS = [f"loss-{i}" for i in range(50)]


@pytest.fixture
def services(kafka: KafkaSettings, mlflow_settings: TrainerSettings) -> Iterator[list[Service]]:
    create_topics(kafka)
    publish(kafka, Registry(mlflow_settings).version("1").update())
    started: list[Service] = []
    yield started
    for service in started:
        service.stop()


def refuse_writes(kafka: KafkaSettings, topic: str, refuse: bool) -> None:
    """Make Kafka refuse (or take again) every write to ``topic``: no record fits in 64 bytes."""
    entry = ConfigEntry(
        "max.message.bytes",
        "64" if refuse else None,
        incremental_operation=AlterConfigOpType.SET if refuse else AlterConfigOpType.DELETE,
    )
    client = admin(kafka)  # kept referenced: a collected client never completes its futures
    futures = client.incremental_alter_configs(
        [ConfigResource(ConfigResource.Type.TOPIC, topic, incremental_configs=[entry])]
    )
    for future in futures.values():
        future.result(30)


def committed(kafka: KafkaSettings, group: str, topic: str) -> dict[int, int]:
    """The offset ``group`` has committed on each partition of ``topic`` (negative: none)."""
    consumer = Consumer({**kafka.confluent(), "group.id": group})
    try:
        partitions = end_offsets(kafka, topic)
        done = consumer.committed([TopicPartition(topic, p) for p in partitions], timeout=5)
    finally:
        consumer.close()
    return {tp.partition: tp.offset for tp in done}


def committed_to_end(kafka: KafkaSettings, group: str, topic: str) -> bool:
    """Whether ``group`` has committed every record of ``topic`` (it will not read them again)."""
    ends = end_offsets(kafka, topic)
    return all(offset >= ends[p] for p, offset in committed(kafka, group, topic).items())


def produce_predictions(kafka: KafkaSettings, ids: list[str] = IDS) -> None:
    with IdempotentProducer(kafka) as producer:
        for key in ids:
            prediction = Prediction(
                application_id=key,
                event_time=AT - timedelta(days=30),
                probability=0.7,
                decision=Decision.APPROVE,
                model_name="loan-repayment",
                model_version="1",
                features={},
                received_at=AT,
                scored_at=AT,
            )
            producer.produce(kafka.topic(PREDICTIONS), key.encode(), prediction.to_json())


def produce_outcomes(kafka: KafkaSettings, ids: list[str] = IDS) -> None:
    with IdempotentProducer(kafka) as producer:
        for i, key in enumerate(ids):
            outcome = Outcome(application_id=key, label=i % 2, outcome_time=AT)
            producer.produce(kafka.topic(OUTCOMES), key.encode(), outcome.to_json())


@pytest.mark.timeout(300)
def test_a_monitor_killed_before_kafka_has_its_labels_loses_none_of_them(
    kafka: KafkaSettings,
    mlflow_settings: TrainerSettings,
    services: list[Service],
    tmp_path: Path,
) -> None:
    """50 predictions wait for their outcomes; the outcomes come while Kafka refuses
    loan.labelled; the monitor is SIGKILLed while it sends the labels again, Kafka takes
    writes again, and a new monitor starts: all 50 are labelled."""
    variables = service_env(kafka, mlflow_settings, LOANSTREAM_MONITOR_STATE_EVERY_S="1")
    group, port = variables["LOANSTREAM_MONITOR_APP_ID"], free_port()
    first = Service(["monitor", "--metrics-port", str(port)], variables, tmp_path / "1.log")
    services.append(first)
    produce_predictions(kafka)
    await_(
        "50 pending predictions",
        lambda: metric(port, "loanstream_monitor_join", 'state="pending"') == len(IDS),
        120,
        0.5,
    )
    # committed, so the next monitor does not store them again from loan.predictions
    await_(
        "the predictions committed",
        lambda: committed_to_end(kafka, group, kafka.topic(PREDICTIONS)),
        60,
    )
    refuse_writes(kafka, kafka.topic(LABELLED), refuse=True)
    try:
        produce_outcomes(kafka)
        # the batch is handled and its labelled examples refused (the Sender sends them again)
        await_(
            "Kafka to refuse the labelled examples",
            lambda: "Kafka refused" in first.log.read_text(errors="replace"),
            60,
        )
        first.stop(signal.SIGKILL)
    finally:
        refuse_writes(kafka, kafka.topic(LABELLED), refuse=False)
    services.append(
        Service(["monitor", "--metrics-port", str(free_port())], variables, tmp_path / "2.log")
    )
    labelled = read_all(kafka, kafka.topic(LABELLED), len(IDS), timeout_s=90, settle_s=3)
    assert sorted({(m.key() or b"").decode() for m in labelled}) == sorted(IDS)


@pytest.mark.timeout(300)
def test_a_graceful_stop_mid_stream_leaves_a_snapshot_of_all_it_committed(
    kafka: KafkaSettings,
    mlflow_settings: TrainerSettings,
    services: list[Service],
    tmp_path: Path,
) -> None:
    """The monitor is stopped (SIGTERM) while 20,000 predictions and their outcomes stream in:
    its newest snapshot covers exactly the records its group has committed, on every partition
    of both topics, so the next monitor neither skips a record no detector counted nor counts
    one twice."""
    variables = service_env(kafka, mlflow_settings, LOANSTREAM_MONITOR_STATE_EVERY_S="1")
    group = variables["LOANSTREAM_MONITOR_APP_ID"]
    monitor = Service(
        ["monitor", "--metrics-port", str(free_port())], variables, tmp_path / "1.log"
    )
    services.append(monitor)
    await_("the monitor's group", lambda: group_stable(kafka, group), 120, 0.5)
    ids = [f"stream-{i}" for i in range(20_000)]

    def produce() -> None:
        produce_predictions(kafka, ids)
        produce_outcomes(kafka, ids)

    stream = threading.Thread(target=produce, name="stream")
    stream.start()
    topics = [kafka.topic(PREDICTIONS), kafka.topic(OUTCOMES)]
    await_(  # mid-stream: outcomes handled and committed, more still to come
        "outcomes committed",
        lambda: sum(max(o, 0) for o in committed(kafka, group, topics[1]).values()) > 2000,
        120,
        0.1,
    )
    monitor.stop(signal.SIGTERM)
    stream.join(120)
    assert monitor.process.returncode == 0  # a graceful stop
    covered = covered_offsets(kafka, group)
    for topic in topics:
        done = committed(kafka, group, topic)
        assert {p: covered.get((topic, p), -1) + 1 for p in done} == done, topic
