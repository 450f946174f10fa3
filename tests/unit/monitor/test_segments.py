"""Per-segment performance drift: exact positions on seeded streams, none on stable ones."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest

from monitor.segments import OTHER, SegmentMonitor


def stream(n: int, seed: int, drop: float = 0.0, onset: int = 20_000, every: int = 10):
    """Two segments; from ``onset`` the small one repays ``drop`` less than promised."""
    rng = random.Random(seed)
    for i in range(n):
        segment = "small" if i % every == 0 else "large"
        p = rng.uniform(0.55, 0.97)
        q = p - drop if (segment == "small" and i >= onset) else p
        yield segment, p, int(rng.random() < q)


def run(monitor: SegmentMonitor, events) -> list[tuple[str, float, int, int]]:
    found = []
    for i, (segment, p, y) in enumerate(events):
        drift = monitor.update(segment, p, y, i)
        if drift:
            found.append(
                (drift.segment, drift.effect, drift.first_position, drift.confirmed_position)
            )
    return found


def test_a_calibrated_stream_raises_nothing_in_300000_labels() -> None:
    assert run(SegmentMonitor(), stream(300_000, seed=1)) == []


def test_a_segment_that_repays_less_is_found_once_from_its_onset() -> None:
    found = run(SegmentMonitor(), stream(60_000, seed=2, drop=0.15))
    assert found == [("small", 0.1, 19_640, 24_050)]  # the CUSUM left zero just before onset


def test_a_segment_miscalibrated_from_the_start_is_learnt_not_reported() -> None:
    found = run(SegmentMonitor(), stream(100_000, seed=3, drop=0.08, onset=0))
    assert found == []


def test_a_hostile_number_of_segments_shares_one_overflow_state() -> None:
    monitor = SegmentMonitor(max_segments=3)
    for i in range(100):
        monitor.update(f"s{i}", 0.8, 1, i)
    assert sorted(monitor.segments) == [OTHER, "s0", "s1", "s2"]
    assert monitor.update(None, 0.8, 0, 101) is None


@pytest.mark.parametrize("split", [21_000, 25_000])  # in the drift; settling after it
def test_state_round_trips_through_json(split: int) -> None:
    events = list(stream(60_000, seed=2, drop=0.15))
    straight = run(SegmentMonitor(), iter(events))
    before = SegmentMonitor()
    run(before, iter(events[:split]))
    settling = before.segments["small"].settling is not None
    assert settling == (split > 24_050)  # the drift was confirmed at 24,050
    after = SegmentMonitor.from_dict(json.loads(json.dumps(before.to_dict())))
    assert after.to_dict() == before.to_dict()
    rest = run(after, iter(events[split:]))
    assert [(s, e, f, c + split) for s, e, f, c in rest] == [x for x in straight if x[3] >= split]


def test_a_shift_whose_labels_arrive_mixed_is_reported_once() -> None:
    # a fifth of applicants repay 0.2 less from application 20,000 on; label delays spread
    # over 20,000 applications, so the labels of both levels arrive mixed for that long.
    # Learning the new level from that mix reported the shift again, at 37,351.
    rng = np.random.default_rng(0)
    n = 80_000
    small = rng.random(n) < 0.2
    p = rng.uniform(0.6, 0.95, n)
    y = rng.random(n) < np.where(small & (np.arange(n) >= 20_000), p - 0.2, p)
    order = np.argsort(np.arange(n) + rng.uniform(0, 20_000, n), kind="stable")
    monitor = SegmentMonitor(target_run_length=1_000_000)
    found = []
    for position, i in enumerate(order.tolist()):
        segment = "small" if small[i] else "large"
        drift = monitor.update(segment, float(p[i]), int(y[i]), position, float(i))
        if drift:
            found.append((drift.segment, drift.confirmed_position))
    assert found == [("small", 20_491)]
    assert monitor.segments["small"].settling is None  # settled, and watching again


def test_a_drift_past_the_segment_cap_is_reported_as_the_overflow_segment() -> None:
    monitor = SegmentMonitor(max_segments=2, target_run_length=1_000)
    found = run(monitor, ((f"s{i % 5}", 0.9, int(i < 3_000)) for i in range(8_000)))
    assert {s for s, *_ in found} == {"s0", "s1", OTHER}
    assert sorted(monitor.segments) == [OTHER, "s0", "s1"]


def test_bad_settings_are_refused_with_the_value() -> None:
    with pytest.raises(ValueError, match="got 1"):
        SegmentMonitor(target_run_length=1)
