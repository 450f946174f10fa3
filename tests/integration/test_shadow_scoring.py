"""Shadow scoring against the real broker, a real MLflow store and the real scorer process: the
challenger scores every application beside the champion and changes nothing it decides; then the
trainer's verdict promotes a challenger ahead on shared live outcomes."""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from confluent_kafka import Message, Producer
from prometheus_client import CollectorRegistry

from loanstream.config import KafkaSettings
from loanstream.contracts import (
    Decision,
    LabelledExample,
    ModelUpdate,
    Prediction,
    RetrainOutcome,
    RetrainResult,
)
from loanstream.kafka.clients import IdempotentProducer
from loanstream.spec import load_spec
from loanstream.topics import (
    APPLICATIONS,
    LABELLED,
    MODEL_UPDATES,
    PREDICTIONS,
    RETRAIN_RESULTS,
    SHADOW_PREDICTIONS,
    create_topics,
)
from loanstream.validation import ApplicationValidator
from scorer.core import score_batch
from scorer.watcher import load_compiled
from tests.helpers import application_json
from tests.integration.consume import read_all
from tests.integration.processes import Service
from tests.trainer_data import history
from trainer.data import labelled_frame
from trainer.metrics import TrainerMetrics
from trainer.pipeline import options_from, publish, training_round
from trainer.registry import Registry
from trainer.service import RetrainService
from trainer.settings import TrainerSettings
from trainer.shadow import Verdict

SPEC = load_spec()
N = 400


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> TrainerSettings:
    """v1 champion (logistic), v2 registered (gradient boosting), in a store of this module."""
    settings = TrainerSettings(
        data_dir=tmp_path_factory.mktemp("mlflow"), search_candidates=2, promotion_margin=1.0
    )
    registry = Registry(settings)
    frame, spec = history(6000, seed=4)
    good, _ = labelled_frame(frame, spec)
    for candidate in ("logistic", "hgb"):  # the margin of 1.0 keeps v1 champion
        training_round(
            good, spec, settings, registry, options_from(settings, candidates=(candidate,)), None
        )
    return settings


@pytest.fixture
def scorer_log(tmp_path: Path) -> Iterator[list[Service]]:
    started: list[Service] = []
    yield started
    for service in started:
        service.stop()


def test_the_challenger_shadows_every_application_and_decides_nothing(
    kafka: KafkaSettings, store: TrainerSettings, scorer_log: list[Service], tmp_path: Path
) -> None:
    create_topics(kafka)
    registry = Registry(store)
    assert registry.champion().version == "1"  # type: ignore[union-attr]
    registry.shadow("2")
    publish(kafka, registry.version("1").update())
    log = tmp_path / "scorer.log"
    env = {
        "LOANSTREAM_KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
        "LOANSTREAM_KAFKA_TOPIC_PREFIX": kafka.topic_prefix,
        "LOANSTREAM_SCORER_TRACKING_URI": store.resolved_tracking_uri(),
        "LOANSTREAM_SCORER_APP_ID": f"scorer-{uuid.uuid4().hex[:8]}",
    }
    scorer_log.append(Service(["scorer", "--no-api"], env, log))
    # The challenger loads after the champion: applications scored before it have no shadow.
    # Warm-up applications (ids from 100,000 on) go first, until one is scored in shadow.
    warm = Producer({"bootstrap.servers": kafka.bootstrap_servers})
    shadowing = False
    for k in range(100_000, 100_090):
        warm.produce(kafka.topic(APPLICATIONS), application_json(SPEC, k, random.Random(k)))
        warm.flush(10)
        if read_all(kafka, kafka.topic(SHADOW_PREDICTIONS), 1, timeout_s=2, settle_s=0.1):
            shadowing = True
            break
    assert shadowing, log.read_text()[-3000:]
    warmed = {f"app-{k:07d}" for k in range(100_000, 100_090)}

    rng = random.Random(21)
    values = [application_json(SPEC, i, rng) for i in range(N)]
    producer = Producer({"bootstrap.servers": kafka.bootstrap_servers, "linger.ms": 5})
    for i, value in enumerate(values):
        producer.produce(kafka.topic(APPLICATIONS), value, f"k{i}".encode())
    assert producer.flush(30) == 0

    def ours(messages: list[Message]) -> list[Message]:
        return [m for m in messages if m.key().decode() not in warmed]

    served = ours(read_all(kafka, kafka.topic(PREDICTIONS), N, timeout_s=120))
    shadowed = ours(read_all(kafka, kafka.topic(SHADOW_PREDICTIONS), N, timeout_s=60))
    assert scorer_log[0].process.poll() is None, log.read_text()[-3000:]

    # The same applications scored offline by each version, loaded as the scorer loads them.
    validator = ApplicationValidator(SPEC)
    apps = [validator.parse(v) for v in values]
    now = datetime.now(UTC)
    uri = store.resolved_tracking_uri()
    offline = {}
    for version in ("1", "2"):
        chosen = registry.version(version)
        model = load_compiled(chosen.uri, uri, chosen.sha256, chosen.name, version)
        offline[version] = {p.application_id: p for p in score_batch(model, apps, now, now)}

    champion = {Prediction.from_json(m.value()).application_id: m for m in served}
    shadow = {Prediction.from_json(m.value()).application_id: m for m in shadowed}
    assert len(served) == len(shadowed) == N  # one each, no duplicates
    assert set(champion) == set(shadow) == set(offline["1"])
    for app_id, message in champion.items():
        p, expected = Prediction.from_json(message.value()), offline["1"][app_id]
        assert (p.decision, p.probability, p.model_version) == (
            expected.decision,
            expected.probability,
            "1",
        )
        assert [r.feature for r in p.reasons] == [r.feature for r in expected.reasons]
        s, theirs = Prediction.from_json(shadow[app_id].value()), offline["2"][app_id]
        assert (s.decision, s.probability, s.model_version, s.reasons) == (
            theirs.decision,
            theirs.probability,
            "2",
            [],
        )
        assert shadow[app_id].key() == app_id.encode()
        assert shadow[app_id].timestamp() == message.timestamp()  # the application's
    assert any(
        offline["1"][a].decision != offline["2"][a].decision for a in champion
    )  # the two models disagree somewhere: the served decisions are the champion's all the same
    assert registry.champion().version == "1"  # type: ignore[union-attr]


def outcomes(n: int, seed: int = 3) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labels drawn from a known P(repaid); the champion sees it through noise, the challenger
    sees it as it is."""
    rng = np.random.default_rng(seed)
    truth = rng.uniform(0.05, 0.95, n)
    labels = (rng.uniform(size=n) < truth).astype(int)
    return labels, np.clip(truth + rng.normal(0, 0.3, n), 0.01, 0.99), truth


def test_the_trainer_promotes_a_challenger_ahead_on_shared_live_outcomes(
    kafka: KafkaSettings, store: TrainerSettings
) -> None:
    create_topics(kafka)
    settings = store.model_copy(update={"promotion_policy": "shadow", "shadow_min_outcomes": 1000})
    registry = Registry(settings)
    if registry.champion().version != "1":  # type: ignore[union-attr]
        registry.promote("1", "reset for this test")
    registry.shadow("2", {"requests": "retrain-a", "drift_events": "drift-a"})
    labels, champion_p, challenger_p = outcomes(2000)
    now = datetime.now(UTC)
    with IdempotentProducer(kafka) as producer:
        for i in range(2000):
            app = f"live-{i}"
            common = {"application_id": app, "event_time": now, "features": {}}
            if i < 1800:  # 200 applications the challenger did not score
                shadow = Prediction(
                    **common,
                    probability=float(challenger_p[i]),
                    decision=Decision.REVIEW,
                    model_name=settings.model_name,
                    model_version="2",
                    received_at=now,
                    scored_at=now,
                )
                producer.produce(kafka.topic(SHADOW_PREDICTIONS), app.encode(), shadow.to_json())
            example = LabelledExample(
                **common,
                outcome_time=now,
                probability=float(champion_p[i]),
                decision=Decision.REVIEW,
                model_name=settings.model_name,
                model_version="1",
                label=int(labels[i]),
            )
            producer.produce(kafka.topic(LABELLED), app.encode(), example.to_json())
        producer.produce(kafka.topic(LABELLED), b"bad", b'{"label": 7}')  # skipped, no crash
        producer.produce(kafka.topic(SHADOW_PREDICTIONS), b"bad", b"\x00\x01")
    metrics = CollectorRegistry()
    service = RetrainService(
        kafka,
        SPEC,
        settings,
        registry,
        TrainerMetrics(metrics),
        lambda update: publish(kafka, update),
    )
    verdict = service.check_shadow()
    service.flush()
    assert verdict is not None and verdict.verdict == Verdict.PROMOTE, verdict
    assert verdict.outcomes == 1800
    assert registry.champion().version == "2"  # type: ignore[union-attr]
    assert registry.challenger() is None
    assert registry.client.get_model_version(settings.model_name, "2").tags["promoted_by"] == (
        "shadow"
    )
    [update] = read_all(kafka, kafka.topic(MODEL_UPDATES), 1, timeout_s=30)
    assert ModelUpdate.from_json(update.value()).version == "2"
    [message] = read_all(kafka, kafka.topic(RETRAIN_RESULTS), 1, timeout_s=30)
    result = RetrainResult.from_json(message.value())
    assert (result.outcome, result.challenger_version, result.champion_version) == (
        RetrainOutcome.PROMOTED,
        "2",
        "2",
    )
    assert result.request_ids == ["retrain-a"] and result.drift_event_ids == ["drift-a"]
    assert result.metrics["auc"] > result.champion_metrics["auc"]
    assert result.rows == 1800 and "1800 shared live outcomes" in result.reason
    assert (
        metrics.get_sample_value("loanstream_trainer_shadow_verdicts_total", {"verdict": "promote"})
        == 1
    )
