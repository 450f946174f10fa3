"""Scored streams without a broker, for tests, the detection benchmark and backtests.

A frame of applications (the producer's generator, or a lender's history) is scored in chunks by
the model, and each row becomes the ``Prediction`` the scorer would have sent and, when the row
has a label, the ``LabelledExample`` the monitor's join would have made. Labels follow their
prediction at once, so stream positions are comparable with the generator's manifest.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta

import numpy as np
import pandas as pd

from loanstream.contracts import Decision, LabelledExample, Prediction
from loanstream.models import LoadedModel, repaid_probability
from loanstream.spec import FeatureSpec

CHUNK = 5000


@dataclass(frozen=True)
class Scored:
    """One application as the monitor sees it: its prediction and, if known, its outcome."""

    prediction: Prediction
    labelled: LabelledExample | None


def scored_stream(
    model: LoadedModel, frame: pd.DataFrame, spec: FeatureSpec, label_delay: timedelta | None = None
) -> Iterator[Scored]:
    """Score ``frame`` (in its order) and yield one ``Scored`` per row."""
    delay = label_delay or timedelta(days=30)
    for start in range(0, len(frame), CHUNK):
        chunk = frame.iloc[start : start + CHUNK]
        features = chunk[spec.feature_names]
        probability = repaid_probability(model.model, features)
        decisions = model.bands.decide_many(probability)
        times = list(pd.to_datetime(chunk[spec.event_time_column], utc=True).dt.to_pydatetime())
        ids = chunk[spec.id_column].astype(str).tolist()
        labels = chunk[spec.target_column].to_numpy() if spec.target_column in chunk else None
        records = features.astype(object).where(features.notna(), None).to_dict("records")
        for i, (p, d) in enumerate(zip(probability.tolist(), decisions.tolist(), strict=True)):
            prediction = Prediction.model_construct(
                application_id=ids[i],
                event_time=times[i],
                probability=p,
                decision=Decision(d),
                model_name=model.name,
                model_version=model.version,
                features=records[i],
                reasons=[],
                received_at=times[i],
                scored_at=times[i],
            )
            label = labels[i] if labels is not None else None
            labelled = None
            if label is not None and not (isinstance(label, float) and np.isnan(label)):
                labelled = LabelledExample.model_construct(
                    application_id=ids[i],
                    event_time=times[i],
                    outcome_time=times[i] + delay,
                    features=records[i],
                    probability=p,
                    decision=Decision(d),
                    model_name=model.name,
                    model_version=model.version,
                    label=1 if label else 0,
                )
            yield Scored(prediction, labelled)
