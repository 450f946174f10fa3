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

import numpy as np
from sklearn.metrics import roc_auc_score

from loanstream.contracts import DriftEvent, DriftSignal, ModelUpdate, RetrainRequest
from loanstream.creditrisk import gini, ks_statistic

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
    """Realized ranking (AUC, Gini, KS) and accuracy (repaid predicted when p >= 0.5) of one
    stretch of the stream; a ranking measure is None while the stretch lacks a class."""

    name: str
    model_version: str
    count: int
    accuracy: float | None
    auc: float | None = None
    gini: float | None = None
    ks: float | None = None


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
    first_evidence_event_time: str | None = None  # the event time of the alarm's first evidence

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


def ranking(rows: list[Labelled]) -> tuple[float | None, float | None, float | None]:
    """AUC, Gini and KS of the rows' probabilities against their labels (None: one class)."""
    y = np.array([r.label for r in rows], dtype=float)
    p = np.array([r.probability for r in rows], dtype=float)
    if not 0 < y.sum() < len(y):
        return None, None, None
    auc = float(roc_auc_score(y, p))
    return auc, gini(auc), ks_statistic(y, p)


def phase_rows(phases: list[Phase]) -> list[tuple[str, str]]:
    """Each phase's ranking (AUC / Gini / KS), then its accuracy at 0.5 (which says little
    with few defaults, so it comes after).

    >>> for row in phase_rows([Phase("before the drift", "1", 900, 0.95, 0.8, 0.6, 0.45)]):
    ...     print(row)
    ('AUC / Gini / KS before the drift (v1)', '0.800 / 0.600 / 0.450 on 900')
    ('accuracy at 0.5 before the drift (v1)', '0.950 on 900')
    """
    ranking, accuracy = [], []
    for p in phases:
        where = f"{p.name} (v{p.model_version})"
        scores = " / ".join("-" if x is None else f"{x:.3f}" for x in (p.auc, p.gini, p.ks))
        ranking.append((f"AUC / Gini / KS {where}", f"{scores} on {p.count:,}"))
        value = "-" if p.accuracy is None else f"{p.accuracy:.3f}"
        accuracy.append((f"accuracy at 0.5 {where}", f"{value} on {p.count:,}"))
    return ranking + accuracy


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
        first_evidence_event_time=alarm.first_event_time.isoformat() if alarm else None,
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
        Phase(name, version or "-", len(rows), accuracy(rows), *ranking(rows))
        for name, version, rows in stretches
        if version is not None
    ]
