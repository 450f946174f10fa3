"""Metrics of probabilistic classifiers and calibration error.

Throughout, ``p`` is the probability of on-time repayment and ``y`` is 1 for repaid. Ranking is
given as a credit-risk team reads it (AUC, Gini = 2 AUC - 1, KS), then probability quality
(log loss, Brier, ECE); accuracy and F1 at 0.5 come last, as on a portfolio with 5% defaults
"repaid" for everyone already scores 0.95.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    brier_score_loss,
    f1_score,
    log_loss,
    roc_auc_score,
)

from loanstream.creditrisk import gini, ks_statistic

PRIMARY_METRICS = {"auc": True, "log_loss": False, "brier": False}  # name -> higher is better


def expected_calibration_error(y: np.ndarray, p: np.ndarray, bins: int = 15) -> float:
    """Mean |observed rate - mean probability| over equal-width bins, weighted by bin size."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(p, edges[1:-1]), 0, bins - 1)
    total = 0.0
    for b in range(bins):
        mask = which == b
        if mask.any():
            total += mask.sum() * abs(y[mask].mean() - p[mask].mean())
    return float(total / len(y))


def reliability(y: np.ndarray, p: np.ndarray, bins: int = 10) -> list[dict[str, float]]:
    """Per probability bin: mean prediction, observed rate and count (for the diagram)."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(p, edges[1:-1]), 0, bins - 1)
    return [
        {
            "low": float(edges[b]),
            "high": float(edges[b + 1]),
            "mean_probability": float(p[which == b].mean()),
            "observed": float(y[which == b].mean()),
            "count": int((which == b).sum()),
        }
        for b in range(bins)
        if (which == b).any()
    ]


def classification_metrics(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    """Ranking, probability quality, then accuracy and F1 at 0.5, on labels with both classes.

    >>> m = classification_metrics(np.array([1, 1, 1, 0]), np.array([0.9, 0.8, 0.4, 0.3]))
    >>> m["auc"], m["gini"], m["ks"], m["accuracy"]
    (1.0, 1.0, 1.0, 0.75)
    """
    clipped = np.clip(p, 1e-6, 1 - 1e-6)
    predicted = (p >= 0.5).astype(int)
    auc = float(roc_auc_score(y, p))
    return {
        "auc": auc,
        "gini": float(gini(auc) or 0.0),
        "ks": float(ks_statistic(y, p) or 0.0),
        "accuracy": float(accuracy_score(y, predicted)),
        "f1": float(f1_score(y, predicted)),
        "log_loss": float(log_loss(y, clipped, labels=[0, 1])),
        "brier": float(brier_score_loss(y, p)),
        "ece": expected_calibration_error(y, p),
        "default_rate": float(1.0 - y.mean()),
        "rows": float(len(y)),
    }
