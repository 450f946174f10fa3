"""Draw applications and their true outcomes from a world and a scenario: pure and seeded.

Rows are made in fixed chunks, each with its own random stream (``[seed, chunk]``), so the same
seed gives the same rows whatever is asked for first, and any chunk can be made alone.

>>> from loanstream.spec import load_spec
>>> from producer.world import load_world
>>> from producer.scenarios import load_scenario
>>> spec = load_spec()
>>> g = Generator(spec, load_world(None, spec), load_scenario("stable"), seed=7)
>>> rows = g.rows(0, 3)
>>> list(rows["application_id"])
['app-7-000000000', 'app-7-000000001', 'app-7-000000002']
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd

from loanstream.spec import CategoricalFeature, FeatureSpec
from producer.outcomes import OUTCOME_TIME, LabelPolicy
from producer.scenarios import Drift, Scenario
from producer.world import CategoricalMarginal, NumericMarginal, Truth, World

CHUNK = 1000
DEFAULT_START = datetime(2025, 1, 1, tzinfo=UTC)
TRUE_PROBABILITY = "true_probability"  # extra column: the world's P(repaid), for evaluation


class Generator:
    """Applications with labels; ``rows(start, n)`` returns a DataFrame in the spec's columns."""

    def __init__(
        self,
        spec: FeatureSpec,
        world: World,
        scenario: Scenario,
        seed: int = 0,
        start_time: datetime = DEFAULT_START,
        interval: timedelta = timedelta(seconds=60),
        labels: LabelPolicy | None = None,
    ) -> None:
        self.spec = spec
        self.world = world
        self.scenario = scenario
        self.seed = seed
        self.start_time = start_time
        self.interval = interval
        self.labels = labels or LabelPolicy()

    def event_time(self, position: int) -> datetime:
        return self.start_time + position * self.interval

    def rows(self, start: int, n: int) -> pd.DataFrame:
        first, last = start // CHUNK, (start + n - 1) // CHUNK
        frames = [self._chunk(c) for c in range(first, last + 1)]
        frame = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
        offset = start - first * CHUNK
        return frame.iloc[offset : offset + n].reset_index(drop=True)

    def _chunk(self, index: int) -> pd.DataFrame:
        rng = np.random.default_rng([self.seed, index])
        positions = np.arange(index * CHUNK, (index + 1) * CHUNK)
        n = len(positions)
        # Drift mixing has its own stream, so every scenario shares the same base population
        # (and the same draws for labels): a scenario differs from `stable` only by its drifts.
        mixing = np.random.default_rng([self.seed, index, 1])
        active = {
            i: mixing.random(n) < d.weight(positions) for i, d in enumerate(self.scenario.drifts)
        }
        values = self._features(rng, n)
        for i, drift in enumerate(self.scenario.drifts):
            if drift.kind == "covariate":
                self._shift(values, drift, active[i])
        logit = self._logit(values, rng, n)
        for i, drift in enumerate(self.scenario.drifts):
            if drift.kind == "concept":
                hit = active[i] & self._within(values, drift)
                logit += np.where(hit, self._linear(values, drift, n), 0.0)
        probability = 1.0 / (1.0 + np.exp(-logit))
        label = (rng.random(n) < probability).astype(np.int8)
        delays = self.labels.delays_ns(rng, n)
        start_ns = pd.Timestamp(self.start_time).value
        event_ns = start_ns + positions * int(self.interval.total_seconds() * 1e9)
        frame = pd.DataFrame(
            {
                self.spec.id_column: [f"app-{self.seed}-{p:09d}" for p in positions],
                self.spec.event_time_column: pd.to_datetime(event_ns, utc=True),
            }
        )
        for name in self.spec.feature_names:
            frame[name] = values[name]
        frame[self.spec.target_column] = label
        frame[TRUE_PROBABILITY] = probability
        frame[OUTCOME_TIME] = pd.to_datetime(
            np.where(delays >= 0, event_ns + delays, np.iinfo(np.int64).min), utc=True
        )  # int64 min is NaT: never labelled
        return frame

    def _features(self, rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
        factors = {f: rng.standard_normal(n) for f in self.world.factors}
        values: dict[str, np.ndarray] = {}
        for name in self.spec.feature_names:
            marginal = self.world.features[name]
            if isinstance(marginal, CategoricalMarginal):
                labels = np.array(list(marginal.weights), dtype=object)
                weights = np.array(list(marginal.weights.values()))
                column = labels[rng.choice(len(labels), size=n, p=weights / weights.sum())]
            else:
                noise = np.sqrt(1 - sum(v * v for v in marginal.loadings.values()))
                z = noise * rng.standard_normal(n)
                for factor, loading in marginal.loadings.items():
                    z = z + loading * factors[factor]
                raw = marginal.mean + marginal.sd * z
                column = np.exp(raw) if marginal.dist == "lognormal" else raw
            missing = rng.random(n) < marginal.missing
            values[name] = self._fit(name, column, missing)
        return values

    def _fit(self, name: str, column: np.ndarray, missing: np.ndarray) -> np.ndarray:
        """Clip to the spec's range, round integers, and blank out the missing values."""
        feature = self.spec.feature(name)
        if isinstance(feature, CategoricalFeature):
            return np.where(missing, np.array(None, dtype=object), column)
        fitted = np.clip(column.astype(float), feature.min, feature.max)
        fitted = np.round(fitted) if feature.type == "integer" else np.round(fitted, 4)
        return np.where(missing, np.nan, fitted)

    def _shift(self, values: dict[str, np.ndarray], drift: Drift, active: np.ndarray) -> None:
        for name in set(drift.scale) | set(drift.shift):
            moved = values[name] * drift.scale.get(name, 1.0) + drift.shift.get(name, 0.0)
            values[name] = self._fit(
                name, np.where(active, moved, values[name]), np.isnan(values[name])
            )

    @staticmethod
    def _within(values: dict[str, np.ndarray], drift: Drift) -> np.ndarray | bool:
        """Where a concept drift applies: everywhere, or inside its feature ranges."""
        inside: np.ndarray | bool = True
        for name, (low, high) in drift.within.items():
            column = values[name].astype(float)  # a missing value (NaN) is inside no range
            inside = inside & (column >= low) & (column < high)
        return inside

    def _z(self, name: str, column: np.ndarray) -> np.ndarray:
        marginal = self.world.features[name]
        assert isinstance(marginal, NumericMarginal)
        raw = np.log(np.maximum(column, 1e-9)) if marginal.dist == "lognormal" else column
        return np.nan_to_num((raw - marginal.mean) / marginal.sd, nan=0.0)

    def _logit(self, values: dict[str, np.ndarray], rng: np.random.Generator, n: int) -> np.ndarray:
        truth = self.world.truth
        noise = truth.noise * rng.standard_normal(n)
        return self._linear(values, truth, n) + noise

    def _linear(self, values: dict[str, np.ndarray], terms: Truth | Drift, n: int) -> np.ndarray:
        """intercept + coefficients x z(feature) + category effects: the truth, or a change."""
        total = np.full(n, terms.intercept)
        for name, coef in terms.coefficients.items():
            total += coef * self._z(name, values[name])
        for name, effects in terms.categories.items():
            for value, effect in effects.items():
                total += effect * (values[name] == value)
        return total
