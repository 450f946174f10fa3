"""Training data: from a history file or from loan.labelled by event-time window, checked
against the spec, and split by time (train on older, validate and test on newer)."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pandas as pd

from loanstream.config import KafkaSettings
from loanstream.errors import InvalidRecord, LoanStreamError
from loanstream.files import read_chunks
from loanstream.frames import check_frame, require_columns
from loanstream.reading import read_topic
from loanstream.spec import FeatureSpec
from loanstream.topics import LABELLED
from trainer.labelled import WindowRows

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Split:
    train: pd.DataFrame
    calibrate: pd.DataFrame  # fits the calibrator
    validate: pd.DataFrame  # chooses calibration method and model
    test: pd.DataFrame  # the most recent: reported, and where champion meets challenger


def load_file(
    path: Path,
    spec: FeatureSpec,
    on_rows: Callable[[int], None] = lambda n: None,
) -> tuple[pd.DataFrame, int]:
    """(usable rows with a 0/1 label, rows dropped) from a Parquet or CSV history, by chunks."""
    columns = [spec.id_column, spec.event_time_column, *spec.feature_names, spec.target_column]
    parts, dropped = [], 0
    for chunk in read_chunks(path):
        good, bad = labelled_frame(chunk, spec)
        parts.append(good[columns])
        dropped += bad
        on_rows(len(chunk))
    if not parts:
        raise LoanStreamError(f"{path} holds no rows")
    return pd.concat(parts, ignore_index=True), dropped


def labelled_frame(rows: pd.DataFrame, spec: FeatureSpec) -> tuple[pd.DataFrame, int]:
    """Keep rows that pass the spec and carry a 0/1 label; return them and the count dropped."""
    require_columns(spec, list(rows.columns), (spec.target_column,))
    checked = check_frame(rows, spec)
    good = checked.good
    labels = pd.to_numeric(good[spec.target_column], errors="coerce")
    keep = labels.isin([0, 1])
    good = good[keep].copy()
    good[spec.target_column] = labels[keep].astype(int)
    return good, len(checked.rejections) + int((~keep).sum())


TEST_SHARE = VALIDATE_SHARE = 0.15


def rows_to_train(min_rows: int) -> int:
    """How many labelled rows a window needs so that its training split holds ``min_rows``."""
    return math.ceil(round(min_rows / (1 - TEST_SHARE - VALIDATE_SHARE), 6))  # 700/0.7 is 1000


def time_split(
    frame: pd.DataFrame,
    spec: FeatureSpec,
    test: float = TEST_SHARE,
    validate: float = VALIDATE_SHARE,
) -> Split:
    """Oldest rows train; the newer validation share is halved into calibrate and validate."""
    ordered = frame.sort_values(spec.event_time_column, kind="stable").reset_index(drop=True)
    n = len(ordered)
    n_test, n_valid = int(n * test), int(n * validate)
    train_end = n - n_test - n_valid
    calib_end = train_end + n_valid // 2
    return Split(
        ordered.iloc[:train_end],
        ordered.iloc[train_end:calib_end],
        ordered.iloc[calib_end : n - n_test],
        ordered.iloc[n - n_test :],
    )


def read_labelled(
    kafka: KafkaSettings,
    spec: FeatureSpec,
    start: datetime | None,
    end: datetime | None,
    max_rows: int,
    on_invalid: Callable[[bytes | None, bytes, InvalidRecord], None] | None = None,
    latest: datetime | None = None,
    timeout_s: float = 60.0,
) -> pd.DataFrame:
    """The newest ``max_rows`` valid LabelledExamples whose event time is in [start, end), read
    from loan.labelled; a record that breaks the contract or the spec, or is dated after
    ``latest``, goes to ``on_invalid``.

    Records are stamped with their outcome time, which is never before the event time, so
    ``offsets_for_times(start)`` is a safe place to begin each partition: nothing before it can
    belong to the window. Reading stops at the end offsets seen when the read began. Memory
    holds ``max_rows`` rows whatever the window: a larger window keeps its newest rows, the
    most like what the model will score.
    """
    topic = kafka.topic(LABELLED)
    begin_ms = int(start.timestamp() * 1000) if start else 0
    rows = WindowRows(spec, start, end, max_rows, on_invalid or _skip, latest)
    read_topic(kafka, topic, begin_ms, timeout_s=timeout_s, parse=rows)
    logger.info(
        "read %d labelled examples in the window from %s (%d invalid, skipped)",
        rows.in_window,
        topic,
        rows.invalid,
    )
    if rows.dropped:
        logger.warning(
            "the window holds %d labelled rows, more than max_training_rows: training on the "
            "newest %d",
            rows.in_window,
            max_rows,
        )
    return rows.frame()


def _skip(key: bytes | None, value: bytes, error: InvalidRecord) -> None:
    logger.warning("skipped an invalid labelled example: %s", error.reason)
