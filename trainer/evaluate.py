"""Metrics of probabilistic classifiers, calibration error, and cost-based decision bands.

Throughout, ``p`` is the probability of on-time repayment and ``y`` is 1 for repaid.

>>> bands = DecisionBands.from_costs(wrong_approval=5.0, wrong_decline=1.0, review=0.5)
>>> bands.decline_below, bands.approve_from
(0.5, 0.9)
>>> [bands.decide(p) for p in (0.3, 0.7, 0.95)]
['decline', 'review', 'approve']
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    brier_score_loss,
    f1_score,
    log_loss,
    roc_auc_score,
)

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
    clipped = np.clip(p, 1e-6, 1 - 1e-6)
    predicted = (p >= 0.5).astype(int)
    return {
        "auc": float(roc_auc_score(y, p)),
        "accuracy": float(accuracy_score(y, predicted)),
        "f1": float(f1_score(y, predicted)),
        "log_loss": float(log_loss(y, clipped, labels=[0, 1])),
        "brier": float(brier_score_loss(y, p)),
        "ece": expected_calibration_error(y, p),
        "default_rate": float(1.0 - y.mean()),
        "rows": float(len(y)),
    }


@dataclass(frozen=True)
class DecisionBands:
    """Decline below ``decline_below``, approve from ``approve_from``, review in between.

    Derived from costs: approving a defaulter costs ``wrong_approval``, declining a good payer
    costs ``wrong_decline``, a manual review costs ``review``. Each decision is taken where its
    expected cost is lowest: approve when (1-p)*wrong_approval < review, decline when
    p*wrong_decline < review. If review never pays, the bands meet at the break-even point.
    """

    decline_below: float
    approve_from: float
    wrong_approval: float
    wrong_decline: float
    review: float

    @classmethod
    def from_costs(
        cls, wrong_approval: float, wrong_decline: float, review: float
    ) -> DecisionBands:
        if min(wrong_approval, wrong_decline) <= 0 or review < 0:
            raise ValueError("costs must be positive (review may be 0)")
        low = review / wrong_decline
        high = 1.0 - review / wrong_approval
        if low >= high:  # reviewing is never the cheapest: one threshold
            low = high = wrong_approval / (wrong_approval + wrong_decline)
        return cls(round(low, 6), round(high, 6), wrong_approval, wrong_decline, review)

    def decide(self, p: float) -> str:
        if p >= self.approve_from:
            return "approve"
        return "decline" if p < self.decline_below else "review"

    def decide_many(self, p: np.ndarray) -> np.ndarray:
        return np.where(
            p >= self.approve_from, "approve", np.where(p < self.decline_below, "decline", "review")
        )

    def as_dict(self) -> dict[str, float]:
        return asdict(self)
