"""`loanstream notify` as an operator runs it (a subprocess, the real CLI) against the real
broker and a local webhook receiver: one message per record, in topic order, of the right kind;
a webhook that answers 500 delays nothing and its messages end on loan.dead-letter."""

from __future__ import annotations

import hashlib
import hmac
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import orjson
import pytest
from confluent_kafka import Consumer, TopicPartition
from prometheus_client.parser import text_string_to_metric_families

from loanstream.config import KafkaSettings
from loanstream.contracts import (
    Contract,
    DeadLetter,
    DriftEvent,
    DriftSignal,
    ModelUpdate,
    RetrainOutcome,
    RetrainResult,
)
from loanstream.kafka.broker import free_port
from loanstream.kafka.clients import IdempotentProducer
from loanstream.topics import (
    DEAD_LETTER,
    DRIFT_EVENTS,
    MODEL_UPDATES,
    RETRAIN_RESULTS,
    create_topics,
)
from loop.telling import drift_sentence, result_sentence, update_sentence
from tests.integration.consume import read_all
from tests.integration.processes import Service, wait_for
from tests.unit.loop.test_notify import Receiver

MODEL = "loan-repayment"
NOW = datetime.now(UTC)


def drift(n: int, age: timedelta = timedelta(minutes=5)) -> DriftEvent:
    return DriftEvent(
        event_id=f"drift-{n}",
        signal=DriftSignal.DATA,
        detector="psi[act]",
        feature="credit_score",
        statistic=0.3 + n / 100,
        threshold=0.25,
        window_size=2000,
        first_position=1000 * n,
        confirmed_position=1000 * n + 400,
        first_event_time=NOW - timedelta(days=2),
        confirmed_event_time=NOW - timedelta(days=1),
        model_name=MODEL,
        model_version="1",
        detected_at=NOW - age,
    )


def result(outcome: RetrainOutcome, challenger: str) -> RetrainResult:
    return RetrainResult(
        model_name=MODEL,
        outcome=outcome,
        reason=f"{outcome.value} after comparing v{challenger} with the champion",
        request_ids=[f"req-{challenger}"],
        drift_event_ids=["drift-1"],
        challenger_version=challenger,
        champion_version="1",
        metrics={"auc": 0.81},
        champion_metrics={"auc": 0.83},
        finished_at=NOW,
    )


def update(version: str) -> ModelUpdate:
    return ModelUpdate(
        model_name=MODEL,
        version=version,
        run_id=f"run-{version}",
        model_uri=f"models:/{MODEL}/{version}",
        sha256=hashlib.sha256(version.encode()).hexdigest(),
        promoted_at=NOW,
    )


def produce(kafka: KafkaSettings, records: list[tuple[str, bytes]]) -> None:
    with IdempotentProducer(kafka) as producer:
        for topic, value in records:
            producer.produce(kafka.topic(topic), MODEL.encode(), value)


def committed(kafka: KafkaSettings, group: str, topics: list[str]) -> dict[str, int]:
    consumer = Consumer({**kafka.confluent(), "group.id": group})
    try:
        partitions = [TopicPartition(kafka.topic(t), 0) for t in topics]
        return {tp.topic: tp.offset for tp in consumer.committed(partitions, timeout=10)}
    finally:
        consumer.close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.stop()


def start_notifier(
    kafka: KafkaSettings, url: str, group: str, tmp_path: Path, **env: str
) -> tuple[Service, int]:
    port = free_port()
    service = Service(
        ["notify", "--metrics-port", str(port)],
        {
            "LOANSTREAM_KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
            "LOANSTREAM_KAFKA_TOPIC_PREFIX": kafka.topic_prefix,
            "LOANSTREAM_NOTIFY_WEBHOOK_URL": url,
            "LOANSTREAM_NOTIFY_GROUP_ID": group,
            **env,
        },
        tmp_path / "notifier.log",
    )
    return service, port


def metric(port: int, name: str, labels: dict[str, str]) -> float:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and labels.items() <= sample.labels.items():
                return sample.value
    return 0.0


def test_one_signed_message_per_record_in_order_of_the_right_kind(
    kafka: KafkaSettings, receiver: Receiver, tmp_path: Path
) -> None:
    create_topics(kafka)
    drifts = [drift(1), drift(2), drift(3)]
    results = [
        result(RetrainOutcome.KEPT_CHAMPION, "2"),
        result(RetrainOutcome.WAITING, "3"),  # not told: the round goes on
        result(RetrainOutcome.PROMOTED, "3"),
    ]
    updates = [update("3")]
    records: list[tuple[str, Contract | bytes]] = [
        (DRIFT_EVENTS, drifts[0]),
        (RETRAIN_RESULTS, results[0]),
        (DRIFT_EVENTS, b'{"not": "a drift event"}'),  # skipped and counted
        (DRIFT_EVENTS, drift(9, age=timedelta(days=3))),  # older than max_age_s: skipped
        (DRIFT_EVENTS, drifts[1]),
        (RETRAIN_RESULTS, results[1]),
        (RETRAIN_RESULTS, results[2]),
        (MODEL_UPDATES, updates[0]),
        (DRIFT_EVENTS, drifts[2]),
    ]
    produce(kafka, [(t, r if isinstance(r, bytes) else r.to_json()) for t, r in records])
    url = receiver.start()
    group = f"notifier-{uuid.uuid4().hex[:8]}"
    notifier, port = start_notifier(
        kafka,
        url,
        group,
        tmp_path,
        LOANSTREAM_NOTIFY_WEBHOOK_SECRET="whs3cret",
        LOANSTREAM_NOTIFY_WEBHOOK_FORMAT="json",
        LOANSTREAM_NOTIFY_KINDS="drift,promoted,kept_champion,shadowing,failed,model_update",
    )
    try:
        expected = len(drifts) + 2 + len(updates)
        assert wait_for(lambda: len(receiver.requests) >= expected, 60), notifier.log.read_text()
        sent = "loanstream_notifier_sent_total"
        assert wait_for(lambda: metric(port, sent, {"kind": "model_update"}) == 1, 10)
        bodies = [orjson.loads(r.body) for r in receiver.requests]
        by_kind: dict[str, list[dict]] = {}
        for body in bodies:
            by_kind.setdefault(body["kind"], []).append(body)
        assert [b["record"]["event_id"] for b in by_kind["drift"]] == [
            "drift-1",
            "drift-2",
            "drift-3",
        ]
        assert [b["text"] for b in by_kind["drift"]] == [drift_sentence(d) for d in drifts]
        assert [b["text"] for b in by_kind["kept_champion"]] == [result_sentence(results[0])]
        assert [b["text"] for b in by_kind["promoted"]] == [result_sentence(results[2])]
        assert [b["text"] for b in by_kind["model_update"]] == [update_sentence(updates[0])]
        assert sorted(by_kind) == ["drift", "kept_champion", "model_update", "promoted"]
        assert by_kind["promoted"][0]["record"] == orjson.loads(results[2].to_json())
        for r in receiver.requests:
            signed = r.headers["X-LoanStream-Timestamp"].encode() + b"." + r.body
            digest = hmac.new(b"whs3cret", signed, hashlib.sha256).hexdigest()
            assert r.headers["X-LoanStream-Signature"] == f"sha256={digest}"
        topics = [DRIFT_EVENTS, RETRAIN_RESULTS, MODEL_UPDATES]
        ends = {kafka.topic(DRIFT_EVENTS): 5, kafka.topic(RETRAIN_RESULTS): 3}
        ends[kafka.topic(MODEL_UPDATES)] = 1
        assert wait_for(lambda: committed(kafka, group, topics) == ends, 30)
        assert metric(port, sent, {"kind": "drift"}) == 3
        skipped = "loanstream_notifier_skipped_total"
        assert metric(port, skipped, {"reason": "invalid"}) == 1
        assert metric(port, skipped, {"reason": "stale"}) == 1
        assert metric(port, skipped, {"reason": "waiting"}) == 1
    finally:
        notifier.stop()
    assert notifier.process.returncode == 0, notifier.log.read_text()
    assert len(receiver.requests) == expected  # nothing more, nothing twice
    log = notifier.log.read_text()
    assert "whs3cret" not in log and "/hook" not in log and "t0p" not in log


def test_a_webhook_answering_500_delays_nothing_and_its_messages_are_dead_lettered(
    kafka: KafkaSettings, receiver: Receiver, tmp_path: Path
) -> None:
    receiver.answer = lambda body: 500
    create_topics(kafka)
    drifts = [drift(n) for n in range(1, 5)]
    kept = result(RetrainOutcome.KEPT_CHAMPION, "2")
    records = [(DRIFT_EVENTS, d.to_json()) for d in drifts] + [(RETRAIN_RESULTS, kept.to_json())]
    produce(kafka, records)
    url = receiver.start()
    group = f"notifier-{uuid.uuid4().hex[:8]}"
    notifier, port = start_notifier(
        kafka,
        url,
        group,
        tmp_path,
        LOANSTREAM_NOTIFY_WEBHOOK_FORMAT="slack",
        LOANSTREAM_NOTIFY_RETRIES="2",
        LOANSTREAM_NOTIFY_BACKOFF_S="1.0",
        LOANSTREAM_NOTIFY_BACKOFF_MAX_S="2.0",
    )
    try:
        letters = read_all(kafka, kafka.topic(DEAD_LETTER), len(records), timeout_s=60)
        topics = [DRIFT_EVENTS, RETRAIN_RESULTS]
        ends = {kafka.topic(DRIFT_EVENTS): 4, kafka.topic(RETRAIN_RESULTS): 1}
        assert wait_for(lambda: committed(kafka, group, topics) == ends, 30)
        failed = metric(port, "loanstream_notifier_failed_total", {"kind": "drift"})
        retried = metric(port, "loanstream_notifier_retried_total", {"kind": "drift"})
    finally:
        notifier.stop()
    assert notifier.process.returncode == 0, notifier.log.read_text()
    dead = [DeadLetter.from_json(m.value() or b"") for m in letters]
    assert sorted((d.source_topic, d.offset) for d in dead) == sorted(
        [(kafka.topic(DRIFT_EVENTS), n) for n in range(4)] + [(kafka.topic(RETRAIN_RESULTS), 0)]
    )
    assert {(d.reason, d.service) for d in dead} == {("webhook_failed", "notifier")}
    assert all("3 attempts" in d.error and "HTTP 500" in d.error for d in dead)
    assert all("127.0.0.1" not in d.error and "t0p" not in d.error for d in dead)
    assert (failed, retried) == (4, 8)
    # Three attempts per message (the first and two retries, 1 s then 2 s later); every
    # message's first attempt came before any first retry: none waited behind another's.
    texts = [orjson.loads(r.body)["text"] for r in receiver.requests]
    sent = [drift_sentence(d) for d in drifts] + [result_sentence(kept)]
    assert sorted(texts) == sorted(sent * 3)
    first = {}
    for r in receiver.requests:
        first.setdefault(orjson.loads(r.body)["text"], r.at)
    retries = [r.at for r in receiver.requests if r.at not in first.values()]
    assert max(first.values()) < min(retries)
    assert max(first.values()) - min(first.values()) < 1.0
    assert receiver.requests[0].headers.get("X-LoanStream-Signature") is None  # no secret
