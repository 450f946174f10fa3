"""What a risk team reads off a stretch of scored, labelled applications.

Ranking (AUC, Gini = 2 AUC - 1, KS = the largest gap between the score distributions of good
and bad payers), probability quality (Brier, log loss, ECE), the portfolio (default and approval
rates) and the decisions' cost under the serving model's own decision costs. Accuracy at 0.5 is
one column among them: on a portfolio with 5% defaults, "repaid" for everyone scores 0.95.

>>> y = np.array([1, 1, 1, 0]); p = np.array([0.9, 0.8, 0.6, 0.3])
>>> m = risk_measures(y, p, np.array(["approve", "approve", "review", "decline"]),
...                   np.array([[5.0, 1.0, 0.5]] * 4))
>>> m["auc"], m["gini"], m["ks"], m["approval_rate"], m["cost_per_application"]
(1.0, 1.0, 1.0, 0.5, 0.125)
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_auc_score

from loanstream.creditrisk import gini, ks_statistic
from trainer.evaluate import expected_calibration_error

NAMES = (
    "rows",
    "auc",
    "gini",
    "ks",
    "brier",
    "log_loss",
    "ece",
    "default_rate",
    "approval_rate",
    "cost_per_application",
    "accuracy_at_0_5",
)


def decision_cost(y: np.ndarray, decisions: np.ndarray, costs: np.ndarray) -> np.ndarray:
    """Each decision's cost: approving a defaulter, declining a good payer, or a review.

    ``costs`` holds one row per application: (wrong approval, wrong decline, review).
    """
    approve, decline = decisions == "approve", decisions == "decline"
    review = ~(approve | decline)
    return (
        approve * (y == 0) * costs[:, 0] + decline * (y == 1) * costs[:, 1] + review * costs[:, 2]
    )


def risk_measures(
    y: np.ndarray, p: np.ndarray, decisions: np.ndarray, costs: np.ndarray
) -> dict[str, float | None]:
    """Every measure of :data:`NAMES` on one stretch (None where it is undefined)."""
    n = len(y)
    if n == 0:
        return dict.fromkeys(NAMES) | {"rows": 0}
    both = 0 < y.sum() < n
    auc = float(roc_auc_score(y, p)) if both else None
    clipped = np.clip(p, 1e-6, 1 - 1e-6)
    log_loss = -np.mean(y * np.log(clipped) + (1 - y) * np.log(1 - clipped))
    return {
        "rows": n,
        "auc": auc,
        "gini": gini(auc),
        "ks": ks_statistic(y, p),
        "brier": float(np.mean((p - y) ** 2)),
        "log_loss": float(log_loss),
        "ece": expected_calibration_error(y, p),
        "default_rate": float(1 - y.mean()),
        "approval_rate": float(np.mean(decisions == "approve")),
        "cost_per_application": float(decision_cost(y, decisions, costs).mean()),
        "accuracy_at_0_5": float(np.mean((p >= 0.5) == (y == 1))),
    }
