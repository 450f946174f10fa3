"""What selective labels hide, for a backtest: the realized figures of the labelled (approved
and explored) rows beside those of everyone, from scored applications with their true labels.

Accuracy is the monitor's (``monitor/performance.py``): predicted repaid when p >= 0.5.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from producer.selective import Fate, fate_of

THRESHOLD = 0.5


def selective_view(
    frame: pd.DataFrame,
    exploration: float,
    seed: int,
    *,
    id_column: str = "application_id",
    decision_column: str = "decision",
    label_column: str = "label",
) -> pd.DataFrame:
    """A copy of ``frame`` with ``fate`` (approved, explored, withheld) and ``has_outcome``:
    whether the row would get an outcome under selective labels (and has a label at all).

    >>> rows = pd.DataFrame({"application_id": ["a", "b"], "decision": ["approve", "decline"],
    ...                      "label": [1, 0]})
    >>> selective_view(rows, 0.0, seed=1)[["fate", "has_outcome"]].to_dict("list")
    {'fate': ['approved', 'withheld'], 'has_outcome': [True, False]}
    """
    ids = frame[id_column].astype(str).tolist()
    decisions = frame[decision_column].astype(str).tolist()
    fates = [fate_of(d, i, exploration, seed).value for d, i in zip(decisions, ids, strict=True)]
    out = frame.copy()
    out["fate"] = fates
    labelled = pd.to_numeric(out[label_column], errors="coerce").notna().to_numpy()
    out["has_outcome"] = np.isin(fates, [Fate.APPROVED.value, Fate.EXPLORED.value]) & labelled
    return out


@dataclass(frozen=True)
class PopulationMetrics:
    """Realized figures on one population; ``rows`` is the weighted row count when reweighted."""

    rows: float
    accuracy: float | None  # predicted repaid when p >= 0.5, as the monitor counts it
    default_rate: float | None  # label 0 = default
    mean_probability: float | None


@dataclass(frozen=True)
class SelectiveComparison:
    """The labelled view beside everyone: what selective labels hide.

    ``labelled`` is what the monitor can realize (approved plus explored rows with an outcome);
    ``approved`` the approved rows alone; ``everyone`` every labelled row had all been approved;
    ``reweighted`` estimates everyone from the labelled rows alone, each explored row counting
    for ``1 / exploration`` rows (inverse-propensity weighting).
    """

    labelled: PopulationMetrics
    approved: PopulationMetrics
    explored_rows: int
    everyone: PopulationMetrics
    reweighted: PopulationMetrics | None  # None without exploration

    def sentence(self) -> str:
        seen, all_ = self.labelled, self.everyone
        return (
            f"the approved-only view shows {_pct(seen.accuracy)} accuracy and a "
            f"{_pct(seen.default_rate)} default rate on {seen.rows:,.0f} rows "
            f"({self.explored_rows:,} of them explored); on everyone it would be "
            f"{_pct(all_.accuracy)} accuracy and a {_pct(all_.default_rate)} default rate "
            f"on {all_.rows:,.0f} rows"
        )


def compare_populations(
    frame: pd.DataFrame,
    exploration: float,
    seed: int,
    *,
    id_column: str = "application_id",
    decision_column: str = "decision",
    label_column: str = "label",
    probability_column: str = "probability",
) -> SelectiveComparison:
    """Realized accuracy, default rate and counts on the labelled view and on everyone."""
    view = selective_view(
        frame,
        exploration,
        seed,
        id_column=id_column,
        decision_column=decision_column,
        label_column=label_column,
    )
    y = pd.to_numeric(view[label_column], errors="coerce").to_numpy(dtype=float)
    p = pd.to_numeric(view[probability_column], errors="coerce").to_numpy(dtype=float)
    known = ~np.isnan(y)
    seen = view["has_outcome"].to_numpy(dtype=bool)
    fate = view["fate"].to_numpy(dtype=object)
    explored = seen & (fate == Fate.EXPLORED.value)
    approved = seen & (fate == Fate.APPROVED.value)
    reweighted = None
    if exploration > 0:
        weights = np.where(explored, 1.0 / exploration, 1.0)
        reweighted = _metrics(p[seen], y[seen], weights[seen])
    return SelectiveComparison(
        labelled=_metrics(p[seen], y[seen]),
        approved=_metrics(p[approved], y[approved]),
        explored_rows=int(explored.sum()),
        everyone=_metrics(p[known], y[known]),
        reweighted=reweighted,
    )


def _metrics(p: np.ndarray, y: np.ndarray, weights: np.ndarray | None = None) -> PopulationMetrics:
    w = np.ones(len(p)) if weights is None else weights
    total = float(w.sum())
    if total == 0:
        return PopulationMetrics(0, None, None, None)
    correct = (p >= THRESHOLD) == (y == 1.0)
    return PopulationMetrics(
        rows=total,
        accuracy=float(np.dot(w, correct) / total),
        default_rate=float(np.dot(w, y == 0.0) / total),
        mean_probability=float(np.dot(w, p) / total),
    )


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"
