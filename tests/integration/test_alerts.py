"""`loanstream alerts` as a person runs it (a subprocess, the real CLI) against the real broker.

The records are those the loop writes for a concept drift and its retrains: drift events, the
monitor's requests (``monitor.pipeline.request_for``) and their retries (``RetryPolicy``), the
trainer's results and the promoted champion's update, plus hostile records a careless writer
left on the topics. The command must print every drift event once, in topic order, each with the
outcome of its retrain, and tail new ones with ``--follow``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import IO, Any

import orjson

from loanstream.config import KafkaSettings
from loanstream.contracts import (
    DeadLetter,
    DriftEvent,
    DriftSignal,
    ModelUpdate,
    RetrainOutcome,
    RetrainRequest,
    RetrainResult,
)
from loanstream.kafka.clients import IdempotentProducer
from loanstream.retraining import RetryPolicy
from loanstream.topics import (
    DEAD_LETTER,
    DRIFT_EVENTS,
    MODEL_UPDATES,
    RETRAIN_REQUESTS,
    RETRAIN_RESULTS,
    create_topics,
)
from monitor.pipeline import request_for

T = datetime(2026, 3, 1, tzinfo=UTC)
MODEL = "loan-default"


def drift(n: int, signal: DriftSignal, version: str, hours: int) -> DriftEvent:
    concept = signal == DriftSignal.CONCEPT
    return DriftEvent(
        event_id=f"drift-{n:04d}",
        signal=signal,
        detector="adwin" if concept else "psi[act]",
        feature=None if concept else "credit_score",
        statistic=14.2 if concept else 0.31,
        threshold=9.21 if concept else 0.1,
        p_value=6.8e-7 if concept else 1e-9,
        window_size=400 if concept else 5000,
        first_position=1000 * n,
        confirmed_position=1000 * n + 380,
        first_event_time=T + timedelta(hours=hours - 2),
        confirmed_event_time=T + timedelta(hours=hours),
        model_name=MODEL,
        model_version=version,
        detected_at=T + timedelta(hours=hours),
    )


def result(outcome: RetrainOutcome, requests: list[RetrainRequest], **more: Any) -> RetrainResult:
    return RetrainResult(
        model_name=MODEL,
        outcome=outcome,
        request_ids=[r.request_id for r in requests],
        drift_event_ids=[r.drift_event_id for r in requests if r.drift_event_id],
        **more,
    )


def update(version: str) -> ModelUpdate:
    return ModelUpdate(
        model_name=MODEL,
        version=version,
        run_id="f" * 32,
        model_uri=f"models:/{MODEL}/{version}",
        sha256="0" * 64,
        metrics={"auc": 0.83},
    )


def alerts_command(kafka: KafkaSettings, *args: str) -> list[str]:
    return [sys.executable, "-m", "loanstream.cli", "alerts", "-b", kafka.bootstrap_servers, *args]


def env_of(kafka: KafkaSettings) -> dict[str, str]:
    return {**os.environ, "LOANSTREAM_KAFKA_TOPIC_PREFIX": kafka.topic_prefix}


def test_alerts_json_tells_each_drift_event_with_how_its_retrain_ended(
    kafka: KafkaSettings,
) -> None:
    create_topics(kafka)
    concept = drift(1, DriftSignal.CONCEPT, "1", hours=10)
    data = drift(2, DriftSignal.DATA, "1", hours=11)
    later = drift(3, DriftSignal.CONCEPT, "2", hours=30)
    first = request_for(MODEL, concept)
    retry = RetryPolicy(3).follow_up(first, False, True, 2900, 2000, T + timedelta(hours=20))
    assert retry is not None
    data_request = request_for(MODEL, data)
    last = request_for(MODEL, later)
    refused = DeadLetter.of(
        source_topic=kafka.topic(RETRAIN_REQUESTS), partition=0, offset=3, key=MODEL.encode(),
        value=b"{}", reason="invalid", error="window_start after window_end", service="trainer",
    )  # fmt: skip
    with IdempotentProducer(kafka) as producer:

        def send(topic: str, value: bytes) -> None:
            producer.produce(kafka.topic(topic), MODEL.encode(), value)

        for event in (concept, data, concept, later):  # the monitor republished drift-0001
            send(DRIFT_EVENTS, event.to_json())
        send(DRIFT_EVENTS, b"\x80\x04\x95pickled")  # hostile: never unpickled
        send(DRIFT_EVENTS, b'{"event_id": "drift-9"}')
        for request in (first, data_request, retry, last):  # offsets 0..3
            send(RETRAIN_REQUESTS, request.to_json())
        send(
            RETRAIN_RESULTS,
            result(
                RetrainOutcome.KEPT_CHAMPION, [first, data_request], reason="AUC margin 0.001",
                challenger_version="2", champion_version="1", metrics={"auc": 0.74},
                champion_metrics={"auc": 0.741}, finished_at=T + timedelta(hours=19),
            ).to_json(),
        )  # fmt: skip
        send(
            RETRAIN_RESULTS,
            result(
                RetrainOutcome.PROMOTED, [retry], reason="AUC +0.05 over the champion",
                challenger_version="3", champion_version="3", metrics={"auc": 0.83},
                champion_metrics={"auc": 0.78}, finished_at=T + timedelta(hours=26),
            ).to_json(),
        )  # fmt: skip
        send(MODEL_UPDATES, update("3").to_json())
        send(DEAD_LETTER, refused.to_json())

    done = subprocess.run(
        alerts_command(kafka, "--json"), env=env_of(kafka), capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = [orjson.loads(line) for line in done.stdout.splitlines()]
    assert [(a["event_id"], a["signal"], a["detector"]) for a in lines] == [
        ("drift-0001", "concept", "adwin"),
        ("drift-0002", "data", "psi[act]"),
        ("drift-0003", "concept", "adwin"),
    ]
    assert [(a["first_position"], a["confirmed_position"]) for a in lines] == [
        (1000, 1380), (2000, 2380), (3000, 3380),
    ]  # fmt: skip
    assert [a["retrain_status"] for a in lines] == ["promoted", "kept_champion", "dead_lettered"]
    one, two, three = lines
    assert [r["request_id"] for r in one["requests"]] == [
        "retrain-drift-0001", "retrain-drift-0001-attempt-2",
    ]  # fmt: skip
    assert one["promoted_version"] == "3" and one["promoted_update"]["version"] == "3"
    assert [r["outcome"] for r in one["results"]] == ["kept_champion", "promoted"]
    assert two["psi_band"] == "act" and "AUC margin 0.001" in two["retrain_text"]
    assert three["dead_lettered_requests"] == [
        {"request_id": "retrain-drift-0003", "error": "window_start after window_end"}
    ]
    assert "2 records on " + kafka.topic(DRIFT_EVENTS) + " could not be read" in done.stderr

    filtered = subprocess.run(
        alerts_command(kafka, "--json", "--signal", "data", "--since", "2026-03-01T10:30"),
        env=env_of(kafka), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert [orjson.loads(x)["event_id"] for x in filtered.stdout.splitlines()] == ["drift-0002"]

    human = subprocess.run(
        alerts_command(kafka), env=env_of(kafka), capture_output=True, text=True, timeout=60
    )
    assert human.returncode == 0, human.stderr
    assert "CONCEPT drift on loan-default v1  [drift-0001]" in human.stdout
    assert "promoted v3 of loan-default; AUC +0.05 over the champion" in human.stdout


class Lines:
    """The lines a process prints, gathered by a thread, waited on with a deadline."""

    def __init__(self, stream: IO[str]) -> None:
        self.lines: list[str] = []
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            self.lines.append(line)

    def wait(self, count: int, timeout_s: float = 30.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout_s
        while len(self.lines) < count and time.monotonic() < deadline:
            time.sleep(0.1)
        return [orjson.loads(line) for line in self.lines]


def test_follow_prints_new_alerts_and_the_results_that_come_later(kafka: KafkaSettings) -> None:
    create_topics(kafka)
    old = drift(1, DriftSignal.CONCEPT, "1", hours=1)
    with IdempotentProducer(kafka) as producer:
        producer.produce(kafka.topic(DRIFT_EVENTS), MODEL.encode(), old.to_json())
    follower = subprocess.Popen(
        alerts_command(kafka, "--json", "--follow"), env=env_of(kafka), text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        out = Lines(follower.stdout)  # type: ignore[arg-type]
        assert [a["event_id"] for a in out.wait(1)] == ["drift-0001"]
        new = drift(2, DriftSignal.CONCEPT, "1", hours=5)
        request = request_for(MODEL, new)
        with IdempotentProducer(kafka) as producer:
            producer.produce(kafka.topic(DRIFT_EVENTS), MODEL.encode(), new.to_json())
            producer.produce(kafka.topic(RETRAIN_REQUESTS), MODEL.encode(), request.to_json())
        printed = out.wait(2)
        assert [(a["event_id"], a["update"]) for a in printed][:2] == [
            ("drift-0001", False), ("drift-0002", False),
        ]  # fmt: skip
        waiting = result(RetrainOutcome.WAITING, [request], reason="", rows=700, rows_needed=2000)
        with IdempotentProducer(kafka) as producer:
            producer.produce(kafka.topic(RETRAIN_RESULTS), MODEL.encode(), waiting.to_json())
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            printed = out.wait(len(out.lines) + 1, 1.0)
            if printed[-1]["retrain_status"] == "waiting":
                break
        last = printed[-1]
        assert (last["event_id"], last["update"], last["retrain_status"]) == (
            "drift-0002", True, "waiting",
        )  # fmt: skip
        assert "still waiting for labels (700 of 2,000 rows)" in last["retrain_text"]
        assert all(a["event_id"] != "drift-0001" or not a["update"] for a in printed)
    finally:
        follower.send_signal(signal.SIGINT)
        code = follower.wait(30)
    assert code == 0
