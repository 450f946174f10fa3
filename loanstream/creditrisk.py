"""The credit-risk team's reading of a scorecard: Gini and KS beside the AUC, and the PSI bands.

Shared because the monitor, the trainer and the loop above them all report these, and a band
or a KS defined twice drifts apart. ``p`` is the score (P(repaid)); ``y`` is 1 for repaid.

- Gini = 2 AUC - 1: the accuracy ratio of the score's ranking, 0 for a coin, 1 for perfect.
- KS = the largest vertical distance between the score's distribution among the repaid and
  among the defaulted (max |TPR - FPR| over cut-offs): how far the best cut-off separates them.
- PSI (on the score) and CSI (the same index per characteristic, i.e. per feature) are read in
  bands: "stable" below 0.1, "watch" from 0.1, "act" from 0.25.

>>> y = np.array([1, 1, 1, 0, 0]); p = np.array([0.9, 0.8, 0.4, 0.5, 0.1])
>>> round(gini(5 / 6), 4), round(ks_statistic(y, p), 4)
(0.6667, 0.6667)
>>> psi_band(0.05), psi_band(0.1), psi_band(0.3)
('stable', 'watch', 'act')
"""

from __future__ import annotations

import numpy as np

WATCH, ACT = 0.1, 0.25  # the credit-risk industry's PSI/CSI bands
BANDS = ("stable", "watch", "act")


def psi_band(psi: float) -> str:
    """How credit-risk teams read a PSI or CSI: "stable" < 0.1 <= "watch" < 0.25 <= "act"."""
    return "act" if psi >= ACT else "watch" if psi >= WATCH else "stable"


def band_rule() -> str:
    """The bands in words, for captions: ``stable < 0.1 <= watch < 0.25 <= act``."""
    return f"stable < {WATCH:g} ≤ watch < {ACT:g} ≤ act"


def gini(auc: float | None) -> float | None:
    """The Gini coefficient (accuracy ratio) of a ranking with this AUC; None stays None.

    >>> gini(0.5), gini(1.0), gini(None)
    (0.0, 1.0, None)
    """
    return None if auc is None else 2.0 * auc - 1.0


def ks_statistic(y: np.ndarray, p: np.ndarray) -> float | None:
    """KS of the scores ``p`` of the repaid (``y == 1``) against the defaulted (``y == 0``):
    the largest gap between their empirical distribution functions; None without both classes.

    Ties are handled as the two empirical CDFs are: all rows with one score move together.

    >>> ks_statistic(np.array([1, 0, 1, 0]), np.array([0.9, 0.1, 0.8, 0.2]))
    1.0
    >>> ks_statistic(np.array([1, 1]), np.array([0.9, 0.1])) is None
    True
    """
    y = np.asarray(y, dtype=float)
    p = np.asarray(p, dtype=float)
    if y.shape != p.shape or y.ndim != 1:
        raise ValueError(f"y and p must be 1-d arrays of one length, got {y.shape} and {p.shape}")
    repaid = y == 1.0
    n_pos, n_neg = int(repaid.sum()), int((~repaid).sum())
    if n_pos == 0 or n_neg == 0:
        return None
    order = np.argsort(p, kind="stable")
    ps, pos = p[order], repaid[order]
    last = np.concatenate((ps[1:] != ps[:-1], [True]))  # the last row of each tied score
    cdf_pos = np.cumsum(pos)[last] / n_pos
    cdf_neg = np.cumsum(~pos)[last] / n_neg
    return float(np.max(np.abs(cdf_pos - cdf_neg)))


def ks_from_histograms(positive: np.ndarray, negative: np.ndarray) -> float | None:
    """KS from per-bin (soft) counts of the repaid and the defaulted over ordered score bins:
    exact at the bin edges, so within one bin's width of the exact value.

    >>> ks_from_histograms(np.array([0.0, 1.0, 3.0]), np.array([2.0, 2.0, 0.0]))
    0.75
    """
    pos = np.asarray(positive, dtype=float)
    neg = np.asarray(negative, dtype=float)
    total_pos, total_neg = float(pos.sum()), float(neg.sum())
    if total_pos <= 0.0 or total_neg <= 0.0:
        return None
    gap = np.cumsum(pos) / total_pos - np.cumsum(neg) / total_neg
    return float(np.max(np.abs(gap)))
