"""Backtests on the event-time engine, for the command line and for notebooks::

    from loop import run_backtest
    result = run_backtest(pd.read_parquet("history.parquet"), load_spec())
    result.summary()["loop"]["first_served"]  # {'position': ..., 'event_time': ...}

(``tests/unit/loop/test_engine.py`` runs it on seeded histories; a doctest would train models.)

The oldest ``train_fraction`` of the history trains the first champion (a model built before
the backtest's period, into the run's own MLflow store); the rest is replayed in event time.
"""

from __future__ import annotations

import re
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pandas as pd

from loanstream.errors import LoanStreamError
from loanstream.retraining import Trigger
from loanstream.spec import FeatureSpec
from loop.engine import EventTimeLoop, LoopOptions, Periodic, Record, decision_costs, moment
from loop.models import ModelStore
from loop.results import Baseline, predictions_frame, summarize
from loop.timeline import LabelSource, Timeline, build_timeline
from monitor.settings import MonitorSettings
from scorer.core import score_batch
from trainer.settings import TrainerSettings

STORE_FILES = ("mlflow.db", "mlartifacts")


def parse_duration(text: str) -> timedelta:
    """``30d``, ``12h``, ``90m``, ``3600s`` (or plain seconds) as a timedelta.

    >>> parse_duration("1.5d")
    datetime.timedelta(days=1, seconds=43200)
    """
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([smhd]?)", text.strip())
    if not match:
        raise LoanStreamError(f"a duration must look like 30d, 12h, 90m or 3600s, got {text!r}")
    unit = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2)]
    return timedelta(seconds=float(match.group(1)) * unit)


def parse_policy(text: str, window: timedelta) -> tuple[Trigger, Periodic | None]:
    """A retrain trigger: ``any``, ``performance``, ``never`` or ``every:<duration>``.

    >>> parse_policy("every:30d", timedelta(days=90))
    (<Trigger.NEVER: 'never'>, Periodic(every=datetime.timedelta(days=30), window=...))
    """
    if text.startswith("every:"):
        return Trigger.NEVER, Periodic(parse_duration(text.removeprefix("every:")), window)
    try:
        return Trigger(text), None
    except ValueError:
        raise LoanStreamError(
            f"a policy is any, performance, never or every:<duration> (e.g. every:30d), "
            f"got {text!r}"
        ) from None


@dataclass(frozen=True)
class BacktestOptions:
    """Everything that decides a backtest's result (and so goes into its summary)."""

    train_fraction: float = 0.2
    labels: LabelSource = field(default_factory=LabelSource)
    loop: LoopOptions = field(default_factory=LoopOptions)
    policy: str = "any"
    candidates: tuple[str, ...] = ("logistic", "hgb")
    min_rows: int = 2000
    search_candidates: int = 6
    seed: int = 0

    def described(self) -> dict[str, Any]:
        loop = self.loop
        return {
            "train_fraction": self.train_fraction,
            "labels": self.labels.describe(),
            "selection": loop.selection.manifest(),
            "policy": self.policy,
            "retry_attempts": loop.retry.max_attempts,
            "training_latency": str(loop.training_latency),
            "deploy_latency": str(loop.deploy_latency),
            "batch_size": loop.batch_size,
            "drill_losing_rounds": loop.drill_losing_rounds,
            "candidates": list(self.candidates),
            "min_rows": self.min_rows,
            "search_candidates": self.search_candidates,
            "seed": self.seed,
        }


@dataclass
class BacktestResult:
    """A backtest's tables and summary; ``to_html`` writes the report a person reads."""

    data: dict[str, Any]
    predictions: pd.DataFrame
    labelled: pd.DataFrame
    drift_events: pd.DataFrame
    retrain_attempts: pd.DataFrame
    model_versions: pd.DataFrame
    # wall-clock seconds by part (engine, training and loading, detector calibration): for
    # benchmarks, never in the summary
    timings: dict[str, float] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        return self.data

    def to_json(self) -> bytes:
        return orjson.dumps(self.data, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n"

    def to_html(self, path: Path) -> Path:
        from loop.report import write_html

        return write_html(self, Path(path))

    def save(self, directory: Path) -> Path:
        """summary.json, drift_events.json, predictions.parquet and the HTML report."""
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "summary.json").write_bytes(self.to_json())
        (directory / "drift_events.json").write_bytes(
            orjson.dumps(
                self.data["detections"]["events"], option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS
            )
            + b"\n"
        )
        self.predictions.to_parquet(directory / "predictions.parquet", index=False)
        return self.to_html(directory / "backtest.html")


def trainer_settings(options: BacktestOptions, workdir: Path) -> TrainerSettings:
    return TrainerSettings(
        tracking_uri=f"sqlite:///{workdir / 'mlflow.db'}",
        data_dir=workdir,
        candidates=options.candidates,
        min_rows=options.min_rows,
        search_candidates=options.search_candidates,
        seed=options.seed,
        retry_attempts=options.loop.retry.max_attempts,
    )


def store_with_champion(
    timeline: Timeline,
    spec: FeatureSpec,
    options: BacktestOptions,
    workdir: Path,
    on_step: Callable[[str], None],
) -> ModelStore:
    """The MLflow store in ``workdir``, with the first champion trained if it has none yet."""
    store = ModelStore(trainer_settings(options, workdir), spec, workdir / "model-cards", on_step)
    if store.registry.champion() is None:
        on_step("training the first champion")
        train_first_champion(timeline, spec, store)
    return store


def train_first_champion(timeline: Timeline, spec: FeatureSpec, store: ModelStore) -> None:
    """v1, from the labelled rows of the training part."""
    train = timeline.train
    labels = pd.to_numeric(train[spec.target_column], errors="coerce")
    frame = train[labels.isin([0, 1])][
        [spec.id_column, spec.event_time_column, *spec.feature_names, spec.target_column]
    ].copy()
    frame[spec.target_column] = labels[labels.isin([0, 1])].astype(int)
    result = store.train(frame.reset_index(drop=True), {"source": "backtest: first champion"})
    if not result.promoted:  # pragma: no cover - a fresh store has no champion to lose to
        raise LoanStreamError(f"the first champion was not promoted: {result.reason}")


def run_backtest(
    frame: pd.DataFrame,
    spec: FeatureSpec,
    options: BacktestOptions | None = None,
    manifest: Mapping[str, Any] | None = None,
    workdir: Path | None = None,
    on_progress: Callable[[int, int, int], None] = lambda done, total, ms: None,
    on_step: Callable[[str], None] = lambda s: None,
    timeline: Timeline | None = None,
) -> BacktestResult:
    """Replay ``frame`` (a labelled history) through the loop in event time.

    ``workdir`` holds the run's MLflow store and the model cards (a temporary folder if not
    given); ``on_progress(applications done, of, event time ms)`` is called after each batch. A
    workdir that already holds a store with a champion starts from it (see ``run_policies``).
    """
    options = options or BacktestOptions()
    workdir = Path(workdir or tempfile.mkdtemp(prefix="loanstream-backtest-"))
    workdir.mkdir(parents=True, exist_ok=True)
    timeline = timeline or build_timeline(frame, spec, options.train_fraction, options.labels)
    store = store_with_champion(timeline, spec, options, workdir, on_step)
    trigger, periodic = parse_policy(
        options.policy, timedelta(days=store.settings.recent_window_days)
    )
    loop_options = replace(options.loop, periodic=periodic)
    monitor = MonitorSettings(data_dir=workdir, retrain_trigger=trigger)
    engine = EventTimeLoop(
        timeline,
        spec,
        store,
        monitor.pipeline(),
        timedelta(days=monitor.label_ttl_days),
        loop_options,
        on_progress,
    )
    began = time.perf_counter()
    trained_before = store.seconds
    record = engine.run()
    engine_s = time.perf_counter() - began
    baseline = first_champion(timeline, spec, record, engine.models[record.versions[0]])
    predictions = predictions_frame(
        timeline, record, baseline, spec.id_column, spec.target_column
    )
    data = summarize(
        timeline, record, predictions, baseline, manifest or {}, options.described()
    )
    return BacktestResult(
        data,
        predictions,
        labelled_frame(predictions, record),
        pd.json_normalize(data["detections"]["events"]),
        pd.json_normalize(data["retraining"]["attempts"]),
        versions_frame(data, predictions),
        {
            "engine": engine_s,
            "training_and_loading": store.seconds - trained_before,
            "calibration": engine.calibration_s,
        },
    )


def first_champion(
    timeline: Timeline, spec: FeatureSpec, record: Record, model: Any
) -> Baseline:
    """The first champion's probability and decision on every replayed application: what it
    scored itself, and the rest scored now by the same code."""
    probability = record.probability.copy()
    decision = record.decision.copy()
    others = np.flatnonzero(record.version_of != 0)
    if others.size:
        at = moment(int(timeline.app_ms[0]))
        breaks = np.flatnonzero(np.diff(others) != 1) + 1
        for run in np.split(others, breaks):  # contiguous stretches, scored 5,000 at a time
            for start in range(int(run[0]), int(run[-1]) + 1, 5000):
                end = min(start + 5000, int(run[-1]) + 1)
                apps = timeline.applications(start, end, spec)
                scored = score_batch(model, apps, at, at, False)
                probability[start:end] = [p.probability for p in scored]
                decision[start:end] = [p.decision.value for p in scored]
    return Baseline(probability, decision, decision_costs(model))


def labelled_frame(predictions: pd.DataFrame, record: Record) -> pd.DataFrame:
    """The labelled examples the loop joined, in the order their labels became known."""
    rows = predictions.iloc[record.labelled_position].reset_index(drop=True)
    rows.insert(1, "known_at", pd.to_datetime(record.labelled_ms, unit="ms", utc=True))
    return rows


def versions_frame(data: Mapping[str, Any], predictions: pd.DataFrame) -> pd.DataFrame:
    """One row per model version that served or was trained."""
    served = predictions["model_version"].value_counts()
    rows = []
    first = predictions["model_version"].iloc[0] if len(predictions) else None
    if first is not None:
        rows.append({"version": first, "origin": "first champion", "scored": int(served[first])})
    for attempt in data["retraining"]["attempts"]:
        if attempt["version"] is not None:
            rows.append(
                {
                    "version": attempt["version"],
                    "origin": f"attempt {attempt['attempt']}: {attempt['outcome']}",
                    "scored": int(served.get(attempt["version"], 0)),
                }
            )
    return pd.DataFrame(rows)


def run_policies(
    frame: pd.DataFrame,
    spec: FeatureSpec,
    policies: list[str],
    options: BacktestOptions,
    manifest: Mapping[str, Any] | None,
    workdir: Path,
    on_progress: Callable[[str, int, int, int], None] = lambda policy, done, total, ms: None,
    on_step: Callable[[str], None] = lambda s: None,
) -> dict[str, BacktestResult]:
    """The same history under several retrain policies, each from the same first champion
    (trained once; each policy runs on its own copy of that store)."""
    timeline = build_timeline(frame, spec, options.train_fraction, options.labels)
    base = workdir / "first-champion"
    base.mkdir(parents=True, exist_ok=True)
    store_with_champion(timeline, spec, options, base, on_step)
    results = {}
    for policy in policies:
        parse_policy(policy, timedelta(days=1))  # refuse a bad name before any run
    for policy in policies:
        own = workdir / re.sub(r"[^A-Za-z0-9_-]", "_", policy)
        own.mkdir(parents=True, exist_ok=True)
        for name in STORE_FILES:
            source = base / name
            if source.is_dir():
                shutil.copytree(source, own / name, dirs_exist_ok=True)
            elif source.exists():
                shutil.copy2(source, own / name)
        results[policy] = run_backtest(
            frame,
            spec,
            replace(options, policy=policy),
            manifest,
            own,
            lambda done, total, ms, p=policy: on_progress(p, done, total, ms),  # type: ignore[misc]
            on_step,
            timeline,
        )
    return results


def policy_table(results: Mapping[str, BacktestResult]) -> list[dict[str, Any]]:
    """One row per policy: detection, stale rows, AUC and cost after the onset, retrains."""
    rows = []
    for policy, result in results.items():
        s = result.data
        loop = s["loop"]
        after = s["with_vs_without_retraining"].get("after_drift", {})
        served = after.get("with_retraining", {})
        rows.append(
            {
                "policy": policy,
                "detected": (loop["confirmed"] or {}).get("position"),
                "detected_by": (loop["detected_by"] or {}).get("signal"),
                "stale_rows": s["stale_scoring"]["from_onset"],
                "auc_after_onset": served.get("auc"),
                "cost_after_onset": served.get("cost_per_application"),
                "retrains": len(s["retraining"]["attempts"]),
                "promotions": s["retraining"]["promotions"],
            }
        )
    return rows


__all__ = ["BacktestOptions", "BacktestResult", "run_backtest", "run_policies"]
