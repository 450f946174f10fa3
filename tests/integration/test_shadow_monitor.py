"""Shadow predictions through the real Faust monitor: the challenger's windows on the live
metrics endpoint equal an offline computation on the same rows; loan.labelled stays the
champion's."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import numpy as np
import pytest

from loanstream.config import KafkaSettings
from loanstream.contracts import Decision, LabelledExample, Outcome, Prediction
from loanstream.kafka.broker import free_port
from loanstream.kafka.clients import IdempotentProducer
from loanstream.topics import LABELLED, OUTCOMES, PREDICTIONS, SHADOW_PREDICTIONS, create_topics
from tests.integration.consume import read_all
from tests.integration.processes import Service, service_env, wait_for
from tests.integration.test_monitor import metric
from tests.unit.monitor.test_shadow import offline
from trainer.pipeline import publish
from trainer.registry import Registry
from trainer.settings import TrainerSettings

N = 600


@pytest.fixture
def services(kafka: KafkaSettings, mlflow_settings: TrainerSettings) -> Iterator[list[Service]]:
    create_topics(kafka)
    publish(kafka, Registry(mlflow_settings).version("1").update())
    started: list[Service] = []
    yield started
    for service in started:
        service.stop()


def joins(port: int) -> str:
    """The join and message lines of the monitor's metrics (to tell why a wait failed)."""
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    return "\n".join(x for x in text.splitlines() if "join{" in x or "messages_total{" in x)


def prediction(i: int, p: float, version: str, at: datetime) -> bytes:
    return Prediction(
        application_id=f"shadow-{i}",
        event_time=at,
        probability=p,
        decision=Decision.APPROVE if p >= 0.5 else Decision.DECLINE,
        model_name="loan-repayment",
        model_version=version,
        features={"loan_purpose": "car", "income": 40_000.0},
        received_at=at,
        scored_at=at,
    ).to_json()


def test_the_challengers_windows_match_an_offline_computation_on_the_same_rows(
    kafka: KafkaSettings,
    mlflow_settings: TrainerSettings,
    services: list[Service],
    tmp_path: Path,
) -> None:
    port = free_port()
    variables = service_env(
        kafka,
        mlflow_settings,
        LOANSTREAM_MONITOR_STATE_EVERY_S="1",  # the gauges refresh with each snapshot
        LOANSTREAM_MONITOR_SHADOW_WINDOW="200",
        LOANSTREAM_MONITOR_SHADOW_WINDOW_STEP="100",
        PYTHONUNBUFFERED="1",  # the log as it happens
    )
    services.append(
        Service(["monitor", "--metrics-port", str(port)], variables, tmp_path / "monitor.log")
    )
    rng = np.random.default_rng(5)
    y = (rng.random(N) < 0.75).astype(int)
    champion = np.clip(0.5 + 0.3 * (y - 0.75) + rng.normal(0, 0.2, N), 0.0, 1.0)
    challenger = np.clip(0.5 + 0.4 * (y - 0.75) + rng.normal(0, 0.15, N), 0.0, 1.0)
    at = datetime.now(UTC) - timedelta(days=1)
    with IdempotentProducer(kafka) as producer:
        for i in range(N):  # the shadow predictions first, then the champion's
            key = f"shadow-{i}".encode()
            producer.produce(
                kafka.topic(SHADOW_PREDICTIONS), key, prediction(i, challenger[i], "2", at)
            )
        for i in range(N):
            key = f"shadow-{i}".encode()
            producer.produce(kafka.topic(PREDICTIONS), key, prediction(i, champion[i], "1", at))
    shadow = 'state="pending"'
    assert wait_for(lambda: metric(port, "loanstream_monitor_shadow_join", shadow) == N, 180), (
        joins(port)
    )
    assert wait_for(lambda: metric(port, "loanstream_monitor_join", 'state="pending"') == N)
    with IdempotentProducer(kafka) as producer:
        for i in range(N):
            outcome = Outcome(application_id=f"shadow-{i}", label=int(y[i]), outcome_time=at)
            producer.produce(kafka.topic(OUTCOMES), f"shadow-{i}".encode(), outcome.to_json())
    paired = 'state="paired"'
    assert wait_for(lambda: metric(port, "loanstream_monitor_shadow_join", paired) == N, 120)
    totals = "loanstream_monitor_version_total_metric"
    for version, role, p in (("2", "shadow", challenger), ("1", "champion", champion)):
        for name, expected in offline(p, y).items():
            labels = f'metric="{name}",model_version="{version}",role="{role}",rows="paired"'
            assert metric(port, totals, labels) == pytest.approx(expected, abs=1e-9), labels
    outcomes = 'model_version="2",rows="paired"'
    assert metric(port, "loanstream_monitor_shadow_outcomes", outcomes) == N
    labelled = [
        LabelledExample.from_json(m.value())
        for m in read_all(kafka, kafka.topic(LABELLED), N, timeout_s=60, settle_s=3)
    ]
    assert len(labelled) == N  # one per application: the champion's, never the shadow's
    assert {x.model_version for x in labelled} == {"1"}
    by_id = {x.application_id: x.probability for x in labelled}
    assert all(by_id[f"shadow-{i}"] == champion[i] for i in range(N))
    assert all(s.process.poll() is None for s in services)
