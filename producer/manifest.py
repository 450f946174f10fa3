"""The ground truth of a run: which drifts, where (position and event time) and how."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

from producer.generator import Generator
from producer.selective import Selection


def manifest(
    generator: Generator, rows: int, selection: Selection | None = None, **extra: Any
) -> dict[str, Any]:
    """The run's ground truth; ``selection`` is the labels mode (default: every outcome)."""
    spec, scenario = generator.spec, generator.scenario

    def at(position: int) -> str:
        return generator.event_time(position).isoformat()

    drifts = []
    for drift in scenario.drifts:
        changes = drift.model_dump(
            exclude={"kind", "start", "width", "period", "description"}, exclude_defaults=True
        )
        drifts.append(
            {
                "kind": drift.kind,
                "description": drift.description,
                "start_position": drift.start,
                "full_position": drift.start + drift.width,
                "start_event_time": at(drift.start),
                "full_event_time": at(drift.start + drift.width),
                "period": drift.period,
                "within_run": drift.start < rows,
                "changes": changes,
            }
        )
    return {
        "scenario": scenario.name,
        "description": scenario.description,
        "seed": generator.seed,
        "rows": rows,
        "spec": spec.name,
        "spec_fingerprint": spec.fingerprint,
        "first_event_time": at(0),
        "interval_s": generator.interval.total_seconds(),
        "labels": generator.labels.model_dump(),
        "selective_labels": (selection or Selection(seed=generator.seed)).manifest(),
        "drifts": drifts,
        **extra,
    }


def write_manifest(path: Path, content: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(orjson.dumps(content, option=orjson.OPT_INDENT_2, default=_default))
    return path


def _default(value: object) -> object:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"cannot write {type(value).__name__} to a manifest")
