"""Drift scenarios, declared in data (``producer/scenarios.yaml``), composable with ``+``.

A scenario is a list of drifts. Each drift starts at an application position and is either
*covariate* (feature values are scaled or shifted; the repayment function stays) or *concept*
(the repayment function changes: coefficients, intercept or a segment's effect; ``within``
confines it to a numeric feature's range). ``width`` mixes
the new regime in linearly (0 = abrupt); ``period`` makes it recur (on for a period, off for a
period, ...).
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from loanstream.errors import SpecError
from loanstream.spec import read_yaml


class Drift(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["covariate", "concept"]
    start: int = Field(ge=0, description="position of the first affected application")
    width: int = Field(default=0, ge=0, description="0: abrupt; else linear mixing over width")
    period: int | None = Field(default=None, gt=0, description="recurring: on/off half-period")
    scale: dict[str, float] = Field(default_factory=dict)
    shift: dict[str, float] = Field(default_factory=dict)
    intercept: float = 0.0
    coefficients: dict[str, float] = Field(default_factory=dict, description="added to truth")
    categories: dict[str, dict[str, float]] = Field(default_factory=dict)
    within: dict[str, tuple[float, float]] = Field(
        default_factory=dict,
        description="concept: only applications whose numeric feature is in [low, high)",
    )
    description: str = ""

    @model_validator(mode="after")
    def _within_is_for_concepts(self) -> Drift:
        if self.within and self.kind != "concept":
            raise ValueError("within limits concept drifts only")
        for name, (low, high) in self.within.items():
            if not low < high:
                raise ValueError(f"within {name}: low must be below high, got [{low}, {high})")
        return self

    def weight(self, positions: np.ndarray) -> np.ndarray:
        """Probability that the new regime applies at each position (0 before ``start``)."""
        since = positions - self.start
        if self.width:
            w = np.clip((since + 1) / self.width, 0.0, 1.0)
        else:
            w = (since >= 0).astype(float)
        if self.period:
            w = w * ((np.maximum(since, 0) // self.period) % 2 == 0)
        return np.where(since >= 0, w, 0.0)


class Scenario(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    description: str = ""
    drifts: list[Drift] = Field(default_factory=list)


def _load_file(path: str | Path | None) -> dict[str, Scenario]:
    default = resources.files("producer").joinpath("scenarios.yaml")
    data, source = read_yaml(path, default, "scenario file")
    try:
        raw = data["scenarios"]  # type: ignore[index]
        return {name: Scenario(name=name, **body) for name, body in raw.items()}
    except (ValidationError, KeyError, TypeError) as err:
        raise SpecError(f"invalid scenario file {source}: {err}") from None


def load_scenario(names: str, path: str | Path | None = None) -> Scenario:
    """``"covariate-shift+concept-drift"`` composes the named scenarios' drifts."""
    known = _load_file(path)
    parts = [n.strip() for n in names.split("+") if n.strip()]
    unknown = [n for n in parts if n not in known]
    if unknown or not parts:
        raise SpecError(f"unknown scenario {unknown or names!r}; known: {sorted(known)}")
    chosen = [known[n] for n in parts]
    return Scenario(
        name="+".join(parts),
        description="; ".join(s.description for s in chosen if s.description),
        drifts=[d for s in chosen for d in s.drifts],
    )
