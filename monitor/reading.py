"""What the report reads: labelled examples (from Kafka or a file), a challenger's shadow
predictions, and drift events."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
from pydantic import ValidationError

from loanstream.config import KafkaSettings
from loanstream.contracts import DriftEvent
from loanstream.errors import LoanStreamError
from loanstream.progress import progress_bar
from loanstream.reading import read_topic
from loanstream.topics import DRIFT_EVENTS, LABELLED, MONITOR_STATE, SHADOW_PREDICTIONS
from monitor.state import SavedState, read_saved

COLUMNS = ("application_id", "event_time", "outcome_time", "probability", "decision")
MORE = ("model_name", "model_version", "label")


def labelled_frame(records: list[dict[str, Any]]) -> pd.DataFrame:
    """One row per LabelledExample record, its features flattened into columns."""
    keep = [r for r in records if isinstance(r.get("features"), dict) and "label" in r]
    base = pd.DataFrame([{k: r.get(k) for k in (*COLUMNS, *MORE)} for r in keep])
    features = pd.DataFrame([r["features"] for r in keep])
    frame = pd.concat([base, features], axis=1) if len(keep) else base
    if len(frame):
        for column in ("event_time", "outcome_time"):
            frame[column] = pd.to_datetime(frame[column], utc=True, format="ISO8601")
        frame["model_version"] = frame["model_version"].astype(str)
    return frame


def read_labelled(kafka: KafkaSettings, max_rows: int | None = None) -> pd.DataFrame:
    with progress_bar() as bar:
        task = bar.add_task("reading loan.labelled", total=None)

        def progress(read: int, total: int) -> None:
            bar.update(task, completed=read, total=min(total, max_rows or total))

        records = read_topic(
            kafka, kafka.topic(LABELLED), max_rows=max_rows, timeout_s=600, on_progress=progress
        )
    return labelled_frame(records)


SHADOW_COLUMNS = ("application_id", "model_version", "probability", "decision")


def shadow_frame(records: list[dict[str, Any]]) -> pd.DataFrame:
    """One row per shadow prediction record (what the comparison needs); others are skipped."""
    keep = [
        r for r in records if all(isinstance(r.get(k), (str, int, float)) for k in SHADOW_COLUMNS)
    ]
    frame = pd.DataFrame(
        [{k: r[k] for k in SHADOW_COLUMNS} for r in keep], columns=list(SHADOW_COLUMNS)
    )
    frame["model_version"] = frame["model_version"].astype(str)
    return frame


def read_shadow(kafka: KafkaSettings, max_rows: int | None = None) -> pd.DataFrame:
    """The challengers' shadow predictions on loan.shadow-predictions."""
    records = read_topic(kafka, kafka.topic(SHADOW_PREDICTIONS), max_rows=max_rows, timeout_s=600)
    return shadow_frame(records)


def labelled_frame_from_file(path: Path) -> pd.DataFrame:
    """Labelled rows saved as Parquet or CSV (columns as in ``labelled_frame``)."""
    if not path.exists():
        raise LoanStreamError(f"no such file: {path}")
    if path.suffix == ".parquet":
        frame = pd.read_parquet(path)
    elif path.suffix == ".csv":
        frame = pd.read_csv(path)
    else:
        raise LoanStreamError(f"expected a .parquet or .csv file, got {path.name}")
    for column in ("event_time", "outcome_time"):
        if column in frame:
            frame[column] = pd.to_datetime(frame[column], utc=True, format="ISO8601")
    return frame


def read_drift_events(kafka: KafkaSettings) -> list[DriftEvent]:
    events = []
    for record in read_topic(kafka, kafka.topic(DRIFT_EVENTS), timeout_s=60):
        try:
            events.append(DriftEvent.model_validate(record))
        except ValidationError:
            continue
    return events


def read_state(kafka: KafkaSettings, app_id: str) -> SavedState:
    """The newest snapshot this monitor app wrote to loan.monitor-state (see monitor.state)."""
    latest: dict[bytes, bytes] = {}
    for key, value in read_topic(
        kafka,
        kafka.topic(MONITOR_STATE),
        timeout_s=60,
        parse=lambda key, value: (key, value) if key else None,
    ):
        latest[key] = value  # b"": a tombstone
    return read_saved(latest, app_id)
