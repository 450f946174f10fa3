"""What an event-time backtest found, told as a risk team asks: when each signal detected the
drift, what the loop did about it and when, how many applications a stale model scored, and
how the portfolio fared per phase with and without retraining.

Pure: a :class:`~loop.engine.Record` and the timeline in, plain data out. Every moment is an
application position (in the replayed part, event-time order) beside its event time; nothing
here reads the wall clock, so the same run gives the same ``summary.json`` byte for byte.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from loanstream.contracts import DriftSignal
from loanstream.creditrisk import gini
from loop.engine import Attempt, Known, Record, moment, ms_of
from loop.measures import risk_measures
from loop.timeline import LABEL_TIME, Timeline

PERFORMANCE_SIGNALS = frozenset({DriftSignal.CONCEPT.value, DriftSignal.PERFORMANCE.value})


@dataclass(frozen=True)
class Baseline:
    """The first champion on every replayed application: the loop without retraining."""

    probability: np.ndarray
    decision: np.ndarray
    costs: tuple[float, float, float]


def at(timeline: Timeline, ms: int | None) -> dict[str, Any] | None:
    """A moment as the last application at or before it, and its event time."""
    if ms is None:
        return None
    return {"position": timeline.position_at(ms), "event_time": moment(ms).isoformat()}


def first_at(timeline: Timeline, ms: int) -> int:
    """The first application at or after ``ms`` (a swap's first scored position)."""
    return int(np.searchsorted(timeline.app_ms, ms, "left"))


def served_from(timeline: Timeline, ms: int | None) -> dict[str, Any] | None:
    """A swap's moment: the first application the new model scores, and its event time."""
    if ms is None:
        return None
    return {"position": first_at(timeline, ms), "event_time": moment(ms).isoformat()}


def onset_of(manifest: Mapping[str, Any], timeline: Timeline) -> dict[str, Any] | None:
    """The first drift inside the replay (manifest positions are the file's; shifted here)."""
    train_rows = len(timeline.train)
    for drift in manifest.get("drifts", []):
        position = int(drift["start_position"]) - train_rows
        if 0 <= position < len(timeline.app_ms):
            ms = int(timeline.app_ms[position])
            return {"position": position, "event_time": moment(ms).isoformat(), "ms": ms}
    return None


def event_row(known: Known, timeline: Timeline, onset_ms: int | None) -> dict[str, Any]:
    e = known.event
    return {
        "signal": e.signal.value,
        "detector": e.detector,
        "feature": e.feature,
        "model_version": e.model_version,
        "statistic": e.statistic,
        "threshold": e.threshold,
        "p_value": e.p_value,
        "evidence": at(timeline, ms_of(e.first_event_time)),
        "confirmed_on": at(timeline, ms_of(e.confirmed_event_time)),
        "known": at(timeline, known.known_ms),
        "stream_positions": [e.first_position, e.confirmed_position],
        "false_alarm": onset_ms is not None and known.known_ms < onset_ms,
    }


def attempt_row(a: Attempt, timeline: Timeline) -> dict[str, Any]:
    return {
        "attempt": a.number,
        "request_id": a.request.request_id,
        "requested_by": a.request.requested_by,
        "retry": a.request.attempt,
        "reason": a.request.reason,
        "requested": at(timeline, a.requested_ms),
        "window_start": a.window.start.isoformat() if a.window.start else None,
        "window_end": a.window.end.isoformat() if a.window.end else None,
        "rows_needed": a.needed,
        "training_started": at(timeline, a.started_ms),
        "rows": a.rows,
        "result_known": at(timeline, a.done_ms),
        "version": a.version,
        "outcome": a.outcome,
        "why": a.reason,
        "challenger_auc": a.challenger_auc,
        "champion_auc": a.champion_auc,
        "challenger_gini": gini(a.challenger_auc),
        "champion_gini": gini(a.champion_auc),
        "serves_from": served_from(timeline, a.swap_ms),
        "covered_requests": len(a.covered),
    }


def predictions_frame(
    timeline: Timeline, record: Record, baseline: Baseline, id_column: str, target: str
) -> pd.DataFrame:
    """One row per replayed application: what was served, what the first champion would have
    said, the label in the file and when it was known, and whether the loop saw it."""
    replay = timeline.replay
    seen = np.zeros(len(replay), dtype=bool)
    seen[record.labelled_position] = True
    versions = np.array(record.versions, dtype=object)
    return pd.DataFrame(
        {
            "position": np.arange(len(replay)),
            "application_id": replay[id_column].to_numpy(),
            "event_time": pd.to_datetime(timeline.app_ms, unit="ms", utc=True),
            "model_version": versions[record.version_of],
            "probability": record.probability,
            "decision": record.decision,
            "first_champion_probability": baseline.probability,
            "first_champion_decision": baseline.decision,
            "label": pd.to_numeric(replay[target], errors="coerce").to_numpy(),
            "label_time": replay[LABEL_TIME].to_numpy(),
            "labelled_in_loop": seen,
        }
    )


def _stretch(
    predictions: pd.DataFrame,
    mask: np.ndarray,
    costs: Mapping[str, tuple[float, float, float]],
    baseline: Baseline | None = None,
) -> dict[str, float | None]:
    """Risk measures of the labelled rows under ``mask``: as served, or as the first champion
    would have scored them (``baseline``)."""
    rows = predictions[mask & predictions["label"].isin([0, 1]).to_numpy()]
    y = rows["label"].to_numpy(dtype=float)
    if baseline is None:
        p = rows["probability"].to_numpy(dtype=float)
        d = rows["decision"].to_numpy(dtype=object)
        c = np.array([costs[v] for v in rows["model_version"]], dtype=float).reshape(-1, 3)
    else:
        p = rows["first_champion_probability"].to_numpy(dtype=float)
        d = rows["first_champion_decision"].to_numpy(dtype=object)
        c = np.tile(np.array(baseline.costs, dtype=float), (len(rows), 1))
    return risk_measures(y, p, d, c)


def summarize(
    timeline: Timeline,
    record: Record,
    predictions: pd.DataFrame,
    baseline: Baseline,
    manifest: Mapping[str, Any],
    settings: Mapping[str, Any],
) -> dict[str, Any]:
    """Everything ``summary.json`` holds (plain data, no wall clock)."""
    onset = onset_of(manifest, timeline)
    onset_ms = onset["ms"] if onset else None
    events = sorted(
        record.events,
        key=lambda k: (k.known_ms, k.event.signal.value, k.event.detector, k.event.feature or ""),
    )
    rows = [event_row(k, timeline, onset_ms) for k in events]
    after = [k for k in events if onset_ms is None or k.known_ms >= onset_ms]
    first_version = record.versions[0]
    positions = predictions["position"].to_numpy()
    cut: int | None = None  # where "after the drift" begins: the onset, else the detection
    if onset is not None:
        cut = int(onset["position"])
    elif after:
        cut = timeline.position_at(after[0].known_ms) + 1
    stale = _stale(timeline, predictions, first_version, cut)
    by_old = predictions["model_version"].to_numpy() == first_version
    phases = {}
    if cut is not None:
        before, later = positions < cut, positions >= cut
        phases = {
            "before the drift": _stretch(predictions, before, record.costs),
            "after the drift, first champion serving": _stretch(
                predictions, later & by_old, record.costs
            ),
            "after the drift, retrained models serving": _stretch(
                predictions, later & ~by_old, record.costs
            ),
        }
    served_from = next((s[2] for s in record.swaps), None)
    compare = {}
    for name, start in (("after_drift", cut), ("after_first_served", served_from)):
        if start is None:
            continue
        mask = positions >= start
        compare[name] = {
            "from_position": int(start),
            "with_retraining": _stretch(predictions, mask, record.costs),
            "without_retraining": _stretch(predictions, mask, record.costs, baseline),
        }
    return {
        "settings": dict(settings),
        "rows": {
            "train": len(timeline.train),
            "replayed": len(timeline.app_ms),
            "rejected_by_spec": timeline.rejected,
            "outcomes_in_history": len(timeline.outcome_ms),
            "labelled_in_loop": len(record.labelled_position),
        },
        "positions": "application positions in the replayed part, event-time order",
        "onset": None if onset is None else {k: v for k, v in onset.items() if k != "ms"},
        "loop": _loop_moments(timeline, after, record, first_version),
        "detections": {
            "first_by_signal": _first_by_signal(timeline, after, onset_ms),
            "events_by_signal": dict(sorted(Counter(r["signal"] for r in rows).items())),
            "false_alarms": sum(r["false_alarm"] for r in rows),
            "events": rows,
        },
        "retraining": {
            "attempts": [attempt_row(a, timeline) for a in record.attempts],
            "promotions": sum(1 for a in record.attempts if a.outcome == "promoted"),
            "requests_covered_by_a_round_in_flight": record.covered_requests,
        },
        "served_by_version": dict(sorted(Counter(predictions["model_version"].tolist()).items())),
        "stale_scoring": stale,
        "phases": phases,
        "with_vs_without_retraining": compare,
    }


def _first_by_signal(
    timeline: Timeline, after: list[Known], onset_ms: int | None
) -> dict[str, Any]:
    """The first detection of each signal after the onset, with what it named."""
    out: dict[str, Any] = {}
    for known in after:
        e = known.event
        if e.signal.value in out:
            continue
        out[e.signal.value] = {
            "detector": e.detector,
            "feature": e.feature,
            "known": at(timeline, known.known_ms),
            "labelled_or_scored_since_onset": None
            if onset_ms is None
            else timeline.position_at(known.known_ms) - timeline.position_at(onset_ms),
        }
    return dict(sorted(out.items()))


def _loop_moments(
    timeline: Timeline, after: list[Known], record: Record, first_version: str
) -> dict[str, Any]:
    """Evidence <= confirmation <= request <= training <= promotion <= first served, for the
    first detection after the onset and the first round it led to that was promoted."""
    first = after[0] if after else None
    attempts = [a for a in record.attempts if first is None or a.requested_ms >= first.known_ms]
    request = attempts[0] if attempts else None
    promoted = next((a for a in attempts if a.outcome == "promoted"), None)
    served = next((s for s in record.swaps if promoted and s[1] == promoted.version), None)
    return {
        "detected_by": None
        if first is None
        else {
            "signal": first.event.signal.value,
            "detector": first.event.detector,
            "feature": first.event.feature,
        },
        "first_evidence": at(timeline, ms_of(first.event.first_event_time)) if first else None,
        "confirming_application": at(timeline, ms_of(first.event.confirmed_event_time))
        if first
        else None,
        "confirmed": at(timeline, first.known_ms) if first else None,
        "retrain_requested": at(timeline, request.requested_ms) if request else None,
        "training_started": at(timeline, promoted.started_ms) if promoted else None,
        "promoted": at(timeline, promoted.done_ms) if promoted else None,
        "promoted_version": promoted.version if promoted else None,
        "first_served": served_from(timeline, served[0]) if served else None,
        "attempts_until_promotion": None if promoted is None else attempts.index(promoted) + 1,
    }


def _stale(
    timeline: Timeline, predictions: pd.DataFrame, first_version: str, cut: int | None
) -> dict[str, Any]:
    """Applications the first champion scored from the onset on, and from the first moment a
    label of the new regime could have been known."""
    if cut is None:
        return {"from_onset": None, "from_first_knowable_label": None}
    old = predictions["model_version"].to_numpy() == first_version
    positions = predictions["position"].to_numpy()
    label_times = predictions["label_time"].dropna()
    later = label_times[label_times.index >= cut]
    knowable = None
    if len(later):
        first_ms = int(later.min().value // 1_000_000)
        knowable = timeline.position_at(first_ms) + 1
    return {
        "from_onset": int((old & (positions >= cut)).sum()),
        "first_knowable_label_position": knowable,
        "from_first_knowable_label": None
        if knowable is None
        else int((old & (positions >= knowable)).sum()),
    }
