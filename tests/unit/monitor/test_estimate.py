"""The label-free (CBPE) estimate: exact expectations, Stats with soft labels, and the issue's
acceptance test on a real calibrated model, where concept drift is the one thing it misses."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from loanstream.models import repaid_probability
from monitor.estimate import expected_auc, expected_metrics
from monitor.performance import PerformanceTracker, Stats, WindowResult
from producer.outcomes import OUTCOME_TIME
from tests.trainer_data import history
from trainer.data import labelled_frame, time_split
from trainer.train import TrainingOptions, TrainingResult, train


def test_expectations_are_exact_over_every_labelling() -> None:
    p = np.array([0.9, 0.6, 0.6, 0.2])  # with a tie
    accuracy = brier = loss = concordant = pairs = 0.0
    for labels in itertools.product((0, 1), repeat=len(p)):
        y = np.array(labels)
        chance = float(np.prod(np.where(y == 1, p, 1 - p)))
        accuracy += chance * np.mean((p >= 0.5) == y)
        brier += chance * np.mean((p - y) ** 2)
        loss += chance * np.mean(-y * np.log(p) - (1 - y) * np.log(1 - p))
        for i, j in itertools.permutations(range(len(p)), 2):
            if y[i] == 1 and y[j] == 0:
                pairs += chance
                concordant += chance * (1.0 if p[i] > p[j] else 0.5 if p[i] == p[j] else 0.0)
    m = expected_metrics(p, approved=np.array([True, False, False, False]))
    assert m.accuracy == pytest.approx(accuracy, abs=1e-12)
    assert m.brier == pytest.approx(brier, abs=1e-12)
    assert m.log_loss == pytest.approx(loss, abs=1e-12)
    assert m.auc == pytest.approx(concordant / pairs, abs=1e-12)
    assert (m.count, m.approval_rate, m.ece) == (4, 0.25, 0.0)
    assert [(b.lower, b.count) for b in m.calibration] == [(0.2, 1), (0.6, 2), (0.9, 1)]


def test_expected_auc_without_any_pair() -> None:
    assert expected_auc(np.array([1.0, 1.0])) is None
    assert expected_auc(np.array([0.0, 0.0, 0.0])) is None
    assert expected_auc(np.array([1.0, 0.0])) == 1.0


def test_bad_batches_are_refused() -> None:
    with pytest.raises(ValueError, match="non-empty 1-d array"):
        expected_metrics(np.array([]))
    with pytest.raises(ValueError, match="within"):
        expected_metrics(np.array([0.5, np.nan]))
    with pytest.raises(ValueError, match=r"approved must have shape \(2,\), got \(3,\)"):
        expected_metrics(np.array([0.5, 0.6]), approved=np.ones(3, dtype=bool))


def test_stats_with_soft_labels_match_the_batch_estimate() -> None:
    rng = np.random.default_rng(12)
    p = rng.beta(5, 2, 20_000)
    approved = p >= 0.8
    stats = Stats()
    for pi, ai in zip(p.tolist(), approved.tolist(), strict=True):
        stats.add(pi, pi, ai)
    streamed, batch = stats.metrics(), expected_metrics(p, approved)
    for name in ("accuracy", "brier", "log_loss", "default_rate", "approval_rate"):
        assert getattr(streamed, name) == pytest.approx(getattr(batch, name), abs=1e-9), name
    assert streamed.ece == pytest.approx(0.0, abs=1e-12)
    assert streamed.auc is not None and batch.auc is not None
    assert abs(streamed.auc - batch.auc) < 0.005


@pytest.fixture(scope="module")
def model() -> TrainingResult:
    """A logistic model calibrated on a large split, so it is calibrated to within a point."""
    frame, spec = history(20_000, seed=2)
    good, _ = labelled_frame(frame, spec)
    options = TrainingOptions(seed=2, candidates=("logistic",), search_candidates=2)
    return train(time_split(good, spec, test=0.1, validate=0.5), spec, options)


def labelled_windows(model: TrainingResult, scenario: str) -> list[WindowResult]:
    """Tumbling windows of 5,000 labelled events of the "all" scope, labels in outcome order."""
    frame, spec = history(60_000, seed=11, scenario=scenario)
    frame = frame[frame[OUTCOME_TIME].notna()].sort_values(OUTCOME_TIME, kind="stable")
    p = repaid_probability(model.model, frame[spec.feature_names])
    tracker = PerformanceTracker(count_size=5_000, count_step=5_000)
    closed = []
    for pi, yi, at, purpose in zip(
        p.tolist(),
        frame[spec.target_column].tolist(),
        (frame[spec.event_time_column].astype("int64") / 1e9).tolist(),  # epoch seconds
        frame["loan_purpose"],
        strict=True,
    ):
        results = tracker.update(pi, yi, pi >= model.bands.approve_from, at, "1", purpose)
        closed += [r for r in results if r.scope == "all"]
    return closed


def gaps(windows: list[WindowResult]) -> list[float]:
    """Estimated minus realized accuracy, per window."""
    return [r.estimate.accuracy - r.metrics.accuracy for r in windows if r.metrics and r.estimate]


def test_estimate_tracks_realized_accuracy_on_a_stable_stream(model: TrainingResult) -> None:
    windows = labelled_windows(model, "stable")
    assert len(gaps(windows)) == len(windows) == 10
    assert max(abs(g) for g in gaps(windows)) <= 0.02


def test_concept_drift_is_what_the_estimate_cannot_see(model: TrainingResult) -> None:
    drifted = gaps(labelled_windows(model, "concept-drift"))
    assert len(drifted) == 10
    assert abs(drifted[0]) <= 0.02  # the first labels are of applications before the drift
    assert next(i for i, g in enumerate(drifted) if g > 0.05) == 2
    assert min(drifted[3:]) > 0.10  # realized accuracy 10+ points below the estimate
