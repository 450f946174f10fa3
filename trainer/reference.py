"""The training data's per-feature reference distribution, stored with the model.

The monitor compares live traffic with it (PSI, Wasserstein, missing rate), so it holds what
those need: decile bin edges and shares, mean, standard deviation and a quantile sketch for
numeric features; value shares for categoricals; the missing rate of each; and the same for the
model's predicted probabilities. :func:`typical_rows` makes made-up applications from it, for
the model's MLflow input example, which must not be an applicant's data.
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


TYPICAL_QUANTILES = (25, 50, 75)


def typical_rows(reference: dict[str, Any], spec: FeatureSpec) -> pd.DataFrame:
    """Three made-up rows of the features: the 25th, 50th and 75th percentile of each numeric
    feature (integers rounded), and the most, second and third most common category.

    Each value is typical, no row is anyone's: the columns come from different applicants.
    A feature the reference never saw takes the spec's minimum or first value.
    """
    columns: dict[str, list[Any]] = {}
    for feature in spec.features:
        profile = reference["features"].get(feature.name, {})
        if isinstance(feature, CategoricalFeature):
            shares = profile.get("shares") or {}
            ranked = sorted(feature.values, key=lambda v: -float(shares.get(v, 0.0)))
            columns[feature.name] = [ranked[i % len(ranked)] for i in range(3)]
        elif "quantiles" in profile:
            values = [float(profile["quantiles"][q]) for q in TYPICAL_QUANTILES]
            columns[feature.name] = (
                [round(v) for v in values] if feature.type == "integer" else values
            )
        else:
            columns[feature.name] = [feature.min] * 3
    return pd.DataFrame(columns, columns=spec.feature_names)
