"""Scoring, pure: a batch of validated applications in, one Prediction per application out.

Review and decline decisions carry up to four principal reasons, as lenders state an adverse
action's: the features whose value lowers this applicant's probability most, measured by putting
the training reference's typical value (the median, or the most common category) in its place
and scoring again, each with the feature spec's description as its text. Only features that
lower it count, so an applicant no worse than the typical one on every feature gets no reason:
the decision then comes from the typical profile itself. A feature the spec marks ``protected``
(age, in the loan spec) is never a reason: it still feeds the model, its effect is simply not
measured, and the next features take its place. All counterfactuals of a batch go through the
model in one call. They are scored by the model before calibration: an isotonic calibrator is a
step function, flat over a single feature's change, while the order of applicants is the same
before and after it.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd

from loanstream.contracts import Decision, LoanApplication, Prediction, ReasonCode
from loanstream.models import LoadedModel, repaid_probability
from loanstream.spec import FeatureSpec, load_spec
from scorer.compiled import CompiledModel, attribution_model

MAX_REASONS = 4  # the principal reasons an adverse-action notice gives, at most


@functools.cache
def default_spec() -> FeatureSpec:
    """The packaged loan spec, read once: the reasons' spec when a caller names none."""
    return load_spec()


def typical_values(reference: dict[str, Any]) -> dict[str, Any]:
    """The reference's median (numeric) or most common value (categorical) per feature."""
    typical: dict[str, Any] = {}
    for name, profile in reference["features"].items():
        if profile["kind"] == "categorical":
            shares = profile["shares"]
            typical[name] = max(shares, key=shares.get) if shares else None
        elif "quantiles" in profile:
            typical[name] = profile["quantiles"][len(profile["quantiles"]) // 2]
    return typical


def frame_of(applications: list[LoanApplication], feature_names: list[str]) -> pd.DataFrame:
    return pd.DataFrame.from_records([a.features for a in applications], columns=feature_names)


Effects = tuple[np.ndarray, np.ndarray]  # P(repaid) of the rows, and with each name typical


def frame_effects(
    model: LoadedModel, frame: pd.DataFrame, rows: np.ndarray, names: list[str], typical: dict
) -> Effects:
    """The rows' probabilities before calibration, as they are and with each feature typical."""
    subset = frame.iloc[rows]
    variants = pd.concat(
        [subset.assign(**{name: typical[name]}) for name in names], ignore_index=True
    )
    scorer = attribution_model(model.model)
    shifted = repaid_probability(scorer, variants).reshape(len(names), rows.size)
    return repaid_probability(scorer, subset), shifted


def compiled_effects(
    compiled: CompiledModel, X: np.ndarray, rows: np.ndarray, names: list[str], typical: dict
) -> Effects:
    """``frame_effects`` on the compiled model's matrix: one column block set per variant."""
    subset = X[rows]
    typical_row = compiled.matrix([typical])[0]
    columns = compiled.columns
    variants = np.repeat(subset[np.newaxis], len(names), axis=0)
    for i, name in enumerate(names):
        variants[i, :, columns[name]] = typical_row[columns[name]]
    shifted = compiled.raw_probability(variants.reshape(-1, X.shape[1]))
    return compiled.raw_probability(subset), shifted.reshape(len(names), rows.size)


def reason_features(
    feature_names: list[str], typical: Mapping[str, Any], spec: FeatureSpec
) -> list[str]:
    """The features a reason may name: those with a typical value, less the protected ones."""
    protected = spec.protected_features
    return [n for n in feature_names if n in typical and n not in protected]


def top_reasons(
    names: list[str],
    rows: np.ndarray,
    effects: Effects,
    texts: Mapping[str, str] | None = None,
) -> dict[int, list[ReasonCode]]:
    """Per row, the (at most four) features whose value lowers its probability most, most
    first, each with its ``texts`` entry (the spec's description) as words."""
    texts = texts or {}
    own, shifted = effects
    contributions = own[np.newaxis, :] - shifted  # < 0: this value lowers the score
    reasons: dict[int, list[ReasonCode]] = {}
    # Ties (a forest often gives two features the same effect) go to the first feature, and
    # float noise below 1e-12 neither orders them nor makes a reason of a feature with no
    # effect: compiled and scikit-learn give the same codes.
    ranked = np.round(contributions, 12)
    for column, row in enumerate(rows.tolist()):
        order = np.argsort(ranked[:, column], kind="stable")[:MAX_REASONS]
        reasons[row] = [
            ReasonCode(
                feature=names[i],
                contribution=float(f"{contributions[i, column]:.4g}"),
                text=texts.get(names[i]),
            )
            for i in order
            if ranked[i, column] < 0
        ]
    return reasons


def score_batch(
    model: LoadedModel,
    applications: list[LoanApplication],
    received_at: datetime,
    now: datetime,
    with_reasons: bool = True,
    typical: dict[str, Any] | None = None,
    spec: FeatureSpec | None = None,
) -> list[Prediction]:
    """One Prediction per application, in order, from ``model`` (compiled or not).

    ``spec`` (default: the packaged loan spec) gives the reasons their words and says which
    features are protected, never to be given as a reason; pass the spec the service runs with.
    """
    if not applications:
        return []
    compiled = model.model if isinstance(model.model, CompiledModel) else None
    if compiled is not None:
        X = compiled.matrix([a.features for a in applications])
        probability = compiled.probability(X)
    else:
        frame = frame_of(applications, model.feature_names)
        probability = repaid_probability(model.model, frame)
    decisions = model.bands.decide_many(probability)
    reasons: dict[int, list[ReasonCode]] = {}
    rows = np.flatnonzero(decisions != Decision.APPROVE.value)
    if with_reasons and rows.size:
        typical = typical if typical is not None else typical_values(model.reference)
        spec = spec if spec is not None else default_spec()
        names = reason_features(model.feature_names, typical, spec)
        if names:  # none when every feature is protected
            effects = (
                compiled_effects(compiled, X, rows, names, typical)
                if compiled is not None
                else frame_effects(model, frame, rows, names, typical)
            )
            reasons = top_reasons(names, rows, effects, spec.descriptions)
    return [
        Prediction.trusted(
            application_id=app.application_id,
            event_time=app.event_time,
            probability=float(p),
            decision=Decision(d),
            model_name=model.name,
            model_version=model.version,
            features=app.features,
            reasons=reasons.get(i, []),
            received_at=received_at,
            scored_at=now,
        )
        for i, (app, p, d) in enumerate(
            zip(applications, probability.tolist(), decisions.tolist(), strict=True)
        )
    ]
