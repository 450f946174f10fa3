"""A faster, equivalent input step for tree models, checked against scikit-learn before use.

The tree candidates start with a ColumnTransformer (ordinal-encode the categoricals, pass the
numbers through). For one application it costs ~2.6 ms, more than half of a single-row score,
most of it pandas and validation overhead. ``compile_model`` swaps it for ``FastOrdinal``, which
builds the same matrix with a dict lookup per categorical value, and keeps the swap only if the
compiled model gives exactly the same probabilities as the original on a probe of the reference
(typical, extreme, missing and unknown values). Any other pipeline is left as it is.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.compose import ColumnTransformer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OrdinalEncoder

from loanstream.models import LoadedModel, repaid_probability

logger = logging.getLogger(__name__)

PROBE_ROWS = 256


class FastOrdinal(TransformerMixin, BaseEstimator):
    """Categoricals to their index in ``categories`` (unknown or missing: NaN), then numbers."""

    def __init__(self, categorical: list[str], numeric: list[str], categories: list[list[Any]]):
        self.categorical = categorical
        self.numeric = numeric
        self.categories = categories

    def fit(self, X: Any, y: Any = None) -> FastOrdinal:
        return self

    def transform(self, X: pd.DataFrame) -> np.ndarray:
        lookups = [{v: float(i) for i, v in enumerate(c)} for c in self.categories]
        out = np.empty((len(X), len(self.categorical) + len(self.numeric)))
        for j, (name, lookup) in enumerate(zip(self.categorical, lookups, strict=True)):
            out[:, j] = [lookup.get(v, np.nan) for v in X[name].tolist()]
        for j, name in enumerate(self.numeric, start=len(self.categorical)):
            out[:, j] = pd.to_numeric(X[name], errors="raise").to_numpy(float, na_value=np.nan)
        return out


def _fast_step(prepare: Any) -> FastOrdinal | None:
    """The FastOrdinal equal to ``prepare``, if it is the ordinal ColumnTransformer we build."""
    if not isinstance(prepare, ColumnTransformer):
        return None
    steps = [
        (n, t, c) for n, t, c in prepare.transformers_ if not (n == "remainder" and t == "drop")
    ]
    if [n for n, _, _ in steps] != ["categorical", "numeric"]:
        return None
    (_, encoder, categorical), (_, passthrough, numeric) = steps
    if not isinstance(encoder, OrdinalEncoder):
        return None
    if not (passthrough == "passthrough" or type(passthrough).__name__ == "FunctionTransformer"):
        return None
    return FastOrdinal(list(categorical), list(numeric), [list(c) for c in encoder.categories_])


def _pipelines(model: Any) -> list[Pipeline]:
    """The fitted pipelines inside a (calibrated, possibly frozen) model."""
    inner = [c.estimator for c in getattr(model, "calibrated_classifiers_", [])] or [model]
    found = [getattr(e, "estimator", e) for e in inner]  # FrozenEstimator wraps the pipeline
    return [p for p in found if isinstance(p, Pipeline)]


def probe_frame(model: LoadedModel, rows: int = PROBE_ROWS, seed: int = 0) -> pd.DataFrame:
    """Applicants drawn from the reference, with missing and unknown values mixed in."""
    rng = np.random.default_rng(seed)
    columns: dict[str, Any] = {}
    for name in model.feature_names:
        profile = model.reference["features"].get(name, {})
        if profile.get("kind") == "categorical":
            values: list[Any] = [*profile.get("shares", {}), "not-a-known-value"]
            columns[name] = rng.choice(np.array(values, dtype=object), rows)
        else:
            quantiles = np.asarray(profile.get("quantiles", [0.0, 1.0]), dtype=float)
            column = np.interp(rng.random(rows), np.linspace(0, 1, len(quantiles)), quantiles)
            columns[name] = column.astype(object)
        columns[name][rng.random(rows) < 0.1] = None
    return pd.DataFrame(columns, columns=model.feature_names)


def compile_model(model: LoadedModel) -> LoadedModel:
    """``model`` with FastOrdinal inputs where that gives identical probabilities, else itself."""
    compiled = copy.deepcopy(model.model)
    pipelines = _pipelines(compiled)
    fast = [_fast_step(p.steps[0][1]) for p in pipelines]
    if not pipelines or any(f is None for f in fast):
        return model
    for pipeline, step in zip(pipelines, fast, strict=True):
        pipeline.steps[0] = (pipeline.steps[0][0], step)
    probe = probe_frame(model)
    before = repaid_probability(model.model, probe)
    after = repaid_probability(compiled, probe)
    if not np.array_equal(before, after):
        logger.warning(
            "not compiling %s v%s: probabilities differ by up to %.3g on the probe",
            model.name,
            model.version,
            float(np.nanmax(np.abs(before - after))),
        )
        return model
    return dataclasses.replace(model, model=compiled)
