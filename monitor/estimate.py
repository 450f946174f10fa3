"""Label-free performance estimate of a batch of predictions (confidence-based, CBPE).

Treats each calibrated probability p as the chance that the loan is repaid, so every metric is
its expectation over the labels the model itself predicts: accuracy from max(p, 1 - p), Brier
from p(1 - p), log loss from the entropy of p, and AUC from the expected pair ordering.

What it assumes: the model is calibrated on today's traffic, and P(repaid | features) is the
one it was trained on (no concept drift), with no shift into regions it never saw. What it
cannot see: a change in the repayment function itself. Under concept drift the estimate stays
put while realized accuracy falls, which is why the error-stream detectors exist. Its expected
ECE is 0 by construction, and it says nothing about miscalibration.
"""

from __future__ import annotations

import numpy as np

from monitor.performance import CAL_BINS, EPS, CalibrationBin, WindowMetrics


def expected_auc(probabilities: np.ndarray) -> float | None:
    """E[AUC] as the ratio of expected concordant pairs (ties half) to expected pairs.

    Pairs i != j with i labelled positive (weight p_i) and j negative (weight 1 - p_j):
    sum p_i (1 - p_j) [1(p_i > p_j) + 0.5 * 1(p_i = p_j)] / sum p_i (1 - p_j). None when every
    p is 0 or every p is 1 (no expected pair).
    """
    p = np.sort(np.asarray(probabilities, dtype=float))
    starts = np.unique(p, return_index=True)[1]  # first index of each group of ties
    positive = np.add.reduceat(p, starts)  # expected positives among each group of ties
    negative = np.add.reduceat(1.0 - p, starts)
    below = np.concatenate(([0.0], np.cumsum(negative)[:-1]))  # expected negatives with lower p
    self_pairs = float(np.sum(p * (1.0 - p)))  # the excluded i == j terms
    pairs = float(positive.sum() * negative.sum()) - self_pairs
    if pairs <= 0.0:
        return None
    ties = float(np.sum(positive * negative)) - self_pairs
    return (float(np.sum(positive * below)) + 0.5 * ties) / pairs


def expected_metrics(
    probabilities: np.ndarray, approved: np.ndarray | None = None, threshold: float = 0.5
) -> WindowMetrics:
    """The metrics a calibrated model should reach on these predictions (labels unknown).

    >>> m = expected_metrics(np.array([0.9, 0.8, 0.3, 0.6]))
    >>> round(m.accuracy, 3), round(m.brier, 3), round(m.default_rate, 3)
    (0.75, 0.175, 0.35)
    """
    p = np.asarray(probabilities, dtype=float)
    if p.ndim != 1 or p.size == 0:
        raise ValueError(f"expected a non-empty 1-d array of probabilities, got shape {p.shape}")
    if not np.all((p >= 0.0) & (p <= 1.0)):  # also refuses NaN
        raise ValueError("probabilities must all be within [0, 1]")
    if approved is not None and np.shape(approved) != p.shape:
        raise ValueError(f"approved must have shape {p.shape}, got {np.shape(approved)}")
    clipped = np.clip(p, EPS, 1.0 - EPS)
    bin_of = np.minimum((p * CAL_BINS).astype(int), CAL_BINS - 1)
    counts = np.bincount(bin_of, minlength=CAL_BINS)
    sums = np.bincount(bin_of, weights=p, minlength=CAL_BINS)
    calibration = tuple(
        CalibrationBin(c / CAL_BINS, (c + 1) / CAL_BINS, int(n), s / n, s / n)
        for c, (n, s) in enumerate(zip(counts.tolist(), sums.tolist(), strict=True))
        if n
    )
    return WindowMetrics(
        count=int(p.size),
        accuracy=float(np.mean(np.where(p >= threshold, p, 1.0 - p))),
        auc=expected_auc(p),
        brier=float(np.mean(p * (1.0 - p))),
        log_loss=float(np.mean(-p * np.log(clipped) - (1.0 - p) * np.log(1.0 - clipped))),
        ece=0.0,
        default_rate=float(1.0 - p.mean()),
        approval_rate=None if approved is None else float(np.mean(approved)),
        mean_probability=float(p.mean()),
        calibration=calibration,
    )
