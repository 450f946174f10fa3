"""One training round: train, register, compare with the champion on the same newest holdout,
promote or not (and say why), and publish a ModelUpdate on promotion."""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from loanstream.config import KafkaSettings
from loanstream.contracts import ModelUpdate
from loanstream.kafka.clients import IdempotentProducer
from loanstream.models import DecisionBands, repaid_probability
from loanstream.spec import FeatureSpec
from loanstream.topics import MODEL_UPDATES
from trainer.data import time_split
from trainer.evaluate import classification_metrics
from trainer.promotion import decide
from trainer.registry import RegisteredVersion, Registry, data_fingerprint
from trainer.report import write_report
from trainer.settings import TrainerSettings
from trainer.train import TrainingOptions, train

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RoundResult:
    version: RegisteredVersion
    promoted: bool
    reason: str
    champion_metrics: dict[str, float] | None
    report_dir: Path


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


def publish(kafka: KafkaSettings, update: ModelUpdate) -> None:
    """Write the new champion to the compacted loan.model-updates topic, keyed by model name."""
    with IdempotentProducer(kafka) as producer:
        producer.produce(kafka.topic(MODEL_UPDATES), update.model_name.encode(), update.to_json())


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
    split = time_split(frame, spec)
    result = train(split, spec, options, on_step)
    on_step("registering in MLflow")
    version = registry.log(result, spec, split.train, tags or {})
    y_test = split.test[spec.target_column].to_numpy()
    champion = registry.champion()
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
    registry.tag_version(
        version.version,
        "promotion_reason" if decision.promote else "rejection_reason",
        decision.reason,
    )
    if decision.promote:
        registry.promote(version.version, decision.reason)
        if publisher is not None:
            publisher(version.update())
    logger.info(
        "model %s v%s %s: %s",
        version.name,
        version.version,
        "promoted" if decision.promote else "kept as challenger",
        decision.reason,
    )
    return RoundResult(version, decision.promote, decision.reason, champion_metrics, out)
