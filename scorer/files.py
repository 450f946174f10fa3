"""Score a table of applications (a CSV or Parquet file, or a DataFrame) with the serving model.

The stream's own core does the work: each chunk is checked against the spec by
``loanstream.frames.check_frame`` (the validator's rules and messages, vectorised) and the good
rows are scored by ``scorer.core.score_batch`` with the registry's champion (or a version asked
for), loaded as the scorer loads it: verified against the registry's sha256, trusted types
only, compiled where that agrees with scikit-learn. So a file gives the probabilities,
decisions and reasons the stream would have given. Rows that fail the checks are not dropped:
they stay in the output, in file order, with no probability and the reason in ``error``.
A file without the spec's event-time column is scored as of now (only reports read that time).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from loanstream.contracts import LoanApplication, Prediction
from loanstream.errors import LoanStreamError
from loanstream.files import HistoryWriter, read_chunks
from loanstream.frames import ROW, check_frame
from loanstream.models import LoadedModel, registered, registry_client
from loanstream.spec import CategoricalFeature, FeatureSpec, load_spec
from scorer.core import score_batch, typical_values
from scorer.settings import ScorerSettings

logger = logging.getLogger(__name__)

CHUNK_ROWS = 10_000
PROBABILITY, DECISION, VERSION, ERROR = "probability", "decision", "model_version", "error"
REASONS, REASON_TEXT = "reasons", "reason_text"


@dataclass(frozen=True)
class Scored:
    """One chunk scored: the output rows, and how many were scored and refused."""

    frame: pd.DataFrame
    scored: int
    invalid: int


def serving_model(settings: ScorerSettings, version: str | None = None) -> LoadedModel:
    """The registry's champion of ``settings.model_name`` (or ``version``), loaded verified and
    compiled as the scorer loads it."""
    from scorer.watcher import load_compiled  # MLflow and the loader: only when a model is asked

    uri = settings.resolved_tracking_uri()
    chosen = registered(registry_client(uri), settings.model_name, version)
    if chosen is None:
        what = f"version {version}" if version else "champion"
        raise LoanStreamError(
            f"model {settings.model_name} has no {what} in {uri}: train one (`loanstream train`) "
            "or register one (`loanstream model register`)"
        )
    return load_compiled(chosen.uri, uri, chosen.sha256, chosen.name, chosen.version)


def applications(good: pd.DataFrame, spec: FeatureSpec) -> list[LoanApplication]:
    """Checked rows as applications, each value as the validator would have made it."""
    columns = []
    for feature in spec.features:
        column = good[feature.name]
        if isinstance(feature, CategoricalFeature):
            columns.append(column.tolist())
        elif feature.type == "integer":  # NaN is the one value not equal to itself
            columns.append([None if v != v else int(v) for v in column.to_numpy(float).tolist()])
        else:
            columns.append([None if v != v else v for v in column.to_numpy(float).tolist()])
    names = spec.feature_names
    times = good[spec.event_time_column].dt.to_pydatetime().tolist()
    return [
        LoanApplication.trusted(
            application_id=key, event_time=at, features=dict(zip(names, values, strict=True))
        )
        for key, at, values in zip(
            good[spec.id_column].tolist(), times, zip(*columns, strict=True), strict=True
        )
    ]


def reason_names(prediction: Prediction) -> str:
    """The reasons' features, most important first, comma-separated (names hold no comma)."""
    return ", ".join(r.feature for r in prediction.reasons)


def reason_words(prediction: Prediction) -> str:
    """The reasons in words (each feature's description in the spec, else its name), separated
    by " | " since a description may hold commas and semicolons."""
    return " | ".join(getattr(r, "text", None) or r.feature for r in prediction.reasons)


def score_chunk(
    model: LoadedModel,
    chunk: pd.DataFrame,
    spec: FeatureSpec,
    typical: dict[str, Any] | None = None,
    now: datetime | None = None,
) -> Scored:
    """``chunk``'s rows in order: id, probability, decision, reasons (feature names, and in
    words), model version, and the reason a row was refused in ``error`` ("" when scored)."""
    now = now or datetime.now(UTC)
    chunk = chunk.reset_index(drop=True)
    if ROW not in chunk:
        chunk[ROW] = np.arange(len(chunk))
    if spec.event_time_column not in chunk:
        chunk[spec.event_time_column] = now
    checked = check_frame(chunk, spec)
    predictions = score_batch(
        model, applications(checked.good, spec), now, now, typical=typical, spec=spec
    )
    out = pd.DataFrame(
        {
            spec.id_column: [p.application_id for p in predictions],
            PROBABILITY: pd.Series([p.probability for p in predictions], dtype=float),
            DECISION: [p.decision.value for p in predictions],
            REASONS: [reason_names(p) for p in predictions],
            REASON_TEXT: [reason_words(p) for p in predictions],
            VERSION: model.version,
            ERROR: "",
            ROW: checked.good[ROW].to_numpy(),
        }
    )
    if checked.rejections:
        where = {row: i for i, row in enumerate(chunk[ROW].tolist())}
        rows = [where[r.row] for r in checked.rejections]
        bad = pd.DataFrame(
            {
                spec.id_column: chunk[spec.id_column].iloc[rows].astype("string").tolist(),
                PROBABILITY: np.nan,
                DECISION: "",
                REASONS: "",
                REASON_TEXT: "",
                VERSION: model.version,
                ERROR: [f"{r.reason}: {r.error}" for r in checked.rejections],
                ROW: [r.row for r in checked.rejections],
            }
        )
        out = pd.concat([out, bad], ignore_index=True).sort_values(ROW, kind="stable")
    frame = out.drop(columns=ROW).reset_index(drop=True)
    return Scored(frame, len(predictions), len(checked.rejections))


def score_frame(model: LoadedModel, frame: pd.DataFrame, spec: FeatureSpec) -> pd.DataFrame:
    """Every row of ``frame`` scored (or refused, with the reason in ``error``), in order."""
    typical = typical_values(model.reference)
    parts = [
        score_chunk(model, frame.iloc[at : at + CHUNK_ROWS], spec, typical).frame
        for at in range(0, max(len(frame), 1), CHUNK_ROWS)
    ]
    return pd.concat(parts, ignore_index=True)


@dataclass(frozen=True)
class FileSummary:
    rows: int
    scored: int
    invalid: int
    model_name: str
    model_version: str
    decisions: dict[str, int] = field(default_factory=dict)  # scored rows by decision


def score_file(
    source: Path,
    out: Path,
    model: LoadedModel,
    spec: FeatureSpec,
    on_rows: Callable[[int], None] = lambda n: None,
    chunk_rows: int = CHUNK_ROWS,
) -> FileSummary:
    """Score ``source`` into ``out`` (CSV or Parquet by its suffix), chunk by chunk."""
    if source.resolve() == out.resolve():
        raise LoanStreamError(f"--out {out} is the input file: choose another")
    typical = typical_values(model.reference)
    writer = HistoryWriter(out)
    scored = invalid = rows = 0
    decisions: Counter[str] = Counter()
    try:
        for chunk in read_chunks(source, chunk_rows):
            result = score_chunk(model, chunk, spec, typical)
            writer.write(result.frame)
            decisions.update(result.frame["decision"].dropna().tolist())
            scored, invalid = scored + result.scored, invalid + result.invalid
            rows += len(chunk)
            on_rows(len(chunk))
    finally:
        writer.close()
    return FileSummary(rows, scored, invalid, model.name, model.version, dict(decisions))


def score(
    frame: pd.DataFrame,
    model_version: str | None = None,
    spec: str | Path | FeatureSpec | None = None,
    settings: ScorerSettings | None = None,
) -> pd.DataFrame:
    """``frame`` scored by the serving model (see ``loanstream.score``)."""
    feature_spec = spec if isinstance(spec, FeatureSpec) else load_spec(spec)
    model = serving_model(settings or ScorerSettings(), model_version)
    return score_frame(model, frame, feature_spec)
