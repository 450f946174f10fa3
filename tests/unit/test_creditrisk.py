"""Gini, KS and the PSI bands, checked against scikit-learn and SciPy on seeded scores."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import ks_2samp
from sklearn.metrics import roc_auc_score

from loanstream.creditrisk import ACT, WATCH, gini, ks_from_histograms, ks_statistic, psi_band
from loop.measures import risk_measures
from monitor import datadrift
from monitor.performance import BINS, Stats
from trainer.evaluate import classification_metrics


def scores(seed: int, n: int = 20_000) -> tuple[np.ndarray, np.ndarray]:
    """A 5% default rate, defaulters scored lower on average, with ties (rounded scores)."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) >= 0.05).astype(int)
    p = np.clip(rng.beta(5, 2, n) - 0.25 * (y == 0), 0.0, 1.0).round(3)
    return y, p


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_ks_is_the_two_sample_ks_statistic_and_gini_is_two_auc_minus_one(seed: int) -> None:
    y, p = scores(seed)
    expected = ks_2samp(p[y == 1], p[y == 0]).statistic
    assert ks_statistic(y, p) == pytest.approx(expected, abs=1e-12)
    auc = roc_auc_score(y, p)
    assert gini(auc) == pytest.approx(2 * auc - 1, abs=1e-15)
    metrics = classification_metrics(y, p)
    assert (metrics["gini"], metrics["ks"]) == (gini(auc), ks_statistic(y, p))
    measured = risk_measures(y, p, np.full(len(y), "approve"), np.ones((len(y), 3)))
    assert measured["ks"] == pytest.approx(expected, abs=1e-12)
    assert measured["gini"] == pytest.approx(2 * auc - 1, abs=1e-12)


def test_the_monitors_histogram_ks_is_within_one_bin_of_the_exact_one() -> None:
    y, p = scores(4)
    stats = Stats()
    for pi, yi in zip(p.tolist(), y.tolist(), strict=True):
        stats.add(pi, yi, approved=pi >= 0.5)
    m = stats.metrics()
    exact = ks_2samp(p[y == 1], p[y == 0]).statistic
    assert exact - 1.0 / BINS * 5 < m.ks <= exact + 1e-12  # seen at the bin edges only
    assert m.ks == pytest.approx(exact, abs=0.005)
    assert m.gini == pytest.approx(2 * roc_auc_score(y, p) - 1, abs=2e-3)


def test_ks_needs_both_classes_and_refuses_mismatched_arrays() -> None:
    assert ks_statistic(np.ones(5), np.linspace(0, 1, 5)) is None
    assert ks_from_histograms(np.ones(3), np.zeros(3)) is None
    assert gini(None) is None
    with pytest.raises(ValueError, match="one length"):
        ks_statistic(np.ones(3), np.ones(4))


def test_one_definition_of_the_bands_serves_the_monitor_and_the_alerts() -> None:
    assert (WATCH, ACT) == (0.1, 0.25)
    values = [0.0, 0.0999, 0.1, 0.2499, 0.25, 3.0]
    assert [psi_band(v) for v in values] == ["stable", "stable", "watch", "watch", "act", "act"]
    assert datadrift.band is psi_band
    from loop import telling

    assert telling.psi_band is psi_band
