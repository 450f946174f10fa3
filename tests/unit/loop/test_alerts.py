"""Alerts assembled from handmade records: requests, retries, results and updates linked to the
drift event they concern; filters; the JSON lines; hostile records counted and skipped."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import orjson
import pytest

from loanstream.contracts import (
    DeadLetter,
    DriftEvent,
    DriftSignal,
    ModelUpdate,
    RetrainOutcome,
    RetrainRequest,
    RetrainResult,
)
from loanstream.errors import LoanStreamError
from loanstream.topics import (
    DEAD_LETTER,
    DRIFT_EVENTS,
    MODEL_UPDATES,
    RETRAIN_REQUESTS,
    RETRAIN_RESULTS,
)
from loop.alerts import Records, Tail, as_json, assemble, parse_since, select, tell, update_line

T = datetime(2026, 3, 1, tzinfo=UTC)
KEYS = {
    "update", "event_id", "signal", "detector", "feature", "model_name", "model_version",
    "statistic", "statistic_name", "threshold", "p_value", "psi_band", "window_size",
    "first_position", "confirmed_position", "events_between", "first_event_time",
    "confirmed_event_time", "detected_at", "text", "retrain_status", "retrain_text", "requests",
    "results", "promoted_version", "promoted_update", "dead_lettered_requests", "expected_rate",
    "observed_rate",
}  # fmt: skip


def event(n: int, signal: str = "concept", hours: int = 0, **more: object) -> DriftEvent:
    detector = "adwin" if signal == "concept" else "psi[act]"
    return DriftEvent(
        event_id=f"drift-{n}",
        signal=DriftSignal(signal),
        detector=detector,
        feature=None if signal == "concept" else "income",
        statistic=12.0 if signal == "concept" else 0.3,
        threshold=9.2 if signal == "concept" else 0.1,
        p_value=1e-5,
        window_size=300,
        first_position=1000 * n,
        confirmed_position=1000 * n + 250,
        first_event_time=T,
        confirmed_event_time=T + timedelta(hours=1),
        model_name=str(more.get("model", "loan-default")),
        model_version="1",
        detected_at=T + timedelta(hours=hours),
    )


def request(n: int, attempt: int = 1) -> RetrainRequest:
    suffix = "" if attempt == 1 else f"-attempt-{attempt}"
    return RetrainRequest(
        request_id=f"retrain-drift-{n}{suffix}",
        model_name="loan-default",
        reason="concept drift",
        requested_by="monitor" if attempt == 1 else "retry-policy",
        drift_event_id=f"drift-{n}",
        attempt=attempt,
        requested_at=T,
    )


def result(
    outcome: RetrainOutcome, request_ids: list[str], minutes: int = 0, **more: object
) -> RetrainResult:
    return RetrainResult.model_validate(
        {
            "model_name": "loan-default",
            "outcome": outcome,
            "reason": "because",
            "request_ids": request_ids,
            "finished_at": T + timedelta(minutes=minutes),
            **more,
        }
    )


def update(version: str) -> ModelUpdate:
    return ModelUpdate(
        model_name="loan-default",
        version=version,
        run_id="r" * 32,
        model_uri=f"models:/loan-default/{version}",
        sha256="a" * 64,
        metrics={"auc": 0.8},
        promoted_at=T,
    )


def test_a_request_its_result_and_the_promoted_update_are_linked_to_their_event() -> None:
    promoted = result(
        RetrainOutcome.PROMOTED,
        ["retrain-drift-1"],
        challenger_version="2",
        champion_version="2",
        metrics={"auc": 0.81},
        champion_metrics={"auc": 0.74},
    )
    alerts = assemble(
        [event(1), event(2)],
        [request(1), request(2)],
        [promoted],
        [update("2"), update("3")],
    )
    assert [a.event.event_id for a in alerts] == ["drift-1", "drift-2"]
    first, second = alerts
    assert first.status == "promoted" and first.promoted == update("2")
    assert [r.request_id for r in first.requests] == ["retrain-drift-1"]
    assert second.status == "no_answer" and second.results == ()
    text = tell(first)
    assert "promoted v2 of loan-default; because; auc 0.8100 vs 0.7400" in text
    assert "serving: v2 since 2026-03-01 00:00 UTC" in text
    assert "position 1,000 (2026-03-01 00:00 UTC) -> confirmed at 1,250" in text
    assert "250 labelled events between" in text
    assert "250 predictions between" in tell(assemble([event(3, "data")], [], [], [])[0])
    assert "no answer from the trainer yet" in tell(second)


def test_retries_belong_to_their_event_and_the_newest_attempt_tells_the_status() -> None:
    lost = result(RetrainOutcome.KEPT_CHAMPION, ["retrain-drift-1"], champion_version="1")
    requests = [request(1), request(1, attempt=2)]
    (pending,) = assemble([event(1)], requests, [lost], [])
    assert [r.attempt for r in pending.requests] == [1, 2]
    assert pending.status == "no_answer"  # attempt 2 has no answer yet
    assert "earlier: kept v1 of loan-default" in tell(pending)
    waiting = result(
        RetrainOutcome.WAITING, ["retrain-drift-1-attempt-2"], 5, rows=800, rows_needed=2000
    )
    (alert,) = assemble([event(1)], list(reversed(requests)), [waiting, lost], [])
    assert [r.outcome for r in alert.results] == ["kept_champion", "waiting"]  # by finish time
    assert alert.status == "waiting"
    assert "still waiting for labels (800 of 2,000 rows)" in tell(alert)


def test_a_result_found_by_its_drift_event_id_and_no_request() -> None:
    failed = result(RetrainOutcome.FAILED, [], drift_event_ids=["drift-1"])
    (alert,) = assemble([event(1)], [], [failed], [])
    assert alert.status == "failed"
    (quiet,) = assemble([event(1)], [], [], [])
    assert quiet.status == "no_retrain"


def test_a_republished_event_counts_once_and_a_dead_lettered_request_is_told() -> None:
    alerts = assemble(
        [event(1), event(1)], [request(1), request(1)], [], [], {"retrain-drift-1": "bad window"}
    )
    assert len(alerts) == 1 and len(alerts[0].requests) == 1
    assert alerts[0].status == "dead_lettered"
    assert "the trainer refused the request: bad window" in tell(alerts[0])


def test_filters_by_time_signal_and_model() -> None:
    alerts = assemble(
        [event(1, hours=0), event(2, "data", hours=10), event(3, hours=20, model="other")],
        [],
        [],
        [],
    )
    since = T + timedelta(hours=5)
    assert [a.event.event_id for a in select(alerts, since)] == ["drift-2", "drift-3"]
    concept = [DriftSignal.CONCEPT]
    assert [a.event.event_id for a in select(alerts, signals=concept)] == ["drift-1", "drift-3"]
    assert [a.event.event_id for a in select(alerts, model="other")] == ["drift-3"]
    assert select(alerts, since, concept, "loan-default") == []


def test_since_reads_durations_and_iso_times() -> None:
    now = datetime(2026, 3, 8, tzinfo=UTC)
    assert parse_since("7d", now) == datetime(2026, 3, 1, tzinfo=UTC)
    assert parse_since("12h", now) == datetime(2026, 3, 7, 12, tzinfo=UTC)
    assert parse_since("30m", now) == datetime(2026, 3, 7, 23, 30, tzinfo=UTC)
    assert parse_since("2026-03-02T10:00", now) == datetime(2026, 3, 2, 10, tzinfo=UTC)
    with pytest.raises(LoanStreamError, match="got 'last week'"):
        parse_since("last week", now)


def test_json_lines_have_stable_keys_and_round_trip() -> None:
    kept = result(
        RetrainOutcome.KEPT_CHAMPION,
        ["retrain-drift-2"],
        challenger_version="2",
        champion_version="1",
        metrics={"auc": 0.70},
        champion_metrics={"auc": 0.74},
    )
    alerts = assemble([event(1), event(2, "data")], [request(2)], [kept], [])
    lines = [orjson.dumps(as_json(a)).decode() for a in alerts]
    first, second = (orjson.loads(line) for line in lines)
    assert set(first) == KEYS and set(second) == KEYS
    assert first["retrain_status"] == "no_retrain" and first["psi_band"] is None
    assert first["statistic_name"] == "log-likelihood ratio" and first["events_between"] == 250
    assert second["signal"] == "data" and second["psi_band"] == "act"
    assert second["retrain_status"] == "kept_champion" and second["promoted_version"] is None
    assert second["requests"] == [
        {
            "request_id": "retrain-drift-2",
            "attempt": 1,
            "requested_by": "monitor",
            "requested_at": "2026-03-01T00:00:00Z",
            "reason": "concept drift",
            "min_rows": None,
        }
    ]
    assert second["results"][0]["outcome"] == "kept_champion"
    assert second["results"][0]["champion_metrics"] == {"auc": 0.74}
    assert second["confirmed_event_time"] == "2026-03-01T01:00:00Z"
    assert as_json(alerts[0], update=True)["update"] is True


def test_hostile_records_are_counted_and_skipped() -> None:
    records = Records()
    records.add(DRIFT_EVENTS, event(1).to_json(), 0)
    records.add(DRIFT_EVENTS, b"\x80\x04\x95 pickle bytes", 1)  # never unpickled
    records.add(DRIFT_EVENTS, b'{"event_id": "x"}', 2)
    records.add(DRIFT_EVENTS, b"[1, 2]", 3)
    records.add(RETRAIN_REQUESTS, request(1).to_json(), 0)
    records.add(RETRAIN_RESULTS, b'{"outcome": "promoted", "reason": NaN}', 0)
    records.add(MODEL_UPDATES, None, 0)  # a tombstone on the compacted topic: no record
    records.add(MODEL_UPDATES, update("2").to_json(), 1)
    letter = DeadLetter.of(
        source_topic="p.loan.retrain-requests", partition=0, offset=0, key=b"loan-default",
        value=b"{}", reason="invalid", error="window_start after window_end", service="trainer",
    )  # fmt: skip
    records.add(DEAD_LETTER, letter.to_json(), 0, requests_topic="p.loan.retrain-requests")
    assert records.unreadable == {DRIFT_EVENTS: 3, RETRAIN_RESULTS: 1}
    assert records.unreadable_lines(lambda name: f"p.{name}") == [
        "3 records on p.loan.drift-events could not be read",
        "1 record on p.loan.retrain-results could not be read",
    ]
    (alert,) = records.alerts()
    assert alert.status == "dead_lettered"
    assert alert.dead_lettered == (("retrain-drift-1", "window_start after window_end"),)
    assert len(records.updates) == 1


def test_tail_prints_new_alerts_whole_and_later_results_as_updates() -> None:
    tail = Tail()
    alerts = assemble([event(1)], [request(1)], [], [])
    assert [(a.event.event_id, u) for a, u in tail.changes(alerts)] == [("drift-1", False)]
    assert tail.changes(alerts) == []  # nothing new
    promoted = result(RetrainOutcome.PROMOTED, ["retrain-drift-1"], challenger_version="2")
    later = assemble([event(1), event(2)], [request(1)], [promoted], [update("2")])
    changes = tail.changes(later)
    assert [(a.event.event_id, u) for a, u in changes] == [("drift-1", True), ("drift-2", False)]
    assert update_line(changes[0][0]) == "update drift-1: promoted v2 of loan-default; because"
