"""The feature spec: one declarative file that says which columns a dataset has and what they mean.

Validation, generation, training and per-feature drift all read it, so a lender's own data with
other columns works by pointing at another spec; nothing downstream names a loan column.

>>> spec = load_spec()
>>> spec.name, spec.id_column, spec.target_column
('loan-application', 'application_id', 'repaid')
>>> spec.feature("credit_score").min, spec.feature("credit_score").max
(300.0, 850.0)

A feature marked ``protected: true`` still feeds the model, but is never given as a reason
for a decision (lending law forbids some, such as age, as the stated reason for an adverse
action):

>>> spec.protected_features
frozenset({'age'})
"""

from __future__ import annotations

import hashlib
import json
from functools import cached_property
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    ValidationError,
    model_validator,
)

from loanstream.errors import SpecError

DEFAULT_SPEC_NAME = "loan.yaml"

_Name = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", max_length=64)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class NumericFeature(_Strict):
    """A number within ``[min, max]``; ``integer`` features also refuse fractions."""

    name: _Name
    type: Literal["numeric", "integer"]
    min: float
    max: float
    nullable: bool = False
    description: str = ""
    protected: StrictBool = False  # never given as a reason for a decision

    @model_validator(mode="after")
    def _range_is_ordered(self) -> NumericFeature:
        if not self.min < self.max:
            raise ValueError(f"min must be below max, got min={self.min} max={self.max}")
        return self


class CategoricalFeature(_Strict):
    """One of a fixed set of string values."""

    name: _Name
    type: Literal["categorical"]
    values: list[str] = Field(min_length=1)
    nullable: bool = False
    description: str = ""
    protected: StrictBool = False  # never given as a reason for a decision

    @model_validator(mode="after")
    def _values_are_unique(self) -> CategoricalFeature:
        repeated = sorted({v for v in self.values if self.values.count(v) > 1})
        if repeated:
            raise ValueError(f"values must be unique, repeated: {repeated}")
        return self


Feature = Annotated[NumericFeature | CategoricalFeature, Field(discriminator="type")]


class FeatureSpec(_Strict):
    """The roles of a dataset's columns and the type and valid values of each feature."""

    name: str = Field(min_length=1, max_length=64)
    id_column: _Name
    event_time_column: _Name
    target_column: _Name
    target_description: str = ""
    features: list[Feature] = Field(min_length=1)

    @model_validator(mode="after")
    def _names_are_distinct(self) -> FeatureSpec:
        roles = [self.id_column, self.event_time_column, self.target_column]
        names = [f.name for f in self.features]
        repeated = sorted({n for n in roles + names if (roles + names).count(n) > 1})
        if repeated:
            raise ValueError(
                "id, event-time, target and feature columns must have distinct names, "
                f"repeated: {repeated}"
            )
        return self

    @cached_property
    def feature_names(self) -> list[str]:
        return [f.name for f in self.features]

    @cached_property
    def numeric_features(self) -> list[NumericFeature]:
        return [f for f in self.features if isinstance(f, NumericFeature)]

    @cached_property
    def categorical_features(self) -> list[CategoricalFeature]:
        return [f for f in self.features if isinstance(f, CategoricalFeature)]

    @cached_property
    def protected_features(self) -> frozenset[str]:
        """The features never given as a reason for a decision."""
        return frozenset(f.name for f in self.features if f.protected)

    @cached_property
    def descriptions(self) -> dict[str, str]:
        """Each described feature's description: the words a reason code carries."""
        return {f.name: f.description for f in self.features if f.description}

    def feature(self, name: str) -> NumericFeature | CategoricalFeature:
        for f in self.features:
            if f.name == name:
                return f
        raise KeyError(f"feature {name!r} is not in spec {self.name!r}")

    @cached_property
    def fingerprint(self) -> str:
        """sha256 of the spec's canonical JSON: models record it, so a mismatch is caught.

        ``protected`` is left out: it says what a decision may be explained by, not what the
        data is, so marking a feature protected keeps the fingerprint of its models and drift
        state.
        """
        data = self.model_dump(mode="json", exclude={"features": {"__all__": {"protected"}}})
        canonical = json.dumps(data, sort_keys=True).encode()
        return hashlib.sha256(canonical).hexdigest()


def _format_error(source: str, err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"] if p not in ("numeric", "integer", "categorical"))
        msg = e["msg"].removeprefix("Value error, ")
        lines.append(f"{loc}: {msg}" if loc else msg)
    return f"invalid feature spec {source}: " + "; ".join(lines)


def parse_spec(data: object, source: str = "<data>") -> FeatureSpec:
    """Validate an already-parsed spec document; raise SpecError naming every problem."""
    if not isinstance(data, dict):
        raise SpecError(
            f"invalid feature spec {source}: expected a mapping at the top level, "
            f"got {type(data).__name__}"
        )
    try:
        return FeatureSpec.model_validate(data)
    except ValidationError as err:
        raise SpecError(_format_error(source, err)) from None


def read_yaml(path: str | Path | None, default: Traversable, what: str) -> tuple[object, str]:
    """(parsed YAML, source name) of ``path``, or of the packaged ``default`` when it is None.

    Every declarative file of the project (spec, world, scenarios) is read here, so each
    names itself the same way when it cannot be read or parsed.
    """
    if path is None:
        text, source = default.read_text(), f"<default {default.name}>"
    else:
        source = str(path)
        try:
            text = Path(path).read_text()
        except OSError as err:
            raise SpecError(f"cannot read {what} {source}: {err.strerror}") from None
    try:
        return yaml.safe_load(text), source
    except yaml.YAMLError as err:
        raise SpecError(f"invalid {what} {source}: not valid YAML ({err})") from None


def load_spec(path: str | Path | None = None) -> FeatureSpec:
    """Load a YAML feature spec; ``None`` loads the default loan-application spec."""
    default = resources.files("loanstream.specs").joinpath(DEFAULT_SPEC_NAME)
    data, source = read_yaml(path, default, "feature spec")
    return parse_spec(data, source)
