"""A small real model for scorer tests (logistic unless asked), trained by the trainer on seeded
data."""

from __future__ import annotations

from loanstream.models import LoadedModel
from tests.trainer_data import history
from trainer.data import labelled_frame, time_split
from trainer.train import TrainingOptions, train


def small_model(
    version: str = "1", seed: int = 2, shuffle: bool = False, candidate: str = "logistic"
) -> LoadedModel:
    frame, spec = history(6000, seed=seed)
    good, _ = labelled_frame(frame, spec)
    result = train(
        time_split(good, spec),
        spec,
        TrainingOptions(
            seed=seed, candidates=(candidate,), search_candidates=2, shuffle_labels=shuffle
        ),
    )
    return LoadedModel(
        result.model,
        "loan-repayment",
        version,
        "0" * 64,
        result.bands,
        result.reference,
        spec.feature_names,
    )
