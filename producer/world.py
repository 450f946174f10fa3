"""A synthetic world: how applications are drawn and how repayment truly depends on them.

Declared in YAML beside the feature spec (``producer/worlds/loan.yaml`` for the default loan
spec). Numeric features come from a Gaussian copula: each feature's latent z-score loads on a few
shared factors (e.g. ``wealth`` drives income, loan amount and lower debt-to-income together) and
is mapped through its marginal (normal or lognormal), then clipped to the spec's range.
Repayment follows a logistic model on standardised features plus noise, so the true probability
of every application is known and drift scenarios can change it.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from loanstream.errors import SpecError
from loanstream.spec import CategoricalFeature, FeatureSpec, read_yaml


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class NumericMarginal(_Frozen):
    dist: Literal["normal", "lognormal"]
    mean: float  # of the value (normal) or of log(value) (lognormal)
    sd: float = Field(gt=0)
    loadings: dict[str, float] = Field(default_factory=dict)
    missing: float = Field(default=0.0, ge=0, lt=1)

    @model_validator(mode="after")
    def _loadings_leave_room_for_noise(self) -> NumericMarginal:
        if sum(v * v for v in self.loadings.values()) >= 1:
            raise ValueError("the squared loadings must sum to less than 1")
        return self


class CategoricalMarginal(_Frozen):
    dist: Literal["choice"]
    weights: dict[str, float]
    missing: float = Field(default=0.0, ge=0, lt=1)


class Truth(_Frozen):
    """logit P(repaid) = intercept + sum(coef * z(feature)) + category effects + noise * N(0,1)."""

    intercept: float
    coefficients: dict[str, float] = Field(default_factory=dict)
    categories: dict[str, dict[str, float]] = Field(default_factory=dict)
    noise: float = Field(default=0.0, ge=0)


class World(_Frozen):
    factors: list[str] = Field(default_factory=list)
    features: dict[str, NumericMarginal | CategoricalMarginal]
    truth: Truth

    def check_against(self, spec: FeatureSpec) -> World:
        """Refuse a world that does not fit the spec, naming the mismatch."""
        problems = []
        if set(self.features) != set(spec.feature_names):
            problems.append(
                f"features {sorted(set(self.features) ^ set(spec.feature_names))} are in one of "
                "the world and the spec but not the other"
            )
        for name, marginal in self.features.items():
            if name not in spec.feature_names:
                continue
            feature = spec.feature(name)
            if isinstance(feature, CategoricalFeature) != isinstance(marginal, CategoricalMarginal):
                problems.append(f"{name}: marginal '{marginal.dist}' does not fit its spec type")
            elif isinstance(marginal, CategoricalMarginal) and isinstance(
                feature, CategoricalFeature
            ):
                unknown = set(marginal.weights) - set(feature.values)
                if unknown:
                    problems.append(f"{name}: values {sorted(unknown)} are not in the spec")
            elif isinstance(marginal, NumericMarginal):
                unknown = set(marginal.loadings) - set(self.factors)
                if unknown:
                    problems.append(f"{name}: unknown factors {sorted(unknown)}")
            if marginal.missing and not feature.nullable:
                problems.append(f"{name}: has a missing rate but the spec says not nullable")
        for name in list(self.truth.coefficients) + list(self.truth.categories):
            if name not in self.features:
                problems.append(f"truth names unknown feature {name}")
        if problems:
            raise SpecError("world does not fit the feature spec: " + "; ".join(problems))
        return self


def load_world(path: str | Path | None, spec: FeatureSpec) -> World:
    """Load a world file (``None``: the default loan world) and check it against ``spec``."""
    default = resources.files("producer.worlds").joinpath("loan.yaml")
    data, source = read_yaml(path, default, "world")
    try:
        world = World.model_validate(data)
    except ValidationError as err:
        raise SpecError(f"invalid world {source}: {err}") from None
    return world.check_against(spec)
