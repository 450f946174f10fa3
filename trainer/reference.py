"""The training data's per-feature reference distribution, stored with the model.

The monitor compares live traffic with it (PSI, Wasserstein, missing rate), so it holds what
those need: decile bin edges and shares, mean, standard deviation and a quantile sketch for
numeric features; value shares for categoricals; the missing rate of each; and the same for the
model's predicted probabilities.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from loanstream.spec import CategoricalFeature, FeatureSpec

QUANTILES = np.linspace(0.0, 1.0, 101)


def _numeric(values: np.ndarray) -> dict[str, Any]:
    present = values[~np.isnan(values)]
    if present.size == 0:
        return {"kind": "numeric", "missing_rate": 1.0, "count": int(values.size)}
    edges = np.unique(np.quantile(present, np.linspace(0, 1, 11)))
    inner = edges[1:-1]  # bins: (-inf, e1], (e1, e2], ..., (e_k, inf)
    counts = np.bincount(np.searchsorted(inner, present, side="left"), minlength=len(inner) + 1)
    return {
        "kind": "numeric",
        "count": int(values.size),
        "missing_rate": float(1 - present.size / values.size),
        "mean": float(present.mean()),
        "std": float(present.std()),
        "edges": inner.tolist(),
        "shares": (counts / present.size).tolist(),
        "quantiles": np.quantile(present, QUANTILES).tolist(),
    }


def _categorical(values: pd.Series, allowed: list[str]) -> dict[str, Any]:
    present = values.dropna()
    shares = present.value_counts(normalize=True)
    return {
        "kind": "categorical",
        "count": len(values),
        "missing_rate": float(1 - len(present) / max(1, len(values))),
        "shares": {v: float(shares.get(v, 0.0)) for v in allowed},
    }


def reference_profile(
    frame: pd.DataFrame, spec: FeatureSpec, probabilities: np.ndarray
) -> dict[str, Any]:
    features: dict[str, Any] = {}
    for feature in spec.features:
        if isinstance(feature, CategoricalFeature):
            features[feature.name] = _categorical(frame[feature.name], list(feature.values))
        else:
            features[feature.name] = _numeric(frame[feature.name].to_numpy(dtype=float))
    return {
        "rows": len(frame),
        "features": features,
        "prediction": _numeric(np.asarray(probabilities, dtype=float)),
    }
