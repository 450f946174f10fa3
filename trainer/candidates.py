"""Candidate models, each a scikit-learn pipeline over the spec's columns (no loan column named).

- ``logistic``: median-impute + scale numerics, one-hot categoricals, logistic regression.
- ``hgb``: hist-gradient-boosting with native categoricals (ordinal-encoded, unknown -> missing).
- ``forest``: random forest on the same ordinal encoding (missing values handled natively).

Each comes with a small hyperparameter space for a budgeted successive-halving search.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder, StandardScaler

from loanstream.spec import FeatureSpec


@dataclass(frozen=True)
class Candidate:
    name: str
    pipeline: Pipeline
    space: dict[str, list[Any]]


def _ordinal(spec: FeatureSpec) -> ColumnTransformer:
    numeric = [f.name for f in spec.numeric_features]
    categorical = [f.name for f in spec.categorical_features]
    encoder = OrdinalEncoder(
        categories=[list(f.values) for f in spec.categorical_features],
        handle_unknown="use_encoded_value",
        unknown_value=np.nan,
        encoded_missing_value=np.nan,
    )
    return ColumnTransformer(
        [("categorical", encoder, categorical), ("numeric", "passthrough", numeric)],
        verbose_feature_names_out=False,
    )


def candidates(spec: FeatureSpec, seed: int) -> list[Candidate]:
    numeric = [f.name for f in spec.numeric_features]
    categorical = [f.name for f in spec.categorical_features]
    n_cat = len(categorical)
    logistic = Pipeline(
        [
            (
                "prepare",
                ColumnTransformer(
                    [
                        (
                            "numeric",
                            Pipeline(
                                [
                                    ("impute", SimpleImputer(strategy="median")),
                                    ("scale", StandardScaler()),
                                ]
                            ),
                            numeric,
                        ),
                        (
                            "categorical",
                            OneHotEncoder(
                                categories=[list(f.values) for f in spec.categorical_features],
                                handle_unknown="ignore",
                            ),
                            categorical,
                        ),
                    ]
                ),
            ),
            ("model", LogisticRegression(max_iter=1000)),
        ]
    )
    hgb = Pipeline(
        [
            ("prepare", _ordinal(spec)),
            (
                "model",
                HistGradientBoostingClassifier(
                    categorical_features=list(range(n_cat)), random_state=seed, early_stopping=False
                ),
            ),
        ]
    )
    forest = Pipeline(
        [
            ("prepare", _ordinal(spec)),
            (
                "model",
                RandomForestClassifier(
                    n_estimators=100, min_samples_leaf=20, random_state=seed, n_jobs=2
                ),
            ),
        ]
    )
    return [
        Candidate("logistic", logistic, {"model__C": [0.01, 0.1, 1.0, 10.0]}),
        Candidate(
            "hgb",
            hgb,
            {
                "model__learning_rate": [0.05, 0.1, 0.2],
                "model__max_leaf_nodes": [15, 31, 63],
                "model__max_iter": [100, 200],
                "model__l2_regularization": [0.0, 1.0],
            },
        ),
        Candidate(
            "forest",
            forest,
            {
                "model__max_depth": [8, 12, None],
                "model__max_features": ["sqrt", 0.5],
            },
        ),
    ]
