"""One training round: train, register, compare with the champion on the same newest holdout,
promote or not (and say why), and publish a ModelUpdate on promotion.

The champion is read from the registry before anything is trained: a registry that cannot say
which model serves stops the round there (:class:`trainer.registry.RegistryError`), before
minutes of training and before anything is registered or promoted.

A ModelUpdate only prompts the services to look in the registry now, so a promotion stands
without it: :func:`announce` publishes when a broker answers and otherwise says the scorers
will find the champion when they next look. Every update is signed with the Kafka settings'
``model_update_key`` when one is set.

Under the ``shadow`` promotion policy a challenger that wins on the holdout is not promoted: it
becomes the registry's challenger, scored live beside the champion, and trainer.shadow decides
later. With no champion yet there is nothing to shadow, and the first model is promoted."""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from loanstream.config import KafkaSettings
from loanstream.contracts import ModelUpdate, RetrainOutcome, RetrainResult
from loanstream.kafka.clients import IdempotentProducer
from loanstream.models import DecisionBands, repaid_probability
from loanstream.signing import sign_update
from loanstream.spec import FeatureSpec
from loanstream.topics import MODEL_UPDATES, RETRAIN_RESULTS
from trainer.data import time_split
from trainer.evaluate import classification_metrics
from trainer.promotion import decide
from trainer.registry import RegisteredVersion, Registry, data_fingerprint
from trainer.report import write_report
from trainer.settings import TrainerSettings
from trainer.train import TrainingOptions, train

logger = logging.getLogger(__name__)

SHADOW_TAGS = ("requests", "drift_events")  # round tags a challenger in shadow keeps


@dataclass(frozen=True)
class RoundResult:
    version: RegisteredVersion
    promoted: bool
    reason: str
    champion_metrics: dict[str, float] | None
    report_dir: Path
    shadowing: bool = False  # won on the holdout, put in shadow (policy ``shadow``)
    champion_version: str | None = None  # the champion serving once the round ended


def options_from(settings: TrainerSettings, **overrides: object) -> TrainingOptions:
    bands = DecisionBands.from_costs(
        settings.cost_wrong_approval, settings.cost_wrong_decline, settings.cost_review
    )
    values: dict[str, object] = {
        "seed": settings.seed,
        "bands": bands,
        "search_candidates": settings.search_candidates,
        "candidates": tuple(settings.candidates),
        "min_rows": settings.min_rows,
        **overrides,
    }
    return TrainingOptions(**values)  # type: ignore[arg-type]


def signed(kafka: KafkaSettings, update: ModelUpdate) -> ModelUpdate:
    """``update`` signed with the settings' ``model_update_key`` (unchanged without a key)."""
    key = kafka.model_update_key
    return sign_update(update, key.get_secret_value() if key else None)


def publish(kafka: KafkaSettings, update: ModelUpdate) -> None:
    """Write the new champion, signed, to the compacted loan.model-updates topic, keyed by
    model name."""
    with IdempotentProducer(kafka) as producer:
        producer.produce(
            kafka.topic(MODEL_UPDATES), update.model_name.encode(), signed(kafka, update).to_json()
        )


def broker_reachable(kafka: KafkaSettings, timeout_s: float) -> bool:
    """Whether a broker answers a metadata request within ``timeout_s``, without librdkafka
    printing a connection error per retry meanwhile (no broker is an answer here, not an error)."""
    quiet: dict[str, Any] = {**kafka.confluent(), "log_level": 0, "error_cb": lambda err: None}
    try:
        AdminClient(quiet).list_topics(timeout=timeout_s)
    except KafkaException:
        return False
    return True


def announce(kafka: KafkaSettings, update: ModelUpdate, timeout_s: float) -> bool:
    """Publish ``update`` when a broker answers within ``timeout_s``; False when none does (the
    champion is in the registry all the same: the scorers take it when they next look)."""
    began = time.monotonic()
    if not broker_reachable(kafka, timeout_s):
        logger.warning(
            "no Kafka broker answered at %s within %.0f s: ModelUpdate for %s v%s not published",
            kafka.bootstrap_servers,
            time.monotonic() - began,
            update.model_name,
            update.version,
        )
        return False
    publish(kafka, update)
    return True


def publish_result(kafka: KafkaSettings, result: RetrainResult) -> None:
    """Write how a round (or a verdict) ended to loan.retrain-results, keyed by model name."""
    with IdempotentProducer(kafka) as producer:
        producer.produce(kafka.topic(RETRAIN_RESULTS), result.model_name.encode(), result.to_json())


def round_outcome(result: RoundResult) -> RetrainOutcome:
    if result.shadowing:
        return RetrainOutcome.SHADOWING
    return RetrainOutcome.PROMOTED if result.promoted else RetrainOutcome.KEPT_CHAMPION


def training_round(
    frame: pd.DataFrame,
    spec: FeatureSpec,
    settings: TrainerSettings,
    registry: Registry,
    options: TrainingOptions,
    publisher: Callable[[ModelUpdate], None] | None,
    tags: dict[str, str] | None = None,
    report_dir: Path | None = None,
    on_step: Callable[[str], None] = lambda s: None,
) -> RoundResult:
    registry.champion()  # a registry that cannot tell stops the round here, before training
    split = time_split(frame, spec)
    result = train(split, spec, options, on_step)
    on_step("registering in MLflow")
    version = registry.log(result, spec, split.train, tags or {})
    y_test = split.test[spec.target_column].to_numpy()
    champion = registry.champion()  # again: it may have changed while this round trained
    champion_metrics = None
    if champion is not None:
        on_step(f"scoring champion v{champion.version} on the same holdout")
        loaded = registry.load(champion.version)
        champion_metrics = classification_metrics(
            y_test, repaid_probability(loaded.model, split.test[loaded.feature_names])
        )
    decision = decide(
        result.calibrated,
        champion_metrics,
        settings.primary_metric,
        settings.promotion_margin,
        settings.calibration_tolerance,
    )
    out = report_dir or Path(tempfile.mkdtemp(prefix="loanstream-report-"))
    write_report(
        result,
        y_test,
        out,
        data_fingerprint(split.train, spec),
        version.name,
        version.version,
        ("Promoted: " if decision.promote else "Not promoted: ") + decision.reason,
    )
    registry.attach_report(version.run_id, out)
    shadowing = decision.promote and champion is not None and settings.promotion_policy == "shadow"
    promoted = decision.promote and not shadowing
    registry.tag_version(
        version.version,
        "shadow_reason"
        if shadowing
        else "promotion_reason"
        if decision.promote
        else "rejection_reason",
        decision.reason,
    )
    if shadowing:
        registry.shadow(
            version.version, {k: v for k, v in (tags or {}).items() if k in SHADOW_TAGS}
        )
    elif promoted:
        registry.promote(version.version, decision.reason)
        if publisher is not None:
            publisher(version.update())
    logger.info(
        "model %s v%s %s: %s",
        version.name,
        version.version,
        "in shadow" if shadowing else "promoted" if promoted else "not promoted",
        decision.reason,
    )
    serving = version.version if promoted else champion.version if champion else None
    return RoundResult(
        version, promoted, decision.reason, champion_metrics, out, shadowing, serving
    )
