"""The retrain service against the real broker and a real MLflow SQLite store."""

import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
from prometheus_client import CollectorRegistry

from loanstream.config import KafkaSettings
from loanstream.contracts import Decision, LabelledExample, ModelUpdate, RetrainRequest
from loanstream.kafka.clients import IdempotentProducer
from loanstream.spec import FeatureSpec, load_spec
from loanstream.topics import LABELLED, MODEL_UPDATES, RETRAIN_REQUESTS, create_topics
from producer.generator import Generator
from producer.outcomes import OUTCOME_TIME
from producer.scenarios import Drift, Scenario
from producer.world import load_world
from tests.integration.consume import read_all
from tests.trainer_data import history
from trainer.metrics import TrainerMetrics
from trainer.pipeline import options_from, publish, training_round
from trainer.registry import Registry
from trainer.service import RetrainService
from trainer.settings import TrainerSettings


def wait_for(condition, timeout: float = 120.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.1)


def value(metric: CollectorRegistry, name: str, labels: dict[str, str]) -> float:
    return metric.get_sample_value(name, labels) or 0.0


def send_labelled(kafka: KafkaSettings, labelled: pd.DataFrame, spec: FeatureSpec) -> None:
    """History rows as the monitor writes them to loan.labelled, stamped with outcome time."""
    with IdempotentProducer(kafka) as producer:
        for row in labelled.itertuples(index=False):
            data = row._asdict()
            example = LabelledExample(
                application_id=data[spec.id_column],
                event_time=data[spec.event_time_column],
                outcome_time=data[OUTCOME_TIME],
                features={f: (None if pd.isna(data[f]) else data[f]) for f in spec.feature_names},
                probability=0.5,
                decision=Decision.REVIEW,
                model_name="bootstrap",
                model_version="0",
                label=int(data[spec.target_column]),
            )
            producer.produce(
                kafka.topic(LABELLED),
                example.application_id.encode(),
                example.to_json(),
                timestamp_ms=int(data[OUTCOME_TIME].timestamp() * 1000),
            )


@contextmanager
def running(
    kafka: KafkaSettings, spec: FeatureSpec, settings: TrainerSettings, registry: Registry
) -> Iterator[tuple[threading.Thread, CollectorRegistry]]:
    """The retrain service in a thread of its own, with fresh metrics; stopped on the way out."""
    metrics = CollectorRegistry()
    service = RetrainService(
        kafka,
        spec,
        settings,
        registry,
        TrainerMetrics(metrics),
        lambda update: publish(kafka, update),
    )
    stop = threading.Event()
    worker = threading.Thread(target=service.run, args=(stop, f"g-{uuid.uuid4().hex}"))
    worker.start()
    try:
        yield worker, metrics
    finally:
        stop.set()
        worker.join(30)


def test_a_retrain_request_registers_a_version_and_publishes_one_update(
    kafka: KafkaSettings, tmp_path: Path
) -> None:
    create_topics(kafka)
    frame, spec = history(8000, seed=9)
    labelled = frame[frame[OUTCOME_TIME].notna()]
    send_labelled(kafka, labelled, spec)

    settings = TrainerSettings(
        data_dir=tmp_path, candidates=("logistic",), search_candidates=2, recent_window_days=3650
    )
    registry = Registry(settings)
    with running(kafka, spec, settings, registry) as (worker, metrics_registry):

        def request(reason: str) -> None:
            with IdempotentProducer(kafka) as producer:
                r = RetrainRequest(
                    request_id=uuid.uuid4().hex,
                    model_name=settings.model_name,
                    reason=reason,
                    requested_by="test",
                )
                producer.produce(kafka.topic(RETRAIN_REQUESTS), r.model_name.encode(), r.to_json())

        request("drift confirmed")
        wait_for(
            lambda: (
                value(metrics_registry, "loanstream_trainer_requests_total", {"outcome": "trained"})
                == 1
            )
        )
        request("same drift, again")  # arrives while the round runs: covered by it
        request("and again")
        wait_for(
            lambda: (
                value(metrics_registry, "loanstream_trainer_retrains_total", {"result": "promoted"})
                == 1
            )
        )
        wait_for(
            lambda: (
                value(
                    metrics_registry,
                    "loanstream_trainer_requests_total",
                    {"outcome": "deduplicated"},
                )
                == 2
            ),
            timeout=30,
        )
        assert (
            value(metrics_registry, "loanstream_trainer_retrains_total", {"result": "rejected"})
            == 0
        )
    assert not worker.is_alive()
    versions = registry.list_versions()
    assert [v["version"] for v in versions] == ["1"]
    assert versions[0]["aliases"] == ["champion"]
    updates = [
        ModelUpdate.from_json(m.value()) for m in read_all(kafka, kafka.topic(MODEL_UPDATES), 1)
    ]
    assert [(u.model_name, u.version) for u in updates] == [(settings.model_name, "1")]
    assert updates[0].sha256 == registry.champion().sha256  # type: ignore[union-attr]

    # A deliberately worse challenger is registered, not promoted, and nothing is published.
    worse = training_round(
        labelled.drop(columns=[OUTCOME_TIME]),
        spec,
        settings,
        registry,
        options_from(settings, shuffle_labels=True),
        lambda update: publish(kafka, update),
    )
    assert not worse.promoted and worse.version.version == "2"
    assert registry.champion().version == "1"  # type: ignore[union-attr]
    assert len(read_all(kafka, kafka.topic(MODEL_UPDATES), 1, settle_s=2.0)) == 1


def test_a_request_for_a_new_regime_waits_until_enough_of_it_is_labelled(
    kafka: KafkaSettings, tmp_path: Path
) -> None:
    """A drift is confirmed when only a few hundred rows of the new regime are labelled: the
    request waits for enough of them, then trains on the window it names and nothing older."""
    create_topics(kafka)
    frame, spec = history(3000, seed=10)
    labelled = frame[frame[OUTCOME_TIME].notna()].sort_values(spec.event_time_column)
    onset = labelled[spec.event_time_column].iloc[1000]
    settings = TrainerSettings(
        data_dir=tmp_path,
        candidates=("logistic",),
        search_candidates=2,
        min_rows=700,  # the window needs 1,000 rows
        rows_poll_s=0.5,
    )
    send_labelled(kafka, labelled.iloc[:1500], spec)  # 500 rows since the onset
    with running(kafka, spec, settings, Registry(settings)) as (_, metrics_registry):
        with IdempotentProducer(kafka) as producer:
            r = RetrainRequest(
                request_id="r1",
                model_name=settings.model_name,
                reason="concept drift confirmed",
                requested_by="test",
                window_start=onset.to_pydatetime(),
            )
            producer.produce(kafka.topic(RETRAIN_REQUESTS), b"m", r.to_json())
        wait_for(lambda: value(metrics_registry, "loanstream_trainer_rows_missing", {}) == 500)
        assert value(metrics_registry, "loanstream_trainer_row_checks_total", {}) >= 1
        assert (
            value(metrics_registry, "loanstream_trainer_requests_total", {"outcome": "trained"})
            == 0
        )
        send_labelled(kafka, labelled.iloc[1500:2100], spec)
        wait_for(
            lambda: (
                value(metrics_registry, "loanstream_trainer_retrains_total", {"result": "promoted"})
                == 1
            )
        )
    assert value(metrics_registry, "loanstream_trainer_rows_missing", {}) == 0
    (run,) = Registry(settings).list_versions()
    in_window = int((labelled[spec.event_time_column].iloc[:2100] >= onset).sum())
    # "rows" counts the training split, 70% of the window: the 700 asked for, nothing older
    # (the window plus the older rows would make 1,470)
    assert 700 <= int(run["rows"]) <= 0.7 * in_window + 1


def test_a_lost_round_is_asked_for_again_from_the_confirmation_and_then_promoted(
    kafka: KafkaSettings, tmp_path: Path
) -> None:
    """The live half of the retry policy: the first round (a drill, on shuffled labels) loses
    to the champion; the trainer sends a follow-up request for labels from the drift's
    confirmation on, reads it back, trains on the new regime and promotes."""
    create_topics(kafka)
    spec = load_spec()
    drift = Drift(
        kind="concept",
        start=4500,
        categories={"loan_purpose": {"debt_consolidation": -2.5}},
        coefficients={"credit_score": -0.5},
    )
    world = Generator(spec, load_world(None, spec), Scenario(name="t", drifts=[drift]), seed=12)
    frame = world.rows(0, 9000)
    frame = frame[frame[OUTCOME_TIME].notna()].reset_index(drop=True)
    times = frame[spec.event_time_column]
    settings = TrainerSettings(
        data_dir=tmp_path,
        candidates=("logistic",),
        search_candidates=2,
        min_rows=700,
        rows_poll_s=0.5,
        wait_for_rows_s=3,
        drill_losing_rounds=1,
    )
    registry = Registry(settings)
    training_round(  # the champion: the old regime
        frame[times < world.event_time(4000)].drop(columns=[OUTCOME_TIME]),
        spec,
        settings,
        registry,
        options_from(settings),
        None,
    )
    send_labelled(kafka, frame, spec)
    confirmed = world.event_time(5000)
    with running(kafka, spec, settings, registry) as (_, metrics_registry):
        with IdempotentProducer(kafka) as producer:
            r = RetrainRequest(
                request_id="retrain-drift-7",
                model_name=settings.model_name,
                reason="concept drift confirmed",
                requested_by="monitor",
                window_start=world.event_time(3000),  # the evidence began before the onset
                drift_event_id="drift-7",
                drift_confirmed_at=confirmed,
            )
            producer.produce(kafka.topic(RETRAIN_REQUESTS), b"m", r.to_json())
        wait_for(
            lambda: (
                value(metrics_registry, "loanstream_trainer_retrains_total", {"result": "promoted"})
                == 1
            ),
            timeout=240,
        )
    assert value(metrics_registry, "loanstream_trainer_retrains_total", {"result": "rejected"}) == 1
    requests = [
        RetrainRequest.from_json(m.value())
        for m in read_all(kafka, kafka.topic(RETRAIN_REQUESTS), 2, settle_s=2.0)
    ]
    assert [(q.request_id, q.attempt) for q in requests] == [
        ("retrain-drift-7", 1),
        ("retrain-drift-7-attempt-2", 2),
    ]
    retry = requests[1]
    assert retry.requested_by == "retry-policy"
    assert retry.window_start == confirmed and retry.drift_event_id == "drift-7"
    assert retry.min_rows is not None and retry.min_rows >= 1000
    versions = registry.list_versions()
    assert [v["version"] for v in versions] == ["1", "2", "3"]
    assert versions[2]["aliases"] == ["champion"]
    assert int(versions[2]["rows"]) <= 0.7 * int((times >= confirmed).sum()) + 1  # the new regime
