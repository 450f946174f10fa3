"""Per-segment performance drift: exact positions on seeded streams, none on stable ones."""

from __future__ import annotations

import json
import random

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
    assert found == [("small", 0.1, 19_631, 24_050)]  # the CUSUM left zero just before onset


def test_a_segment_miscalibrated_from_the_start_is_learnt_not_reported() -> None:
    found = run(SegmentMonitor(), stream(100_000, seed=3, drop=0.08, onset=0))
    assert found == []


def test_a_hostile_number_of_segments_shares_one_overflow_state() -> None:
    monitor = SegmentMonitor(max_segments=3)
    for i in range(100):
        monitor.update(f"s{i}", 0.8, 1, i)
    assert sorted(monitor.segments) == [OTHER, "s0", "s1", "s2"]
    assert monitor.update(None, 0.8, 0, 101) is None


def test_state_round_trips_through_json() -> None:
    events = list(stream(60_000, seed=2, drop=0.15))
    straight = run(SegmentMonitor(), iter(events))
    before = SegmentMonitor()
    run(before, iter(events[:21_000]))
    after = SegmentMonitor.from_dict(json.loads(json.dumps(before.to_dict())))
    rest = [(s, e, f, c + 0) for s, e, f, c in run(after, iter(events[21_000:]))]
    assert [(s, e, f, c + 21_000) for s, e, f, c in rest] == straight


def test_bad_settings_are_refused_with_the_value() -> None:
    with pytest.raises(ValueError, match="got 1"):
        SegmentMonitor(target_run_length=1)
