"""The soak benchmark's judgement of its samples (bench.soak), on seeded synthetic series."""

import numpy as np
import pytest

from bench.soak import (
    Offsets,
    Sample,
    judge,
    lag,
    lag_trend,
    memory_trend,
    parent_and_ticks,
    rss_mib,
)

TIMES = [10.0 * i for i in range(181)]  # 30 minutes, a sample every 10 s
WARMUP = 120.0


def noisy(level: float, slope_per_s: float, seed: int) -> list[float]:
    noise = np.random.default_rng(seed).normal(0, 2.0, len(TIMES))
    return [level + slope_per_s * t + e for t, e in zip(TIMES, noise, strict=True)]


def test_a_flat_series_is_flat() -> None:
    trend = memory_trend(TIMES, noisy(300.0, 0.0, seed=1), WARMUP)
    assert trend is not None
    assert trend.flat
    assert abs(trend.growth_pct) < 1.0
    assert abs(trend.slope_mib_per_h) < 5.0


def test_a_growing_series_is_not_flat_and_its_slope_is_measured() -> None:
    trend = memory_trend(TIMES, noisy(300.0, 60.0 / 3600, seed=2), WARMUP)  # 60 MiB an hour
    assert trend is not None
    assert not trend.flat
    assert trend.slope_mib_per_h == pytest.approx(60.0, abs=1.0)
    # 169 samples after the warm-up; the first fifth (34) centres on 285 s, the last on 1635 s
    assert trend.first_mib == pytest.approx(300 + 285 / 60, abs=1.0)
    assert trend.last_mib == pytest.approx(300 + 1635 / 60, abs=1.0)
    assert trend.growth_pct > 5.0


def test_the_slope_is_exact_on_a_noiseless_line() -> None:
    trend = memory_trend(TIMES, [100.0 + 0.01 * t for t in TIMES], WARMUP)
    assert trend is not None
    assert trend.slope_mib_per_h == pytest.approx(36.0)
    assert (trend.first_mib, trend.last_mib) == pytest.approx((102.85, 116.35))
    assert trend.growth_pct == pytest.approx(13.5 / 102.85 * 100)
    assert not trend.flat


def test_the_warm_up_is_left_out() -> None:
    """A start-up climb that levels off by the end of the warm-up is flat."""
    climb = [min(400.0, 100.0 + 3 * t) for t in TIMES]  # 400 MiB from 100 s on
    trend = memory_trend(TIMES, climb, WARMUP)
    assert trend is not None
    assert trend.flat
    assert trend.slope_mib_per_h == pytest.approx(0.0)
    assert not memory_trend(TIMES, climb, 0.0).flat  # type: ignore[union-attr]


def test_too_few_samples_give_no_verdict() -> None:
    assert memory_trend([0.0], [100.0], WARMUP) is None
    assert lag_trend([], [], WARMUP, 100) is None


def test_lag_sums_high_watermark_minus_committed_over_partitions() -> None:
    partitions = [Offsets(0, 100, 90), Offsets(50, 80, 80), Offsets(20, 70, -1001)]
    assert lag(partitions) == 10 + 0 + 50  # never committed: counted from the low watermark
    assert lag([]) == 0


def test_a_lag_that_drains_after_its_peak_is_bounded() -> None:
    lags = [max(0.0, 20_000 - 100 * t) for t in TIMES]  # start-up backlog, then caught up
    trend = lag_trend(TIMES, lags, WARMUP, floor=1500)
    assert trend is not None
    assert trend.peak == 20_000
    assert trend.last_mean == 0
    assert trend.bounded


def test_a_small_steady_lag_is_bounded_and_a_growing_one_is_not() -> None:
    steady = lag_trend(TIMES, [1000 + e for e in noisy(0, 0, seed=3)], WARMUP, floor=1500)
    growing = lag_trend(TIMES, [5.0 * t for t in TIMES], WARMUP, floor=1500)
    assert steady is not None and steady.bounded
    assert growing is not None and not growing.bounded
    assert growing.slope_per_min == pytest.approx(300.0)
    assert growing.peak == 9000


def test_proc_parsing() -> None:
    status = "Name:\tpython\nVmPeak:\t 900 kB\nVmRSS:\t  204800 kB\nThreads:\t4\n"
    assert rss_mib(status) == 200.0
    assert rss_mib("Name:\tkthreadd\n") == 0.0
    stat = "4242 (odd ) name) S 17 4242 4242 0 -1 4194560 1 0 0 0 250 50 3 1 20 0 4 0 9 0"
    assert parent_and_ticks(stat) == (17, 300)


def test_judge_names_what_grows() -> None:
    samples = [
        Sample(
            t, {"scorer": a, "monitor": b}, {"scorer": t / 2}, {"scorer:applications": 100}, 0, 0, 0
        )
        for t, a, b in zip(TIMES, noisy(300, 0, seed=4), noisy(300, 0.02, seed=5), strict=True)
    ]
    drained = Sample(1810.0, {"scorer": 900.0}, {}, {"scorer:applications": 0}, 0, 0, 0)
    verdict = judge([*samples, drained], WARMUP, floor=1500, notes=["a note"], until_s=1800)
    assert verdict.memory["scorer"].flat  # type: ignore[union-attr]  # the drain is left out
    assert not verdict.memory["monitor"].flat  # type: ignore[union-attr]
    assert verdict.notes[0].startswith("memory grows in monitor (+")
    assert verdict.notes[1:] == ["every consumer group keeps up", "a note"]
    assert verdict.cores["scorer"] == pytest.approx(0.5)
    memory, lags = verdict.tables().values()
    assert [row[0] for row in memory] == ["process", "scorer", "monitor"]
    assert memory[2][-1] == "growing" and lags[1][-1] == "bounded"
