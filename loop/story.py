"""What a run of the live services did (the demo, ``backtest --through-kafka``), read back from
their topics: where the drift was injected, when it was detected, when a retrain was requested
and a new model promoted and served, how many applications a stale model scored, and the
accuracy before and after. (The event-time engine tells its own story: ``loop.results``.)

Pure: the records come in as contracts and light rows, so the demo, the Kafka backtest and the
tests share one summary. Application positions come from the synthetic ids
(``app-<seed>-<position>``) or, for a lender's own history, from the caller's id -> position map
(the backtest's). Without a manifest (no known onset) the stale count and the accuracy
stretches start at the detection.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from loanstream.contracts import DriftEvent, DriftSignal, ModelUpdate, RetrainRequest

# The signals that say the model itself is wrong now (not only that inputs moved).
PERFORMANCE_SIGNALS = (DriftSignal.CONCEPT, DriftSignal.PERFORMANCE)


@dataclass(frozen=True)
class Scored:
    """One prediction, reduced to what the summary needs."""

    position: int
    model_version: str
    scored_at: float  # epoch seconds, wall clock


@dataclass(frozen=True)
class Labelled:
    position: int
    model_version: str
    probability: float
    label: int


@dataclass(frozen=True)
class Phase:
    """Realized accuracy (repaid predicted when p >= 0.5) of one stretch of the stream."""

    name: str
    model_version: str
    count: int
    accuracy: float | None


@dataclass(frozen=True)
class LoopSummary:
    drift_position: int | None  # the first application of the injected drift
    drift_event_time: str | None
    # Moments, as the application the scorer had reached then (wall clock beside them).
    detected_position: int | None
    detected_signal: str | None
    detected_by: str | None
    detected_at: str | None
    confirmed_on_event_time: str | None  # the event time of the outcome that confirmed it
    retrain_requested_position: int | None
    retrain_requested_at: str | None
    promoted_version: str | None
    promoted_position: int | None
    promoted_at: str | None
    first_served_position: int | None  # the first application the new model scored
    stale_scored: int | None  # applications after the drift still scored by the old model
    scored: int
    scored_by_version: dict[str, int]
    drift_events: dict[str, int]  # by signal
    phases: list[Phase]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def position_of(application_id: str) -> int | None:
    """The position in a synthetic stream, from an id ``app-<seed>-<position>``."""
    head, _, tail = application_id.rpartition("-")
    return int(tail) if head.startswith("app-") and tail.isdigit() else None


def reached_at(scored: list[Scored], moment: datetime | None) -> int | None:
    """How far the stream had been scored at ``moment`` (wall clock): the position of the last
    of the applications scored by then, counting them, since partitions progress unevenly and
    the furthest one alone runs ahead of the stream."""
    if moment is None:
        return None
    cutoff = moment.timestamp()
    done = sum(1 for s in scored if s.scored_at <= cutoff)
    return done - 1 if done else None


def accuracy(rows: list[Labelled]) -> float | None:
    if not rows:
        return None
    return sum((r.probability >= 0.5) == (r.label == 1) for r in rows) / len(rows)


def summarize(
    manifest: dict[str, Any],
    events: list[DriftEvent],
    requests: list[RetrainRequest],
    updates: list[ModelUpdate],
    scored: list[Scored],
    labelled: list[Labelled],
) -> LoopSummary:
    """The story of one run: ``updates`` in the order they were published (the first is the
    champion the run started with)."""
    drifts = [d for d in manifest.get("drifts", []) if d.get("within_run", True)]
    onset = drifts[0]["start_position"] if drifts else None
    alarms = sorted(
        (e for e in events if e.signal in PERFORMANCE_SIGNALS),
        key=lambda e: e.confirmed_event_time,
    )
    alarm = alarms[0] if alarms else None
    request = min(requests, key=lambda r: r.requested_at) if requests else None
    start_version = updates[0].version if updates else None
    promoted = next((u for u in updates[1:] if u.version != start_version), None)
    detected = reached_at(scored, alarm.detected_at if alarm else None)
    cut = onset if onset is not None else detected
    served = sorted(s.position for s in scored if promoted and s.model_version == promoted.version)
    first_served = served[0] if served else None
    stale = None
    if cut is not None:
        end = first_served if first_served is not None else float("inf")
        stale = sum(1 for s in scored if cut <= s.position < end)
    return LoopSummary(
        drift_position=onset,
        drift_event_time=drifts[0]["start_event_time"] if drifts else None,
        detected_position=detected,
        detected_signal=alarm.signal.value if alarm else None,
        detected_by=alarm.detector if alarm else None,
        detected_at=alarm.detected_at.isoformat() if alarm else None,
        confirmed_on_event_time=alarm.confirmed_event_time.isoformat() if alarm else None,
        retrain_requested_position=reached_at(scored, request.requested_at if request else None),
        retrain_requested_at=request.requested_at.isoformat() if request else None,
        promoted_version=promoted.version if promoted else None,
        promoted_position=reached_at(scored, promoted.promoted_at if promoted else None),
        promoted_at=promoted.promoted_at.isoformat() if promoted else None,
        first_served_position=first_served,
        stale_scored=stale,
        scored=len({s.position for s in scored}),
        scored_by_version=dict(Counter(s.model_version for s in scored)),
        drift_events=dict(Counter(e.signal.value for e in events)),
        phases=phases(labelled, cut, start_version, promoted.version if promoted else None),
    )


def phases(
    labelled: list[Labelled], onset: int | None, old: str | None, new: str | None
) -> list[Phase]:
    """Accuracy before the drift, after it with the old model, and with the new model."""
    cut = onset if onset is not None else float("inf")

    def rows(after: bool, version: str | None) -> list[Labelled]:
        return [r for r in labelled if (r.position >= cut) == after and r.model_version == version]

    stretches = [
        ("before the drift", old, rows(False, old)),
        ("after the drift, old model", old, rows(True, old)),
        ("after the drift, new model", new, rows(True, new)),
    ]
    return [
        Phase(name, version or "-", len(rows), accuracy(rows))
        for name, version, rows in stretches
        if version is not None
    ]
