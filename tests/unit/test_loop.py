"""The story of a closed-loop run, told from its records (loop.story)."""

from datetime import UTC, datetime, timedelta

from loanstream.contracts import DriftEvent, DriftSignal, ModelUpdate, RetrainRequest
from loop.story import Labelled, Scored, position_of, summarize

T0 = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)  # the stream starts; 100 applications a second
MANIFEST = {
    "first_event_time": "2025-01-01T00:00:00+00:00",
    "interval_s": 60.0,
    "drifts": [{"start_position": 1000, "start_event_time": "2025-01-01T16:40:00+00:00"}],
}


def at(position: int) -> datetime:
    return T0 + timedelta(seconds=position / 100)


def event(signal: DriftSignal, position: int) -> DriftEvent:
    return DriftEvent(
        event_id=f"{signal.value}-{position}",
        signal=signal,
        detector="adwin",
        statistic=1.0,
        threshold=0.5,
        window_size=100,
        first_position=1,
        confirmed_position=2,
        first_event_time=T0,
        confirmed_event_time=T0,
        model_name="m",
        model_version="1",
        detected_at=at(position),
    )


def update(version: str, position: int) -> ModelUpdate:
    return ModelUpdate(
        model_name="m",
        version=version,
        run_id="r",
        model_uri="models:/m/1",
        sha256="0" * 64,
        promoted_at=at(position),
    )


def test_positions_come_from_synthetic_ids_only() -> None:
    assert position_of("app-7-000012345") == 12345
    assert position_of("LN-2024-000017") is None
    assert position_of("app-7-12a") is None


def test_the_summary_places_each_moment_at_the_application_the_scorer_had_reached() -> None:
    # v1 scores 0..1799, v2 from 1800 on; a data-drift event first (not a model alarm), then
    # the concept drift confirmed while application 1,150 was scored
    scored = [Scored(p, "1" if p < 1800 else "2", at(p).timestamp()) for p in range(2500)]
    labelled = [
        Labelled(p, "1" if p < 1800 else "2", 0.9, 1 if p < 1000 or p % 2 else 0)
        for p in range(0, 2500, 10)
    ]
    request = RetrainRequest(
        request_id="r",
        model_name="m",
        reason="drift",
        requested_by="monitor",
        requested_at=at(1151),
    )
    summary = summarize(
        MANIFEST,
        [event(DriftSignal.CONCEPT, 1150), event(DriftSignal.DATA, 1100)],
        [request],
        [update("1", 0), update("2", 1700)],
        scored,
        labelled,
    )
    assert summary.drift_position == 1000
    assert (summary.detected_position, summary.detected_signal) == (1150, "concept")
    assert summary.retrain_requested_position == 1151
    assert (summary.promoted_version, summary.promoted_position) == ("2", 1700)
    assert summary.first_served_position == 1800
    assert summary.stale_scored == 800  # 1000..1799
    assert summary.scored_by_version == {"1": 1800, "2": 700}
    assert summary.drift_events == {"concept": 1, "data": 1}
    assert [(p.name, p.model_version, p.count, p.accuracy) for p in summary.phases] == [
        ("before the drift", "1", 100, 1.0),
        ("after the drift, old model", "1", 80, 0.0),  # labels at positions ending in 0: even
        ("after the drift, new model", "2", 70, 0.0),
    ]


def test_a_run_without_a_promotion_says_so() -> None:
    scored = [Scored(p, "1", at(p).timestamp()) for p in range(2000)]
    summary = summarize(MANIFEST, [], [], [update("1", 0)], scored, [])
    assert summary.detected_position is None
    assert summary.promoted_version is None and summary.first_served_position is None
    assert summary.stale_scored == 1000
    assert [p.name for p in summary.phases] == ["before the drift", "after the drift, old model"]
