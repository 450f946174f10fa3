"""The join of predictions with late outcomes, in either order, with its two TTLs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from loanstream.contracts import Decision, Outcome, Prediction
from monitor.join import Joiner, RecentKeys

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def prediction(i: int, day: int = 0) -> Prediction:
    at = T0 + timedelta(days=day)
    return Prediction(
        application_id=f"a{i}",
        event_time=at,
        probability=0.8,
        decision=Decision.APPROVE,
        model_name="m",
        model_version="1",
        features={"income": 50_000.0},
        received_at=at,
        scored_at=at,
    )


def outcome(i: int, day: int, label: int = 1) -> Outcome:
    return Outcome(application_id=f"a{i}", label=label, outcome_time=T0 + timedelta(days=day))


def joiner(predictions: dict[str, bytes] | None = None, outcomes: dict[str, bytes] | None = None):
    return Joiner(
        {} if predictions is None else predictions,
        {} if outcomes is None else outcomes,
        label_ttl=timedelta(days=100),
        orphan_ttl=timedelta(minutes=10),
    )


def test_joins_in_either_order_and_carries_everything_retraining_needs() -> None:
    j = joiner()
    assert j.on_prediction(prediction(1), T0) is None
    first = j.on_outcome(outcome(1, 30, label=0), T0)
    assert j.on_outcome(outcome(2, 31), T0) is None  # before its prediction: it waits
    second = j.on_prediction(prediction(2), T0)
    assert first is not None and second is not None
    assert (first.application_id, first.label, first.probability) == ("a1", 0, 0.8)
    assert first.features == {"income": 50_000.0}
    assert first.outcome_time == T0 + timedelta(days=30)
    assert second.label == 1 and second.model_version == "1"
    counts = j.counts()
    assert (counts.joined, counts.pending, counts.orphans_waiting) == (2, 0, 0)


def test_duplicates_of_either_side_are_counted_never_joined_twice() -> None:
    j = joiner()
    j.on_prediction(prediction(1), T0)
    j.on_prediction(prediction(1), T0)  # the scorer redelivered it
    assert j.on_outcome(outcome(1, 5), T0) is not None
    assert j.on_prediction(prediction(1), T0) is None  # after the join
    assert j.on_outcome(outcome(1, 5), T0) is None
    assert (j.counts().joined, j.counts().duplicates, j.counts().pending) == (1, 3, 0)


def test_a_prediction_expires_when_the_label_clock_passes_its_ttl() -> None:
    j = joiner()
    j.on_prediction(prediction(1, day=0), T0)
    j.on_prediction(prediction(2, day=50), T0)
    j.on_outcome(outcome(3, 100), T0)  # label clock at day 100: nothing older than day 0 yet
    assert j.expire(T0).expired == 0
    j.on_outcome(outcome(4, 101), T0)  # day 101: a1 (day 0) is past 100 days, a2 is not
    counts = j.expire(T0)
    assert (counts.expired, counts.pending) == (1, 1)
    assert j.on_outcome(outcome(1, 102), T0) is None  # too late: it waits as an orphan


def test_an_orphan_outcome_is_dropped_after_its_ttl_of_processing_time() -> None:
    j = joiner()
    j.on_outcome(outcome(7, 3), T0)
    assert j.expire(T0 + timedelta(minutes=9)).orphans_dropped == 0
    counts = j.expire(T0 + timedelta(minutes=11))
    assert (counts.orphans_dropped, counts.orphans_waiting) == (1, 0)


def test_state_lives_in_the_stores_and_a_new_joiner_carries_on() -> None:
    predictions: dict[str, bytes] = {}
    outcomes: dict[str, bytes] = {}
    before = joiner(predictions, outcomes)
    before.on_prediction(prediction(1, day=0), T0)
    before.on_prediction(prediction(2, day=20), T0)
    before.on_outcome(outcome(3, 5), T0)
    after = joiner(predictions, outcomes)  # a restart: same (changelogged) stores
    after.restore(T0)
    joined = after.on_outcome(outcome(2, 40), T0)
    assert joined is not None and joined.application_id == "a2"
    assert after.on_prediction(prediction(3), T0) is not None
    after.on_outcome(outcome(9, 101), T0)
    assert after.expire(T0).expired == 1  # a1, found again in the store after the restart


def test_recent_keys_forget_the_oldest() -> None:
    keys = RecentKeys(2)
    for k in ("a", "b", "a", "c"):
        keys.add(k)
    assert "a" not in keys and "b" in keys and "c" in keys
