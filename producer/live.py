"""Synthetic applications into Kafka at a steady rate, with their outcomes later, and history
files of the same world for training and replay."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from loanstream.config import KafkaSettings
from loanstream.files import HistoryWriter
from producer.decisions import SelectiveOutcomes
from producer.emitter import EmitSummary, Emitter, Pacing
from producer.generator import Generator
from producer.metrics import ProducerMetrics
from producer.outcomes import OUTCOME_TIME

CHUNK = 1000


def produce_live(
    kafka: KafkaSettings,
    generator: Generator,
    rate: float,
    metrics: ProducerMetrics,
    count: int | None = None,
    duration_s: float | None = None,
    time_scale: float | None = None,
    wait_for_outcomes: bool = True,
    on_sent: Callable[[int], None] = lambda n: None,
    selective: SelectiveOutcomes | None = None,
) -> tuple[EmitSummary, bool]:
    """Produce until ``count`` applications or ``duration_s`` seconds; (summary, interrupted).

    ``time_scale`` (event seconds per wall second) defaults to rate x the generator's interval,
    so event time and wall time agree and a 30-day label delay takes 30 days / time_scale.
    With ``selective`` only approved and explored applications get their outcome; its decision
    feed starts (if the caller has not started it) before the first application is sent.
    """
    scale = time_scale or rate * generator.interval.total_seconds()
    emitter = Emitter(
        kafka,
        generator.spec,
        Pacing(rate=rate, time_scale=scale),
        metrics,
        label_time=OUTCOME_TIME,
        on_sent=on_sent,
        selective=selective,
    )
    try:
        if selective is not None:
            selective.start()
        interrupted = _emit(emitter, generator, metrics, count, duration_s)
        return emitter.finish(wait_for_outcomes and not interrupted), interrupted
    finally:
        if selective is not None:
            selective.close()


def _emit(
    emitter: Emitter,
    generator: Generator,
    metrics: ProducerMetrics,
    count: int | None,
    duration_s: float | None,
) -> bool:
    """Emit generated chunks until the count or the duration is reached; True if interrupted."""
    began, position = time.monotonic(), 0
    try:
        while (count is None or position < count) and (
            duration_s is None or time.monotonic() - began < duration_s
        ):
            n = CHUNK if count is None else min(CHUNK, count - position)
            emitter.emit(generator.rows(position, n))
            position += n
            metrics.rate.set(emitter.summary.rate)
    except KeyboardInterrupt:
        return True
    return False


def write_history(
    generator: Generator,
    rows: int,
    path: Path,
    on_rows: Callable[[int], None] = lambda n: None,
    chunk: int = 50_000,
) -> Path:
    """Write ``rows`` generated applications with labels and label times to Parquet or CSV."""
    writer = HistoryWriter(path)
    try:
        for start in range(0, rows, chunk):
            n = min(chunk, rows - start)
            writer.write(generator.rows(start, n))
            on_rows(n)
    finally:
        writer.close()
    return path
