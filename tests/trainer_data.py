"""Seeded labelled histories for trainer tests, from the producer's synthetic world."""

from __future__ import annotations

import pandas as pd

from loanstream.spec import FeatureSpec, load_spec
from producer.generator import Generator
from producer.scenarios import load_scenario
from producer.world import load_world


def history(rows: int, seed: int = 1, scenario: str = "stable") -> tuple[pd.DataFrame, FeatureSpec]:
    spec = load_spec()
    frame = Generator(spec, load_world(None, spec), load_scenario(scenario), seed=seed).rows(
        0, rows
    )
    return frame, spec
