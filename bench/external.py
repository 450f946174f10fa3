"""Streams from outside the project's own world, for the detection benchmark: River's synthetic
generators SEA, STAGGER and Hyperplane, each changing concept at ``ONSET``.

Each is scored the way a lender's stream is: the project's trainer trains a calibrated model on
the generator's first concept (its own seed), with a feature spec made for the generator, and the
benchmark runs that model's predictions and the labels through the same pipeline and the same
single River detectors. Label noise keeps the calibrated probabilities away from 0 and 1, as a
credit model's are: SEA's and Hyperplane's own, 10% of STAGGER's labels flipped here. SEA and
STAGGER change concept abruptly; Hyperplane's plane starts to turn at the onset (incremental).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from functools import cache
from typing import Any

import numpy as np
import pandas as pd
from river.datasets import synth

from loanstream.models import LoadedModel
from loanstream.spec import FeatureSpec
from trainer.data import labelled_frame, time_split
from trainer.train import TrainingOptions, train

ONSET = 20_000
TRAIN_ROWS = 20_000
STAGGER_FLIP = 0.1
TRAIN_SEED = 999  # the training stream's seed: no benchmark stream uses it
HYPERPLANE_STEP = 2e-4  # per row after the onset: +1 to two weights (each within [0, 1]) by 5,000

Row = tuple[dict[Any, Any], Any]
Source = Callable[[int, int | None], Iterator[Row]]  # (seed, onset or never) -> rows


def _switch(first: Iterator[Row], second: Iterator[Row], onset: int | None) -> Iterator[Row]:
    """``first``'s rows up to ``onset``, then ``second``'s."""
    if onset is None:
        yield from first
        return
    for _ in range(onset):
        yield next(first)
    yield from second


def _sea(seed: int, onset: int | None) -> Iterator[Row]:
    # the class is x0 + x1 <= threshold: 8 before (variant 0), 7 after (variant 2)
    before = iter(synth.SEA(variant=0, noise=0.1, seed=seed))
    return _switch(before, iter(synth.SEA(variant=2, noise=0.1, seed=seed + 7919)), onset)


def _stagger(seed: int, onset: int | None) -> Iterator[Row]:
    before = iter(synth.STAGGER(classification_function=0, seed=seed))
    after = iter(synth.STAGGER(classification_function=1, seed=seed + 7919))
    flips = np.random.default_rng([seed, 1])
    letters = {"size": "sml", "color": "rgb", "shape": "sct"}  # one letter per value
    for x, y in _switch(before, after, onset):
        noisy = (not y) if flips.random() < STAGGER_FLIP else y
        yield {k: f"{k}-{letters[k][v]}" for k, v in x.items()}, noisy


def _hyperplane(seed: int, onset: int | None) -> Iterator[Row]:
    # an incremental drift: from the onset the weights of two of the five features grow by
    # HYPERPLANE_STEP per row (the generator reads mag_change at every row)
    plane = synth.Hyperplane(seed=seed, n_features=5, noise_percentage=0.1, sigma=0.0)
    for i, row in enumerate(plane):
        if i == onset:
            plane.mag_change = HYPERPLANE_STEP
        yield row


SOURCES: dict[str, tuple[Source, list[dict[str, Any]]]] = {
    "river: SEA": (
        _sea,
        [{"name": f"x{k}", "type": "numeric", "min": 0, "max": 10} for k in range(3)],
    ),
    "river: STAGGER": (
        _stagger,
        [
            {"name": k, "type": "categorical", "values": [f"{k}-{c}" for c in letters]}
            for k, letters in (("size", "sml"), ("color", "rgb"), ("shape", "sct"))
        ],
    ),
    "river: Hyperplane": (
        _hyperplane,
        [{"name": f"x{k}", "type": "numeric", "min": 0, "max": 1} for k in range(5)],
    ),
}
EXTERNAL = tuple(SOURCES)


def spec_of(name: str) -> FeatureSpec:
    return FeatureSpec(
        name=name.split(": ")[1].lower(),
        id_column="id",
        event_time_column="event_time",
        target_column="repaid",
        features=SOURCES[name][1],
    )


def rows(name: str, seed: int, n: int, onset: int | None = ONSET) -> pd.DataFrame:
    """``n`` rows of stream ``name``: its first concept, then (from ``onset``) its second."""
    source, _ = SOURCES[name]
    records = [row for _, row in zip(range(n), source(seed, onset), strict=False)]
    frame = pd.DataFrame([{str(k): v for k, v in x.items()} for x, _ in records])
    frame.columns = [c if not c.isdigit() else f"x{c}" for c in frame.columns]
    frame.insert(0, "id", [f"{name.split(': ')[1].lower()}-{seed}-{i}" for i in range(n)])
    frame.insert(1, "event_time", pd.date_range("2025-01-01", periods=n, freq="min", tz="UTC"))
    frame["repaid"] = [int(bool(y)) for _, y in records]
    return frame


@cache
def model_of(name: str) -> LoadedModel:
    """A model of the first concept, trained, calibrated and profiled by the trainer."""
    spec = spec_of(name)
    good, _ = labelled_frame(rows(name, TRAIN_SEED, TRAIN_ROWS, onset=None), spec)
    options = TrainingOptions(seed=1, candidates=("hgb",), search_candidates=2)
    result = train(time_split(good, spec), spec, options)
    return LoadedModel(
        result.model, spec.name, "1", "0" * 64, result.bands, result.reference, spec.feature_names
    )
