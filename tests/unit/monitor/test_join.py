"""The join of predictions with late outcomes, in either order, with its two TTLs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from loanstream.contracts import Decision, LabelledExample, Outcome, Prediction
from monitor.join import Joiner, RecentKeys, labelled

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


def joiner(
    predictions: dict[str, bytes] | None = None,
    outcomes: dict[str, bytes] | None = None,
    parsed_size: int = 100,
) -> Joiner:
    return Joiner(
        {} if predictions is None else predictions,
        {} if outcomes is None else outcomes,
        label_ttl=timedelta(days=100),
        orphan_ttl=timedelta(minutes=10),
        parsed_size=parsed_size,
    )


def test_joins_in_either_order_and_carries_everything_retraining_needs() -> None:
    j = joiner()
    assert j.on_prediction(prediction(1)) is None
    first = j.on_outcome(outcome(1, 30, label=0), T0)
    assert j.on_outcome(outcome(2, 31), T0) is None  # before its prediction: it waits
    second = j.on_prediction(prediction(2))
    assert first is not None and second is not None
    assert (first.application_id, first.label, first.probability) == ("a1", 0, 0.8)
    assert first.features == {"income": 50_000.0}
    assert first.outcome_time == T0 + timedelta(days=30)
    assert second.label == 1 and second.model_version == "1"
    counts = j.counts()
    assert (counts.joined, counts.pending, counts.orphans_waiting) == (2, 0, 0)


def test_duplicates_of_either_side_are_counted_never_joined_twice() -> None:
    j = joiner()
    j.on_prediction(prediction(1))
    j.on_prediction(prediction(1))  # the scorer redelivered it
    assert j.on_outcome(outcome(1, 5), T0) is not None
    assert j.on_prediction(prediction(1)) is None  # after the join
    assert j.on_outcome(outcome(1, 5), T0) is None
    assert (j.counts().joined, j.counts().duplicates, j.counts().pending) == (1, 3, 0)


def test_a_prediction_expires_when_the_label_clock_passes_its_ttl() -> None:
    j = joiner()
    j.on_prediction(prediction(1, day=0))
    j.on_prediction(prediction(2, day=50))
    j.on_outcome(outcome(3, 100), T0)  # label clock at day 100: nothing older than day 0 yet
    assert j.expire(T0).expired == 0
    j.on_outcome(outcome(4, 101), T0)  # day 101: a1 (day 0) is past 100 days, a2 is not
    counts = j.expire(T0)
    assert (counts.expired, counts.pending) == (1, 1)
    assert list(j._parsed) == ["a2"]  # the parsed copy went with it
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
    before.on_prediction(prediction(1, day=0))
    before.on_prediction(prediction(2, day=20))
    before.on_outcome(outcome(3, 5), T0)
    after = joiner(predictions, outcomes)  # a restart: same (changelogged) stores
    after.restore(T0)
    joined = after.on_outcome(outcome(2, 40), T0)
    assert joined is not None and joined.application_id == "a2"
    assert after.on_prediction(prediction(3)) is not None
    after.on_outcome(outcome(9, 101), T0)
    assert after.expire(T0).expired == 1  # a1, found again in the store after the restart


def test_recent_keys_forget_the_oldest() -> None:
    keys = RecentKeys(2)
    for k in ("a", "b", "a", "c"):
        keys.add(k)
    assert "a" not in keys and "b" in keys and "c" in keys


def test_a_labelled_example_is_the_validated_contract() -> None:
    p, o = prediction(1), outcome(1, 30, label=0)
    fast = labelled(p, o)
    validated = LabelledExample(
        application_id="a1",
        event_time=T0,
        outcome_time=T0 + timedelta(days=30),
        features={"income": 50_000.0},
        probability=0.8,
        decision=Decision.APPROVE,
        model_name="m",
        model_version="1",
        label=0,
    )
    assert fast == validated
    assert fast.model_fields_set == validated.model_fields_set
    assert fast.to_json() == validated.to_json()  # what loan.labelled carries
    assert LabelledExample.from_json(fast.to_json()) == validated
    with pytest.raises(ValidationError, match="frozen"):
        fast.label = 1  # type: ignore[misc]


def counting_parses(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    parsed: list[bytes] = []
    parse = Prediction.from_json.__func__  # type: ignore[attr-defined]

    def from_json(cls: type[Prediction], data: bytes | str) -> Prediction:
        parsed.append(data if isinstance(data, bytes) else data.encode())
        return parse(cls, data)

    monkeypatch.setattr(Prediction, "from_json", classmethod(from_json))
    return parsed


def test_a_join_reuses_the_parsed_prediction_and_parses_what_it_did_not_keep(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    parsed = counting_parses(monkeypatch)
    j = joiner(parsed_size=2)
    for i in (1, 2, 3):  # a1 is pushed out of the two kept parsed
        j.on_prediction(prediction(i, day=i))
    joined = [j.on_outcome(outcome(i, 40), T0) for i in (3, 2, 1)]
    assert parsed == [prediction(1, day=1).to_json()]  # a1 alone came back from the store
    assert joined == [labelled(prediction(i, day=i), outcome(i, 40)) for i in (3, 2, 1)]


def test_after_a_rebalance_the_store_is_believed_not_the_parsed_copy() -> None:
    store: dict[str, bytes] = {}
    j = joiner(store)
    j.on_prediction(prediction(1))
    store["a1"] = prediction(1, day=3).to_json()  # written by the partition's other owner
    j.restore(T0)
    joined = j.on_outcome(outcome(1, 30), T0)
    assert joined is not None and joined.event_time == T0 + timedelta(days=3)
