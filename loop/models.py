"""The event-time engine's side of the MLflow registry: the trainer's own training round and
champion/challenger rule on a run's store, and models loaded as the scorer loads them.

Everything goes through the registry, as in the services: the engine serves what the registry
names champion, verified by the sha256 the registry recorded, compiled by the scorer's code.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from loanstream.models import LoadedModel
from loanstream.spec import FeatureSpec
from scorer.watcher import load_compiled
from trainer.pipeline import RoundResult, options_from, training_round
from trainer.registry import Registry
from trainer.settings import TrainerSettings

logger = logging.getLogger(__name__)


class ModelStore:
    """Trains, registers and loads models in one MLflow store (the run's own by default)."""

    def __init__(
        self,
        settings: TrainerSettings,
        spec: FeatureSpec,
        report_root: Path,
        on_step: Callable[[str], None] = lambda s: None,
    ) -> None:
        self.settings = settings
        self.spec = spec
        self.registry = Registry(settings)
        self.report_root = report_root
        self.on_step = on_step
        self.rounds = 0
        self.seconds = 0.0  # spent training and loading (wall clock, for benchmarks only)

    def train(
        self, frame: pd.DataFrame, tags: dict[str, str], drill: bool = False
    ) -> RoundResult:
        """The trainer's training round on ``frame``: register, compare, promote or not
        (``drill``: on shuffled labels, a challenger meant to lose)."""
        self.rounds += 1
        began = time.perf_counter()
        result = training_round(
            frame,
            self.spec,
            self.settings,
            self.registry,
            options_from(self.settings, shuffle_labels=drill),
            None,  # the engine swaps the model itself, in event time
            tags=tags,
            report_dir=self.report_root / f"round-{self.rounds}",
            on_step=self.on_step,
        )
        self.seconds += time.perf_counter() - began
        return result

    def load(self, version: str | None = None) -> LoadedModel:
        """``version`` (default: the champion), verified and compiled as the scorer does."""
        began = time.perf_counter()
        chosen = self.registry.version(version) if version else self.registry.champion()
        if chosen is None:
            raise LookupError(f"model {self.settings.model_name} has no champion")
        model = load_compiled(
            chosen.uri,
            self.settings.resolved_tracking_uri(),
            chosen.sha256,
            chosen.name,
            chosen.version,
        )
        self.seconds += time.perf_counter() - began
        return model
