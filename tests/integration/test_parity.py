"""One core, two drivers: the same seeded stream through the event-time engine and through the
real Faust scorer and monitor (one-partition topics, the same MLflow store) gives the same
probability for every application and the same drift events; the people watching them get
exactly those events from `loanstream alerts --json` and one webhook message each from
`loanstream notify`.

The live side gets the applications first and the outcomes once every prediction is out, in
label-time order, so the monitor joins them in the order the engine does: with live timing,
which of a prediction and its outcome comes first is a race, and so is the labelled order.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from datetime import timedelta
from pathlib import Path

import orjson
import pandas as pd

from loanstream.config import KafkaSettings
from loanstream.contracts import DriftEvent, Prediction
from loanstream.frames import application_messages
from loanstream.kafka.clients import IdempotentProducer
from loanstream.spec import load_spec
from loanstream.topics import (
    APPLICATIONS,
    DRIFT_EVENTS,
    LABELLED,
    OUTCOMES,
    PREDICTIONS,
    create_topics,
)
from loop.backtest import BacktestOptions, run_backtest
from loop.engine import LoopOptions
from loop.timeline import LABEL_TIME
from producer.emitter import outcome_messages
from producer.generator import Generator
from producer.outcomes import LabelPolicy
from producer.scenarios import Drift, Scenario
from producer.world import load_world
from tests.integration.consume import read_all
from tests.integration.processes import Service, service_env, wait_for
from tests.unit.loop.test_notify import Receiver
from trainer.pipeline import publish
from trainer.registry import Registry
from trainer.settings import TrainerSettings

SPEC = load_spec()
ROWS = 16_000


def test_the_engine_and_the_services_give_the_same_predictions_and_drift_events(
    kafka: KafkaSettings, tmp_path: Path
) -> None:
    drift = Drift(
        kind="concept",
        start=10_000,
        categories={"loan_purpose": {"debt_consolidation": -2.5}},
        coefficients={"credit_score": -0.5},
    )
    generator = Generator(
        SPEC,
        load_world(None, SPEC),
        Scenario(name="parity", drifts=[drift]),
        seed=23,
        labels=LabelPolicy(median_days=0.5, sigma=0.3, unlabelled_fraction=0.05),
    )
    history = generator.rows(0, ROWS)
    options = BacktestOptions(
        train_fraction=0.25,
        candidates=("logistic",),
        min_rows=500,
        search_candidates=2,
        policy="never",  # one model version on both sides
        loop=LoopOptions(training_latency=timedelta(hours=6)),
    )
    workdir = tmp_path / "engine"
    engine = run_backtest(history, SPEC, options, None, workdir)
    expected = engine.predictions
    assert len(expected) == 12_000

    # The services, on the engine's own MLflow store and detector calibration.
    one = kafka.model_copy(update={"partitions": 1})
    create_topics(one)
    registry = Registry(engine_settings(workdir))
    publish(one, registry.version("1").update())
    env = service_env(one, registry.settings, LOANSTREAM_MONITOR_DATA_DIR=str(workdir))
    receiver = Receiver()  # a webhook: `loanstream notify` posts each drift event to it
    notify_env = {
        **env,
        "LOANSTREAM_NOTIFY_WEBHOOK_URL": receiver.start(),
        "LOANSTREAM_NOTIFY_WEBHOOK_FORMAT": "json",
        "LOANSTREAM_NOTIFY_GROUP_ID": f"notifier-{uuid.uuid4().hex[:8]}",
    }
    services = [
        Service(["scorer", "--no-api"], env, tmp_path / "scorer.log"),
        Service(["monitor", "--metrics-port", "0"], env, tmp_path / "monitor.log"),
        Service(["notify", "--metrics-port", "0"], notify_env, tmp_path / "notifier.log"),
    ]
    try:
        replay = history.sort_values(SPEC.event_time_column, kind="stable").iloc[4_000:]
        with IdempotentProducer(one) as producer:
            for key, value, ms in application_messages(replay, SPEC):
                producer.produce(one.topic(APPLICATIONS), key, value, ms)
        scored = read_all(one, one.topic(PREDICTIONS), len(replay), timeout_s=240, settle_s=5)
        live = {p.application_id: p for p in (Prediction.from_json(m.value()) for m in scored)}
        known = replay.assign(**{LABEL_TIME: replay["outcome_time"]})
        known = known[known[LABEL_TIME].notna()].sort_values(LABEL_TIME, kind="stable")
        messages, _ = outcome_messages(known, SPEC, LABEL_TIME)
        with IdempotentProducer(one) as producer:
            for key, value, ms in messages:
                producer.produce(one.topic(OUTCOMES), key, value, ms)
        read_all(one, one.topic(LABELLED), len(messages), timeout_s=240, settle_s=5)
        events = [
            DriftEvent.from_json(m.value())
            for m in read_all(one, one.topic(DRIFT_EVENTS), 1, timeout_s=60, settle_s=10)
        ]
        assert all(s.process.poll() is None for s in services)
        drifts = [e.event_id for e in events]
        posted = lambda: [b["record"]["event_id"] for b in received(receiver, "drift")]  # noqa: E731
        assert wait_for(lambda: len(posted()) >= len(drifts), 60), services[2].log.read_text()
        time.sleep(2)  # a second message for one event would come now
        assert posted() == drifts, "one webhook message per drift event, in order"
    finally:
        for service in services:
            service.stop()
        receiver.stop()

    assert len(live) == len(expected)
    served = pd.Series({k: p.probability for k, p in live.items()})
    engine_p = expected.set_index("application_id")["probability"]
    assert (served[engine_p.index] - engine_p).abs().max() <= 1e-12
    decisions = pd.Series({k: p.decision.value for k, p in live.items()})
    assert (decisions[engine_p.index] == expected.set_index("application_id")["decision"]).all()

    def described(signal: str, detector: str, feature: object, at: int) -> tuple:
        return (signal, detector, feature if isinstance(feature, str) else "", int(at))

    ours = sorted(
        described(r.signal, r.detector, r.feature, r.stream_positions[1])
        for r in engine.drift_events.itertuples()
    )
    theirs = sorted(
        described(e.signal.value, e.detector, e.feature, e.confirmed_position) for e in events
    )
    print("engine:", ours, "\nservices:", theirs)
    assert ours, "the seeded drift must be detected"
    assert theirs == ours

    # A person watching alerts: `loanstream alerts --json` tells exactly these events, in the
    # order the monitor confirmed them, each with the request it sent and no trainer's answer.
    told = subprocess.run(
        [sys.executable, "-m", "loanstream.cli", "alerts", "--json", "-b", one.bootstrap_servers],
        env={**os.environ, "LOANSTREAM_KAFKA_TOPIC_PREFIX": one.topic_prefix},
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    alerts = [orjson.loads(line) for line in told.stdout.splitlines()]
    assert [a["event_id"] for a in alerts] == [e.event_id for e in events]
    assert [
        described(a["signal"], a["detector"], a["feature"], a["confirmed_position"]) for a in alerts
    ] == [described(e.signal.value, e.detector, e.feature, e.confirmed_position) for e in events]
    assert sorted(described(a["signal"], a["detector"], a["feature"], a["confirmed_position"])
                  for a in alerts) == ours  # fmt: skip
    assert {a["retrain_status"] for a in alerts} <= {"no_answer", "no_retrain"}
    assert any(a["requests"] for a in alerts), "a confirmed drift asks for a retrain"


def received(receiver: Receiver, kind: str) -> list[dict]:
    return [b for b in (orjson.loads(r.body) for r in list(receiver.requests)) if b["kind"] == kind]


def engine_settings(workdir: Path) -> TrainerSettings:
    return TrainerSettings(tracking_uri=f"sqlite:///{workdir / 'mlflow.db'}", data_dir=workdir)
