"""LoanStream's shared package: config, feature spec, event contracts, topics, Kafka helpers,
the local broker and the CLI. Every service (producer, scorer, monitor, trainer) depends on it,
never on another service."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # not imported at run time: see score
    import pandas as pd

    from loanstream.spec import FeatureSpec

__version__ = "0.1.0"


def score(
    frame: pd.DataFrame,
    model_version: str | None = None,
    spec: str | Path | FeatureSpec | None = None,
) -> pd.DataFrame:
    """Score a pandas DataFrame of applications with the serving model (the registry's
    champion, or ``model_version``), as ``loanstream score FILE`` does: one row per input row,
    in order, with the id, probability, decision, reasons and model version, or the reason in
    ``error`` for a row the spec refuses. ``spec``: a path or FeatureSpec (default: loan).

    The scorer is imported here, on call, not at the top: this shared package sits below the
    services, which import it; importing the scorer (MLflow, scikit-learn) when it loads would
    make every service pay for it and turn the layering upside down."""
    from scorer.files import score as score_with_scorer

    return score_with_scorer(frame, model_version=model_version, spec=spec)
