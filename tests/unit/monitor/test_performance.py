"""Windowed performance: Stats against scikit-learn, merging, count and time windows, scopes."""

from __future__ import annotations

import json
from dataclasses import astuple
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import pytest
from pydantic import TypeAdapter
from sklearn.metrics import accuracy_score, brier_score_loss, log_loss, roc_auc_score

from monitor import performance
from monitor.performance import (
    CountWindows,
    PerformanceTracker,
    Stats,
    TimeWindows,
    WindowMetrics,
    WindowResult,
    epoch_seconds,
)

DAY = timedelta(days=1)
T0 = datetime(2025, 3, 1, tzinfo=UTC)


def sample(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Probabilities from Beta(5, 2), labels drawn from them (a calibrated model), approvals."""
    rng = np.random.default_rng(seed)
    p = rng.beta(5, 2, n)
    return p, (rng.random(n) < p).astype(int), p >= 0.8


def stats_of(p: np.ndarray, y: np.ndarray, approved: np.ndarray) -> Stats:
    stats = Stats()
    for pi, yi, ai in zip(p.tolist(), y.tolist(), approved.tolist(), strict=True):
        stats.add(pi, yi, ai)
    return stats


def test_stats_match_scikit_learn() -> None:
    p, y, approved = sample(20_000, seed=3)
    p[:3] = [0.5, 0.5, np.nextafter(0.5, 0)]  # the threshold itself: p >= 0.5 predicts repaid
    stats = stats_of(p, y, approved)
    m = stats.metrics()
    assert m.count == 20_000
    assert m.accuracy == pytest.approx(accuracy_score(y, p >= 0.5), abs=1e-9)
    assert m.brier == pytest.approx(brier_score_loss(y, p), abs=1e-9)
    assert m.log_loss == pytest.approx(log_loss(y, p), abs=1e-9)
    assert m.default_rate == pytest.approx(1 - y.mean(), abs=1e-9)
    assert m.approval_rate == pytest.approx(approved.mean(), abs=1e-9)
    assert m.mean_probability == pytest.approx(p.mean(), abs=1e-9)
    assert m.auc is not None
    exact = roc_auc_score(y, p)
    assert abs(m.auc - exact) < 0.005
    # the documented bound on the histogram AUC's error holds
    pos, neg = np.array(stats.pos), np.array(stats.neg)
    assert abs(m.auc - exact) <= 0.5 * np.sum(pos * neg) / (pos.sum() * neg.sum())


def test_calibration_bins_and_ece() -> None:
    p, y, approved = sample(5_000, seed=4)
    m = stats_of(p, y, approved).metrics()
    bins = np.minimum((p * 10).astype(int), 9)
    ece = 0.0
    for got, b in zip(m.calibration, sorted(set(bins.tolist())), strict=True):
        chosen = bins == b
        assert (got.lower, got.upper, got.count) == (b / 10, (b + 1) / 10, chosen.sum())
        assert got.mean_probability == pytest.approx(p[chosen].mean(), abs=1e-12)
        assert got.observed_rate == pytest.approx(y[chosen].mean(), abs=1e-12)
        ece += chosen.sum() / len(p) * abs(p[chosen].mean() - y[chosen].mean())
    assert m.ece == pytest.approx(ece, abs=1e-12)


def test_edges_and_empty_windows() -> None:
    stats = Stats()
    stats.add(1.0, 1, True)
    stats.add(0.0, 0, False)
    m = stats.metrics()
    assert (m.accuracy, m.auc, m.calibration[-1].count, m.calibration[0].count) == (1.0, 1.0, 1, 1)
    assert m.log_loss == pytest.approx(-np.log(1 - 1e-6), abs=1e-12)  # p clipped to 1e-6
    one_class = Stats()
    one_class.add(0.7, 1, True)
    assert one_class.metrics().auc is None
    with pytest.raises(ValueError, match="at least one event"):
        Stats().metrics()
    with pytest.raises(ValueError, match=r"probability must be within \[0, 1\], got nan"):
        Stats().add(float("nan"), 1, True)
    with pytest.raises(ValueError, match="positive_weight"):
        Stats().add(0.5, 2, True)


def flat(stats: Stats) -> np.ndarray:
    return np.array(stats.vector())


def test_merge_is_associative_and_equals_one_pass() -> None:
    p, y, approved = sample(3_000, seed=5)
    parts = [stats_of(p[s], y[s], approved[s]) for s in np.array_split(np.arange(3_000), 3)]
    one_pass = stats_of(p, y, approved)
    again = [Stats.from_dict(s.to_dict()) for s in parts]
    left = parts[0].merge(parts[1]).merge(parts[2])  # (a + b) + c
    right = again[0].merge(again[1].merge(again[2]))  # a + (b + c)
    for merged in (left, right):
        assert (merged.count, merged.approved) == (one_pass.count, one_pass.approved)
        assert np.array_equal(merged.pos, one_pass.pos)  # sums of 0/1 weights: exact
        assert np.array_equal(merged.neg, one_pass.neg)
        np.testing.assert_allclose(flat(merged), flat(one_pass), rtol=1e-12, atol=0)


def closed_at(windows: CountWindows, p: np.ndarray, y: np.ndarray) -> dict[int, WindowResult]:
    closed = {}
    for i, (pi, yi) in enumerate(zip(p.tolist(), y.tolist(), strict=True)):
        result = windows.add(pi, yi, pi >= 0.8)
        if result is not None:
            closed[i] = result
    return closed


def test_tumbling_count_windows_close_every_size_events() -> None:
    p, y, _ = sample(3_500, seed=6)
    closed = closed_at(CountWindows(1_000, 1_000), p, y)
    assert list(closed) == [999, 1999, 2999]
    assert [(r.start, r.end, r.metrics.count) for r in closed.values() if r.metrics] == [
        (0, 1000, 1000),
        (1000, 2000, 1000),
        (2000, 3000, 1000),
    ]


def test_sliding_count_windows_equal_their_slice() -> None:
    p, y, _ = sample(12_000, seed=7)
    closed = closed_at(CountWindows(5_000, 1_000, scope="model_version=2"), p, y)
    assert list(closed) == [4999, 5999, 6999, 7999, 8999, 9999, 10999, 11999]
    for result in closed.values():
        assert isinstance(result.start, int) and isinstance(result.end, int)
        assert (result.scope, result.kind, result.end - result.start) == (
            "model_version=2",
            "count",
            5000,
        )
        s = slice(result.start, result.end)
        expected = stats_of(p[s], y[s], p[s] >= 0.8).metrics()
        assert result.metrics is not None
        assert result.metrics.accuracy == expected.accuracy
        assert result.metrics.brier == pytest.approx(expected.brier, rel=1e-12)
        assert result.estimate is not None  # CBPE on the same events
        assert result.estimate.accuracy == pytest.approx(
            np.mean(np.maximum(p[s], 1 - p[s])), abs=1e-12
        )
    with pytest.raises(ValueError, match="multiple of step, got 5000 and 1500"):
        CountWindows(5_000, 1_500)


def test_time_windows_take_late_labels_and_drop_beyond_retention() -> None:
    w = TimeWindows(size=2 * DAY, step=DAY, retention=5 * DAY, scope="all")
    w.add_estimate(0.9, True, T0 + timedelta(hours=1))
    w.add_estimate(0.6, False, T0 + DAY + timedelta(hours=3))
    w.add(0.9, 1, True, T0 + 6 * DAY)  # newest event: panes before Mar 2 are no longer kept
    w.add(0.6, 0, False, T0 + DAY + timedelta(hours=3))  # a late label, kept: its pane is
    w.add(0.7, 1, True, T0 + timedelta(hours=23))  # too late: Mar 1 was dropped
    assert w.late_dropped == 1
    got = [
        (r.start, r.end, r.metrics and r.metrics.count, r.estimate and r.estimate.count)
        for r in w.windows()
    ]
    assert got == [
        (T0 + DAY, T0 + 3 * DAY, 1, 1),
        (T0 + 5 * DAY, T0 + 7 * DAY, 1, None),
        (T0 + 6 * DAY, T0 + 8 * DAY, 1, None),
    ]
    with pytest.raises(ValueError, match="time zone"):
        w.add(0.5, 1, True, datetime(2025, 3, 1))
    with pytest.raises(ValueError, match="finite epoch time in seconds, got inf"):
        w.add_estimate(0.5, True, float("inf"))
    with pytest.raises(ValueError, match="retention must be at least"):
        TimeWindows(size=2 * DAY, step=DAY, retention=DAY)


def test_every_scope_drops_what_the_all_scope_drops() -> None:
    tracker = PerformanceTracker(10, 10, time_size=DAY, time_step=DAY, retention=5 * DAY)
    tracker.update(0.9, 1, True, T0, "1", "car")
    tracker.update(0.9, 1, True, T0 + 10 * DAY, "1", "medical")  # "car" sees no event after
    tracker.update(0.6, 0, True, T0 + DAY, "1", "car")  # beyond retention for every scope
    assert tracker.late_dropped == 1
    assert [(r.scope, r.start) for r in tracker.windows()] == [
        ("all", T0 + 10 * DAY),
        ("model_version=1", T0 + 10 * DAY),
        ("loan_purpose=medical", T0 + 10 * DAY),
    ]


def test_scopes_are_capped_per_dimension() -> None:
    tracker = PerformanceTracker(count_size=10, count_step=10, max_scopes=3)
    purposes = ["car", "other", "medical", "education", "(other)", None, "car", "boat"]
    for i, purpose in enumerate(purposes):
        tracker.update(0.8, 1, True, T0, str(i % 2), purpose)
    assert tracker.scopes == [
        "all",
        "model_version=0",
        "model_version=1",
        "loan_purpose=car",
        "loan_purpose=other",  # a real category, kept apart from the overflow scope
        "loan_purpose=medical",
        "loan_purpose=(other)",
    ]
    assert all(r.estimate is None for r in tracker.windows())  # no prediction was fed
    realized = {r.scope: r.metrics.count for r in tracker.windows() if r.metrics}
    assert realized["loan_purpose=(other)"] == 4  # education, "(other)", missing, boat
    assert realized["loan_purpose=car"] == 2 and realized["all"] == 8


def test_value_pairs_past_the_route_cache_count_in_the_scopes_they_share(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A hostile stream of new segment values fills the route cache; later pairs are routed by
    their (capped) scopes, so the routes stay few and every event still counts once."""
    monkeypatch.setattr(performance, "ROUTES", 2)
    tracker = PerformanceTracker(count_size=10, count_step=10, max_scopes=2)
    for i in range(50):
        tracker.update(0.8, i % 2, True, T0 + timedelta(minutes=i), "1", f"purpose-{i}")
    assert len(tracker._route_list) == 3  # purpose-0, purpose-1, then (other) for the rest
    realized = {r.scope: r.metrics.count for r in tracker.windows() if r.metrics}
    assert realized == {
        "all": 50,
        "model_version=1": 50,
        "loan_purpose=purpose-0": 1,
        "loan_purpose=purpose-1": 1,
        "loan_purpose=(other)": 48,
    }


def stream(n: int, seed: int) -> list[tuple[float, int, bool, float, str, str]]:
    """Labelled events in outcome order: event times up to 20 days out of order."""
    rng = np.random.default_rng(seed)
    p, y, approved = sample(n, seed)
    times = T0.timestamp() + np.arange(n) * 60.0 - rng.uniform(0, 20 * 86_400, n)
    purposes = rng.choice(["car", "medical", "education"], n)
    return list(
        zip(
            p.tolist(),
            y.tolist(),
            approved.tolist(),
            times.tolist(),
            ["1" if i < n // 2 else "2" for i in range(n)],
            purposes.tolist(),
            strict=True,
        )
    )


def test_tracker_state_round_trips_exactly() -> None:
    events = stream(6_000, seed=8)
    original = PerformanceTracker(1_000, 250, 2 * DAY, DAY, retention=10 * DAY)
    for p, y, a, t, v, s in events[:3_500]:
        original.update(p, y, a, t, v, s)
        original.update_estimate(p, a, t + 30.0, v, s)
    state = json.loads(json.dumps(original.to_dict()))
    restored = PerformanceTracker.from_dict(state)
    assert restored.to_dict() == original.to_dict()
    assert restored.windows() == original.windows()
    for p, y, a, t, v, s in events[3_500:]:
        assert restored.update(p, y, a, t, v, s) == original.update(p, y, a, t, v, s)
    assert restored.to_dict() == original.to_dict()
    assert restored.late_dropped == original.late_dropped > 0
    with pytest.raises(ValueError, match="format must be 1, got 7"):
        PerformanceTracker.from_dict({**state, "format": 7})


def test_tracker_closes_count_windows_per_scope() -> None:
    tracker = PerformanceTracker(count_size=2_000, count_step=1_000)
    closed: list[tuple[int, str, int]] = []
    for i, (p, y, a, t, v, s) in enumerate(stream(4_000, seed=9)):
        results = tracker.update(p, y, a, t, v, s)
        closed += [(i, r.scope, r.metrics.count) for r in results if r.metrics]
    assert [c for c in closed if c[1] in ("all", "model_version=1", "model_version=2")] == [
        (1999, "all", 2000),
        (1999, "model_version=1", 2000),
        (2999, "all", 2000),
        (3999, "all", 2000),
        (3999, "model_version=2", 2000),
    ]


def test_without_versions_every_other_scope_sees_the_same_windows() -> None:
    events = stream(5_000, seed=10)
    both = PerformanceTracker(1_000, 500, 2 * DAY, DAY, retention=10 * DAY)
    alone = PerformanceTracker(1_000, 500, 2 * DAY, DAY, retention=10 * DAY, versions=False)
    closed_both: list[WindowResult] = []
    closed_alone: list[WindowResult] = []
    for p, y, a, t, v, s in events:
        for tracker, closed in ((both, closed_both), (alone, closed_alone)):
            tracker.update_estimate(p, a, t, v, s)
            closed += tracker.update(p, y, a, t, v, s)
    assert alone.scopes == [s for s in both.scopes if not s.startswith("model_version=")]
    purposes = ["loan_purpose=education", "loan_purpose=car", "loan_purpose=medical"]
    assert alone.scopes == ["all", *purposes]

    def unversioned(results: list[WindowResult]) -> list[WindowResult]:
        return [r for r in results if not r.scope.startswith("model_version=")]

    assert len(closed_alone) == 9 + 3 * 2  # "all" every 500 from 1,000; ~1,667 per purpose
    assert closed_alone == unversioned(closed_both)
    assert alone.windows() == unversioned(both.windows())
    assert alone.late_dropped == both.late_dropped > 0


def test_the_versions_choice_survives_a_restart_and_old_states_keep_their_versions() -> None:
    tracker = PerformanceTracker(10, 10, versions=False)
    tracker.update(0.9, 1, True, T0, "3", "car")
    restored = PerformanceTracker.from_dict(json.loads(json.dumps(tracker.to_dict())))
    assert (restored.versions, restored.scopes) == (False, ["all", "loan_purpose=car"])
    restored.update(0.8, 1, True, T0, "4", "car")
    assert restored.scopes == ["all", "loan_purpose=car"]
    versioned = PerformanceTracker(10, 10)
    versioned.update(0.9, 1, True, T0, "3", "car")
    old = versioned.to_dict()
    del old["versions"]  # saved before the option existed
    scopes = PerformanceTracker.from_dict(old).scopes
    assert scopes == ["all", "model_version=3", "loan_purpose=car"]


def numbers(m: WindowMetrics) -> list[float]:
    """Every number of a window's metrics, calibration bins included."""
    head = [m.count, m.accuracy, -1.0 if m.auc is None else m.auc, m.brier, m.log_loss, m.ece]
    head += [m.default_rate, -1.0 if m.approval_rate is None else m.approval_rate]
    return head + [m.mean_probability] + [x for b in m.calibration for x in astuple(b)]


def test_buffered_tracker_equals_windows_fed_one_by_one() -> None:
    # labels 20 days out of order with a 10-day retention, so some are late; predictions too
    events = stream(7_000, seed=12)
    tracker = PerformanceTracker(1_000, 250, 2 * DAY, DAY, retention=10 * DAY, versions=False)
    counts: dict[str, CountWindows] = {}
    times: dict[str, TimeWindows] = {}
    closed, expected = [], []

    def one_by_one(scope: str, method: str, *event: Any) -> None:
        """As the tracker did before it buffered: "all" first, every scope then follows its
        clock, then the event's own scope."""
        getattr(times["all"], method)(*event)
        for clock in times.values():
            clock.advance(times["all"]._newest or 0.0)
        getattr(times[scope], method)(*event)

    for p, y, a, t, v, s in events:
        tracker.update_estimate(p, a, t + 600.0, v, s)
        closed += tracker.update(p, y, a, t, v, s)
        scope = f"loan_purpose={s}"
        for name in ("all", scope):
            if name not in counts:
                counts[name] = CountWindows(1_000, 250, name)
                times[name] = TimeWindows(2 * DAY, DAY, 10 * DAY, name)
                if times["all"]._newest is not None:
                    times[name].advance(times["all"]._newest)
        one_by_one(scope, "add_estimate", p, a, t + 600.0)
        one_by_one(scope, "add", p, y, a, t)
        for name in ("all", scope):
            result = counts[name].add(p, y, a)
            expected += [result] if result is not None else []
    # the same windows; a segment's is returned when the "all" scope's next one closes
    closed.sort(key=lambda r: (r.scope, r.start))
    expected.sort(key=lambda r: (r.scope, r.start))
    assert [(r.scope, r.start, r.end) for r in closed] == [
        (r.scope, r.start, r.end) for r in expected
    ]
    assert len(closed) == 25 + 3 * 6  # "all" every 250 from 1,000; ~2,333 per purpose
    singles = [r for clock in times.values() for r in clock.windows()]
    buffered = tracker.windows()
    assert [(r.scope, r.start) for r in buffered] == [(r.scope, r.start) for r in singles]
    for got, want in zip(closed + buffered, expected + singles, strict=True):
        for mine, theirs in ((got.metrics, want.metrics), (got.estimate, want.estimate)):
            assert (mine is None) == (theirs is None)
            if mine is not None and theirs is not None:
                assert numbers(mine) == pytest.approx(numbers(theirs), rel=1e-12, abs=1e-15)
    assert tracker.late_dropped == times["all"].late_dropped > 0


def test_a_restored_tracker_returns_the_all_scope_window_at_the_event_that_closes_it() -> None:
    events = stream(2_600, seed=13)
    tracker = PerformanceTracker(1_000, 250, versions=False)
    for event in events[:1_100]:  # restored half-way through a step of 250
        tracker.update(*event)
    restored = PerformanceTracker.from_dict(json.loads(json.dumps(tracker.to_dict())))
    closed_at = [
        i
        for i, event in enumerate(events[1_100:], start=1_100)
        if any(r.scope == "all" for r in restored.update(*event))
    ]
    assert closed_at == [1_249, 1_499, 1_749, 1_999, 2_249, 2_499]


def test_epoch_seconds_equal_timestamp_in_every_kind_of_zone() -> None:
    """The fast path (a subtraction within one fixed-offset zone) gives .timestamp() exactly;
    zones with daylight saving, naive times and non-finite numbers take the other paths."""
    rng = np.random.default_rng(11)
    zones = [
        UTC,
        timezone(timedelta(hours=5, minutes=30)),
        timezone(timedelta(hours=-8)),
        ZoneInfo("Europe/Berlin"),
    ]
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    for i in range(20_000):
        seconds = float(rng.uniform(-3e9, 8e9))
        t = (epoch + timedelta(seconds=seconds)).astimezone(zones[i % len(zones)])
        assert epoch_seconds(t) == t.timestamp(), t
    texts = (
        "2025-03-30T01:30:00.123456+05:30",
        "2025-10-26T02:30:00Z",
        "1969-12-31T23:59:59-08:00",
    )
    for text in texts:  # as parsed: the first call learns the zone, the second takes the fast path
        t = TypeAdapter(datetime).validate_json(f'"{text}"')
        assert epoch_seconds(t) == epoch_seconds(t) == t.timestamp()
    with pytest.raises(ValueError, match="time zone"):
        epoch_seconds(datetime(2025, 1, 1))
    with pytest.raises(ValueError, match="finite"):
        epoch_seconds(float("inf"))


def test_batches_equal_events_one_by_one_flushes_and_closed_windows_included() -> None:
    """Batches of estimates, then of labels, against the same calls one at a time: the same
    state (every float bit), the same windows returned, across count steps and full buffers."""
    events = stream(11_906, seed=14)
    one = PerformanceTracker(1_000, 250, 2 * DAY, DAY, retention=10 * DAY)
    batched = PerformanceTracker(1_000, 250, 2 * DAY, DAY, retention=10 * DAY)
    closed_one, closed_batched, start = [], [], 0
    for size in [1, 249, 5_000, 3, 700] * 2:  # 5,000 estimates overflow MAX_PENDING (4,096)
        chunk = events[start : start + size]
        start += size
        for p, _, a, t, v, s in chunk:
            one.update_estimate(p, a, t + 600.0, v, s)
        for p, y, a, t, v, s in chunk:
            closed_one += one.update(p, y, a, t, v, s)
        ps, ys, approved, times, versions, purposes = (list(c) for c in zip(*chunk, strict=True))
        batched.update_estimate_batch(ps, approved, [x + 600.0 for x in times], versions, purposes)
        closed_batched += batched.update_batch(ps, ys, approved, times, versions, purposes)
    assert start == len(events)
    assert closed_batched == closed_one and len(closed_one) > 100
    assert batched.to_dict() == one.to_dict()
    assert batched.late_dropped == one.late_dropped > 0


@pytest.mark.parametrize(
    ("column", "value", "message"),
    [
        (0, float("nan"), "probability must be within"),
        (0, 1.5, "probability must be within"),
        (1, 2, "label must be 0 or 1, got 2"),
        (1, ["x"], "label must be 0 or 1"),
        (3, float("inf"), "finite epoch time"),
    ],
)
def test_a_batch_with_one_bad_value_is_refused_whole(
    column: int, value: object, message: str
) -> None:
    events = stream(600, seed=15)
    tracker = PerformanceTracker(1_000, 250, 2 * DAY, DAY, retention=10 * DAY)
    tracker.update_batch(*(list(c) for c in zip(*events[:300], strict=True)))
    before = tracker.to_dict()
    columns: list[list[Any]] = [list(c) for c in zip(*events[300:], strict=True)]
    columns[column][150] = value
    with pytest.raises(ValueError, match=message):
        tracker.update_batch(*columns)
    if column != 1:
        with pytest.raises(ValueError, match=message):
            tracker.update_estimate_batch(
                columns[0], columns[2], columns[3], columns[4], columns[5]
            )
    with pytest.raises(TypeError):
        tracker.update_batch(
            [0.5, "0.5"],  # type: ignore[list-item]
            [1, 1],
            [True, True],
            [1.0, 2.0],
            ["1", "1"],
            [None, None],
        )
    with pytest.raises(ValueError, match="longer"):  # columns of different lengths
        tracker.update_batch([0.5, 0.5], [1, 1], [True, True], [1.0, 2.0], ["1"], [None, None])
    assert tracker.to_dict() == before
