"""Model selection with a budget, calibration, and evaluation: pure, seeded, no MLflow here.

For each candidate, a successive-halving search over its space with time-ordered folds picks
hyperparameters on the training split; the fitted model is calibrated with both sigmoid and
isotonic on the calibration split, and the method with the lower Brier score (then ECE) on the
validation split is kept. The candidate with the best validation log loss wins. Everything is
reported on the test split, the newest data, uncalibrated and calibrated.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from sklearn.calibration import CalibratedClassifierCV
from sklearn.experimental import enable_halving_search_cv  # noqa: F401
from sklearn.frozen import FrozenEstimator
from sklearn.inspection import permutation_importance
from sklearn.model_selection import HalvingRandomSearchCV, TimeSeriesSplit

from loanstream.errors import LoanStreamError
from loanstream.models import DecisionBands, repaid_probability
from loanstream.spec import FeatureSpec
from trainer.candidates import candidates
from trainer.data import Split
from trainer.evaluate import classification_metrics
from trainer.reference import reference_profile

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainingOptions:
    seed: int = 0
    candidates: tuple[str, ...] = ("logistic", "hgb", "forest")
    search_candidates: int = 6  # hyperparameter draws per model family (halving budget)
    min_rows: int = 2000
    bands: DecisionBands = field(default_factory=lambda: DecisionBands.from_costs(5.0, 1.0, 0.5))
    shuffle_labels: bool = False  # deliberately worse challengers, for tests and drills


@dataclass
class CandidateResult:
    name: str
    params: dict[str, Any]
    method: str
    validation: dict[str, float]
    seconds: float


@dataclass
class TrainingResult:
    model: Any  # the calibrated classifier; predict_proba(frame)[:, 1] = P(repaid)
    name: str
    params: dict[str, Any]
    calibration: str
    uncalibrated: dict[str, float]
    calibrated: dict[str, float]
    bands: DecisionBands
    reference: dict[str, Any]
    importance: dict[str, float]
    candidates: list[CandidateResult]
    test_frame: pd.DataFrame
    test_probability: np.ndarray
    test_uncalibrated: np.ndarray


def calibrate_best(
    fitted: Any, x_cal: pd.DataFrame, y_cal: np.ndarray, x_val: pd.DataFrame, y_val: np.ndarray
) -> tuple[str, dict[str, float], CalibratedClassifierCV]:
    """``fitted`` calibrated with sigmoid and with isotonic on the calibration rows; the method
    with the lower Brier score on the validation rows, then the lower ECE, is kept."""
    best: tuple[str, dict[str, float], CalibratedClassifierCV] | None = None
    for method in ("sigmoid", "isotonic"):
        calibrated = CalibratedClassifierCV(FrozenEstimator(fitted), method=method)
        calibrated.fit(x_cal, y_cal)
        scores = classification_metrics(y_val, repaid_probability(calibrated, x_val))
        if best is None or (scores["brier"], scores["ece"]) < (best[1]["brier"], best[1]["ece"]):
            best = (method, scores, calibrated)
    assert best is not None
    return best


def train(
    split: Split,
    spec: FeatureSpec,
    options: TrainingOptions,
    on_step: Callable[[str], None] = lambda s: None,
) -> TrainingResult:
    if len(split.train) < options.min_rows:
        raise LoanStreamError(
            f"training needs at least {options.min_rows} labelled rows, got {len(split.train)}"
        )
    x = spec.feature_names
    y_train = split.train[spec.target_column].to_numpy()
    if options.shuffle_labels:
        y_train = np.random.default_rng(options.seed).permutation(y_train)
    y_cal = split.calibrate[spec.target_column].to_numpy()
    y_val = split.validate[spec.target_column].to_numpy()
    results: list[tuple[CandidateResult, Any, Any]] = []
    for candidate in candidates(spec, options.seed):
        if candidate.name not in options.candidates:
            continue
        began = time.monotonic()
        on_step(f"searching {candidate.name}")
        search = HalvingRandomSearchCV(
            candidate.pipeline,
            candidate.space,
            n_candidates=options.search_candidates,
            cv=TimeSeriesSplit(n_splits=3),
            scoring="neg_log_loss",
            factor=3,
            # never more than there is: below 1,000 rows the search is one full-data round
            min_resources=min(len(split.train), max(1000, len(split.train) // 9)),
            random_state=options.seed,
            n_jobs=1,
            error_score="raise",
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            search.fit(split.train[x], y_train)
        fitted = search.best_estimator_
        on_step(f"calibrating {candidate.name}")
        method, scores, calibrated = calibrate_best(
            fitted, split.calibrate[x], y_cal, split.validate[x], y_val
        )
        results.append(
            (
                CandidateResult(
                    candidate.name,
                    dict(search.best_params_),
                    method,
                    scores,
                    time.monotonic() - began,
                ),
                fitted,
                calibrated,
            )
        )
        logger.info(
            "%s: validation log loss %.4f AUC %.4f with %s calibration",
            candidate.name,
            scores["log_loss"],
            scores["auc"],
            method,
        )
    if not results:
        raise LoanStreamError(f"no known candidate in {options.candidates}")
    chosen, fitted, model = min(results, key=lambda r: r[0].validation["log_loss"])
    on_step("evaluating on the test split")
    y_test = split.test[spec.target_column].to_numpy()
    p_test = repaid_probability(model, split.test[x])
    p_raw = repaid_probability(fitted, split.test[x])
    sample = split.validate.iloc[: min(len(split.validate), 5000)]
    importance = permutation_importance(
        model,
        sample[x],
        y_val[: len(sample)],
        scoring="neg_log_loss",
        n_repeats=3,
        random_state=options.seed,
    )
    return TrainingResult(
        model=model,
        name=chosen.name,
        params=chosen.params,
        calibration=chosen.method,
        uncalibrated=classification_metrics(y_test, p_raw),
        calibrated=classification_metrics(y_test, p_test),
        bands=options.bands,
        reference=reference_profile(
            split.train, spec, repaid_probability(model, split.train[x].iloc[:20_000])
        ),
        importance=dict(zip(x, importance.importances_mean.tolist(), strict=True)),
        candidates=[r[0] for r in results],
        test_frame=split.test,
        test_probability=p_test,
        test_uncalibrated=p_raw,
    )
