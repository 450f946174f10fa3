"""Replay a history file into Kafka in event-time order, checked against a feature spec.

Bad rows go to a rejection report (CSV: row, reason, error) and to the dead-letter topic, and
are counted; good rows become applications stamped with their event time, and their outcomes
follow at the label time (a label-time column, or a fixed delay).
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import orjson
import pandas as pd

from loanstream.config import KafkaSettings
from loanstream.contracts import DeadLetter
from loanstream.files import read_chunks, sorted_chunks
from loanstream.frames import ROW, Rejection, check_frame, require_columns
from loanstream.kafka.clients import IdempotentProducer
from loanstream.spec import FeatureSpec
from loanstream.topics import DEAD_LETTER
from producer.emitter import EmitSummary, Emitter, Pacing
from producer.metrics import ProducerMetrics
from producer.outcomes import OUTCOME_TIME

LABEL_TIME = "_label_time"


@dataclass
class ReplaySummary:
    rows: int = 0
    rejected: int = 0
    skipped_by_window: int = 0
    by_reason: dict[str, int] = field(default_factory=dict)
    emitted: EmitSummary | None = None
    rejections_path: Path | None = None


@dataclass(frozen=True)
class ReplayOptions:
    pacing: Pacing
    start: datetime | None = None
    end: datetime | None = None
    label_time_column: str | None = None  # default: OUTCOME_TIME if the file has it
    label_delay: timedelta | None = None
    chunk_rows: int = 50_000
    wait_for_outcomes: bool = True


class RejectionLog:
    """Writes each rejection to the report file and the dead-letter topic."""

    def __init__(self, path: Path, kafka: KafkaSettings, source: str) -> None:
        self.path = path
        self.kafka = kafka
        self.source = source
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = path.open("w", newline="")
        self._csv = csv.writer(self._file)
        self._csv.writerow(["row", "reason", "error"])
        self._dead = IdempotentProducer(kafka)

    def add(self, rejection: Rejection, raw: pd.Series, id_column: str) -> None:
        self._csv.writerow([rejection.row, rejection.reason, rejection.error])
        key = raw.get(id_column)
        value = orjson.dumps(
            {k: v for k, v in raw.items() if k != ROW},
            default=str,
            option=orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY,
        )
        letter = DeadLetter.of(
            source_topic=self.source,
            partition=-1,
            offset=rejection.row,
            key=None if pd.isna(key) else str(key).encode()[:256],
            value=value,
            reason=rejection.reason,
            error=rejection.error,
            service="replay",
            raw=self.kafka.dead_letter_raw,
        )
        self._dead.produce(self.kafka.topic(DEAD_LETTER), letter.key(), letter.to_json())

    def close(self) -> None:
        self._file.close()
        self._dead.flush()


def replay(
    path: Path,
    spec: FeatureSpec,
    kafka: KafkaSettings,
    options: ReplayOptions,
    metrics: ProducerMetrics,
    rejections_path: Path,
    on_rows: Callable[[int], None] = lambda n: None,
) -> tuple[ReplaySummary, bool]:
    """Replay ``path``; return (summary, interrupted)."""
    header = next(read_chunks(path, rows=1))
    require_columns(spec, list(header.columns))
    label_time = _label_time_column(header, spec, options)
    summary = ReplaySummary(rejections_path=rejections_path)
    emitter = Emitter(
        kafka,
        spec,
        options.pacing,
        metrics,
        label_time=LABEL_TIME if label_time or options.label_delay else None,
    )
    log = RejectionLog(rejections_path, kafka, source=f"file:{path.name}")
    interrupted = False
    try:
        for chunk in sorted_chunks(path, spec.event_time_column, options.chunk_rows):
            summary.rows += len(chunk)
            checked = check_frame(chunk, spec)
            by_row = chunk.set_index(ROW)
            for rejection in checked.rejections:
                log.add(rejection, by_row.loc[rejection.row], spec.id_column)
                summary.by_reason[rejection.reason] = summary.by_reason.get(rejection.reason, 0) + 1
                metrics.rejected.labels(rejection.reason).inc()
            summary.rejected += len(checked.rejections)
            good = _window(checked.good, spec, options, summary)
            good = _with_label_time(good, spec, label_time, options.label_delay)
            emitter.emit(good)
            metrics.rate.set(emitter.summary.rate)
            on_rows(len(chunk))
    except KeyboardInterrupt:
        interrupted = True
    finally:
        log.close()
    summary.emitted = emitter.finish(options.wait_for_outcomes and not interrupted)
    return summary, interrupted


def _label_time_column(
    header: pd.DataFrame, spec: FeatureSpec, options: ReplayOptions
) -> str | None:
    if spec.target_column not in header.columns:
        return None  # no labels in the file: applications only
    if options.label_time_column:
        require_columns(spec, list(header.columns), (options.label_time_column,))
        return options.label_time_column
    if options.label_delay is None and OUTCOME_TIME in header.columns:
        return OUTCOME_TIME
    return None


def _window(
    good: pd.DataFrame, spec: FeatureSpec, options: ReplayOptions, summary: ReplaySummary
) -> pd.DataFrame:
    times = good[spec.event_time_column]
    keep = pd.Series(True, index=good.index)
    if options.start is not None:
        keep &= times >= pd.Timestamp(options.start).tz_convert("UTC")
    if options.end is not None:
        keep &= times < pd.Timestamp(options.end).tz_convert("UTC")
    summary.skipped_by_window += int((~keep).sum())
    return good[keep]


def _with_label_time(
    good: pd.DataFrame, spec: FeatureSpec, column: str | None, delay: timedelta | None
) -> pd.DataFrame:
    if column is None and delay is None:
        return good
    good = good.copy()
    if column is not None:
        good[LABEL_TIME] = pd.to_datetime(good[column], utc=True, errors="coerce", format="mixed")
    else:
        good[LABEL_TIME] = good[spec.event_time_column] + delay
    if spec.target_column in good:
        labels = pd.to_numeric(good[spec.target_column], errors="coerce")
        good[LABEL_TIME] = good[LABEL_TIME].where(labels.isin([0, 1]))
    return good
