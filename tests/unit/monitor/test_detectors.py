"""Error-stream detectors and the confirmation of their alarms, on seeded streams."""

from __future__ import annotations

import json
import math
import random
from collections.abc import Callable

import numpy as np
import pytest
from river import drift

from monitor.detectors import (
    ConceptDrift,
    ConceptDriftMonitor,
    ErrorDetector,
    Level,
    binary_error,
    brier_excess,
    brier_loss,
    expected_error,
    log_loss,
)

ONSET = 20_000


def bits(n: int, seed: int, before: float, after: float, onset: int = 3000) -> list[tuple]:
    """A model that always says p = 0.8; the share of repaid loans jumps at ``onset``."""
    rng = random.Random(seed)
    return [(0.8, int(rng.random() < (before if i < onset else after))) for i in range(n)]


def applicants(
    n: int, seed: int, shifted: tuple[float, float] | None = None, flip: float | None = None
) -> tuple[list[float], list[int]]:
    """p ~ Beta(5, 2), y ~ Bernoulli(p); from ONSET on, p ~ Beta(*shifted) (covariate shift)
    and/or 45% of applicants repay with p * flip instead (concept drift)."""
    rng = np.random.default_rng(seed)
    p = rng.beta(5, 2, n)
    if shifted is not None:
        p[ONSET:] = rng.beta(*shifted, n - ONSET)
    q = p.copy()
    if flip is not None:
        segment = rng.random(n - ONSET) < 0.45
        q[ONSET:][segment] *= flip
    return p.tolist(), (rng.random(n) < q).astype(int).tolist()


def mixed(n: int, seed: int, share: Callable[[np.ndarray], np.ndarray]) -> tuple[list, list]:
    """p ~ Beta(5, 2); a ``share(i)`` of applicants at position i repay with p / 4 instead."""
    rng = np.random.default_rng(seed)
    p = rng.beta(5, 2, n)
    drifted = rng.random(n) < share(np.arange(n))
    y = rng.random(n) < np.where(drifted, p * 0.25, p)
    return p.tolist(), y.astype(int).tolist()


def drifts(monitor: ConceptDriftMonitor, p: list[float], y: list[int]) -> list[ConceptDrift]:
    return [found for a, b in zip(p, y, strict=True) if (found := monitor.update(a, b))]


def arriving(
    p: list[float], y: list[int], delays: float, seed: int
) -> tuple[list[float], list[int], list[float]]:
    """The events in the order their labels arrive, each ``U(0, delays)`` positions after its
    application; the event time of each is its application's position."""
    rng = np.random.default_rng(seed)
    order = np.argsort(np.arange(len(p)) + rng.uniform(0, delays, len(p)), kind="stable")
    return [p[i] for i in order], [y[i] for i in order], order.astype(float).tolist()


def timed_drifts(
    monitor: ConceptDriftMonitor, p: list[float], y: list[int], t: list[float]
) -> list[ConceptDrift]:
    events = zip(p, y, t, strict=True)
    return [found for a, b, s in events if (found := monitor.update(a, b, s))]


def drift_alarms(detector: ErrorDetector, stream: list[tuple]) -> list[tuple[int, int]]:
    alarms = (detector.update(p, y) for p, y in stream)
    return [(a.position, a.since) for a in alarms if a and a.level is Level.DRIFT]


def test_encodings_on_a_known_stream() -> None:
    stream = [(0.9, 1), (0.9, 0), (0.2, 0), (0.2, 1), (0.5, 1), (0.5, 0), (1.0, 0), (0.0, 0)]
    assert [binary_error(p, y) for p, y in stream] == [0, 1, 0, 1, 0, 1, 1, 0]
    assert [brier_loss(p, y) for p, y in stream] == pytest.approx(
        [0.01, 0.81, 0.04, 0.64, 0.25, 0.25, 1.0, 0.0]
    )
    right = [0.9, 0.1, 0.8, 0.2, 0.5, 0.5, 0.001, 1.0]  # probability of the outcome, clipped
    assert [log_loss(p, y) for p, y in stream] == pytest.approx(
        [math.log(q) / math.log(0.001) for q in right]
    )
    assert [expected_error(p) for p, _ in stream] == pytest.approx(
        [0.1, 0.1, 0.2, 0.2, 0.5, 0.5, 0.0, 0.0]
    )
    # the excess Brier loss spans [0, 1] and, when the model is right, averages the same 1/9
    # whatever p is: a covariate shift leaves its level alone
    assert (brier_excess(0.75, 1), brier_excess(0.0, 1), brier_excess(1.0, 0)) == (0.0, 1.0, 1.0)
    for p in (0.0, 0.1, 0.5, 0.75, 0.97, 1.0):
        assert p * brier_excess(p, 1) + (1 - p) * brier_excess(p, 0) == pytest.approx(1 / 9)


@pytest.mark.parametrize(
    ("kind", "params", "expected"),
    [
        ("adwin", {}, [(3103, 3103)]),
        ("ddm", {}, [(4125, 3484)]),
        ("eddm", {"beta": 0.7, "alpha": 0.75}, [(4096, 3798)]),
        ("hddm_a", {"drift_confidence": 1e-4, "warning_confidence": 5e-4}, [(3051, 3045)]),
        ("hddm_w", {"drift_confidence": 1e-4, "warning_confidence": 5e-4}, [(3035, 3033)]),
    ],
)
def test_each_detector_fires_once_when_errors_rise_and_never_when_they_fall(
    kind: str, params: dict[str, float], expected: list[tuple[int, int]]
) -> None:
    # errors 20% -> 60% at 3000: the one alarm (and the warning before it) comes after 3000
    assert drift_alarms(ErrorDetector(kind, params), bits(6000, 11, 0.8, 0.4)) == expected
    # errors 60% -> 20%: a wrong encoding (1 = correct) would fire here instead
    assert drift_alarms(ErrorDetector(kind, params), bits(6000, 11, 0.4, 0.8)) == []


def test_adwin_alarms_on_falling_errors_are_dropped() -> None:
    stream = bits(6000, 12, 0.4, 0.8)
    raw, fired = drift.ADWIN(), []
    for i, (p, y) in enumerate(stream):
        raw.update(brier_loss(p, y))
        if raw.drift_detected:
            fired.append(i)
    assert fired == [3103]  # River's ADWIN fires when the Brier loss falls too
    detector = ErrorDetector("adwin")
    assert [a for a in map(detector.update, *zip(*stream, strict=True)) if a] == []


def test_a_warning_is_reported_at_its_onset_and_dates_the_drift() -> None:
    detector = ErrorDetector("hddm_a", {"drift_confidence": 1e-4, "warning_confidence": 5e-4})
    alarms = [a for a in map(detector.update, *zip(*bits(6000, 11, 0.8, 0.4), strict=True)) if a]
    assert [(a.level, a.position) for a in alarms] == [
        (Level.WARNING, 3045),
        (Level.DRIFT, 3051),
    ]
    assert alarms[1].since == 3045


def test_rewinding_restores_the_pre_drift_reference_so_a_persistent_drift_alarms_again() -> None:
    stream = bits(6000, 11, 0.8, 0.4)
    rewound, restarted = ErrorDetector("adwin"), ErrorDetector("adwin")
    for i, (p, y) in enumerate(stream[:3104]):
        if i in (1000, 2000):
            rewound.checkpoint()
        assert rewound.update(p, y) == restarted.update(p, y)  # both alarm at 3103
    rewound.rewind()  # back to position 1000's state
    restarted.rewind()  # no checkpoint: a plain restart, blind to the new, steady error level
    assert drift_alarms(rewound, stream[3104:]) == [(3191, 3191)]
    assert drift_alarms(restarted, stream[3104:]) == []


def test_detector_state_round_trips_through_json() -> None:
    stream = bits(6000, 11, 0.8, 0.4)
    original = ErrorDetector("hddm_w", {"drift_confidence": 1e-4, "warning_confidence": 5e-4})
    for p, y in stream[:3034]:  # warned at 3033, the drift alarm comes at 3035
        original.update(p, y)
    original.checkpoint()
    restored = ErrorDetector.from_dict(json.loads(json.dumps(original.to_dict())))
    assert restored.to_dict() == original.to_dict()
    assert drift_alarms(restored, stream[3034:]) == drift_alarms(original, stream[3034:])
    assert drift_alarms(restored, []) == []


def test_bad_detector_configuration_says_what_was_expected() -> None:
    with pytest.raises(ValueError, match=r"detector kind must be one of .*got 'kswin'"):
        ErrorDetector("kswin")
    with pytest.raises(ValueError, match=r"ddm reads one of \['error'\] encodings, got 'brier'"):
        ErrorDetector("ddm", encoding="brier")
    assert ErrorDetector("adwin", encoding="log_loss").name == "adwin:log_loss"


def test_monitor_confirms_a_concept_drift_soon_after_onset_and_not_before() -> None:
    p, y = applicants(30_000, seed=5, flip=0.25)
    [found] = drifts(ConceptDriftMonitor(), p, y)
    assert (found.alarm_position, found.confirmed_position, found.window_size) == (
        20_113,
        20_140,
        27,
    )
    assert found.detector == "adwin" and found.first_position == found.alarm_position
    assert found.statistic >= found.threshold == pytest.approx(math.log(100))
    assert found.p_value == pytest.approx(math.exp(-found.statistic)) and found.p_value <= 0.01
    assert found.observed_error_rate > found.expected_error_rate + 0.2


def test_monitor_rejects_raw_alarms_on_a_stable_stream() -> None:
    p, y = applicants(100_000, seed=6)
    sensitive = ErrorDetector("hddm_w", {"drift_confidence": 0.01, "warning_confidence": 0.05})
    monitor = ConceptDriftMonitor([sensitive])
    assert drifts(monitor, p, y) == []
    assert (monitor.stats.raw_alarms, monitor.stats.unconfirmed, monitor.stats.confirmed) == (
        159,
        141,  # the other 18 came while a confirmation window was open
        0,
    )
    assert monitor.stats.false_alarm_rate == pytest.approx(141 / 100_000)


def test_monitor_rejects_a_covariate_shift_that_raises_the_error_rate() -> None:
    # Beta(5, 2) -> Beta(2, 2): applicants nearer 0.5, the error rate rises from ~24% to ~35%,
    # but the model stays right about each of them
    p, y = applicants(60_000, seed=7, shifted=(2.0, 2.0))
    monitor = ConceptDriftMonitor()
    assert drifts(monitor, p, y) == []
    assert (monitor.stats.raw_alarms, monitor.stats.unconfirmed) == (3, 3)
    # ADWIN on the plain Brier loss sees the error level move and alarms (in vain) more often
    plain = ConceptDriftMonitor([ErrorDetector("adwin", encoding="brier")])
    assert drifts(plain, p, y) == []
    assert (plain.stats.raw_alarms, plain.stats.unconfirmed) == (13, 13)


def test_a_miscalibrated_but_stable_model_does_not_confirm() -> None:
    # the model errs 4 points more often than it thinks, everywhere and all the time
    rng = np.random.default_rng(8)
    p = rng.beta(5, 2, 100_000)
    y = (rng.random(p.size) < np.where(p >= 0.5, p - 0.04, p + 0.04)).astype(int)
    sensitive = ErrorDetector("hddm_w", {"drift_confidence": 0.01, "warning_confidence": 0.05})
    monitor = ConceptDriftMonitor([sensitive])
    assert drifts(monitor, p.tolist(), y.tolist()) == []
    assert monitor.stats.raw_alarms == 199


@pytest.mark.parametrize("restart_after", [1, 3, 10])
def test_a_rejected_drift_alarms_again_until_its_level_is_accepted(restart_after: int) -> None:
    p, y = applicants(30_000, seed=5, flip=0.25)
    # nothing confirms in 200 events at this alpha
    monitor = ConceptDriftMonitor(alpha=1e-20, max_looks=1, restart_after=restart_after)
    assert drifts(monitor, p[:ONSET], y[:ONSET]) == []
    assert monitor.stats.raw_alarms == 1  # a false alarm long before, rejected
    assert drifts(monitor, p[ONSET:], y[ONSET:]) == []
    # the drift alarms at 20,113; each rejection rewinds the detectors to their pre-drift
    # reference, so it alarms again, until restart_after rejections in a row restart them at
    # the new level: no more alarms
    assert monitor.stats.raw_alarms == monitor.stats.unconfirmed == 1 + restart_after


def test_a_slowly_growing_error_is_not_absorbed_as_miscalibration() -> None:
    # from 20,000 on, the share of drifted applicants grows from 0 to 45% over 10,000 events
    p, y = mixed(40_000, 11, lambda i: 0.45 * np.clip((i - ONSET) / 10_000, 0, 1))
    monitor = ConceptDriftMonitor()
    assert drifts(monitor, p[:ONSET], y[:ONSET]) == []
    before = monitor.to_dict()
    [found] = drifts(monitor, p[ONSET:23_865], y[ONSET:23_865])
    # the alarms at 21,643 and 23,269 were rejected, each rewinding the detectors, which
    # alarmed again as the error grew; the bias stayed what the warm-up measured (restarting
    # the detectors after the second rejection, with a running bias, confirmed only at 27,845,
    # the bias risen to 0.073)
    assert (found.alarm_position, found.confirmed_position) == (23_621, 23_864)
    assert monitor.stats.unconfirmed == 2
    assert before["bias"] == pytest.approx(-0.0056, abs=1e-4) and found.bias == 0.0


def test_a_recurring_stress_is_confirmed_each_time_it_starts() -> None:
    # stressed regimes in [10,000, 20,000) and [30,000, 40,000); none fires when one ends
    p, y = mixed(50_000, 12, lambda i: np.where((i // 10_000) % 2 == 1, 0.45, 0.0))
    monitor = ConceptDriftMonitor()
    assert drifts(monitor, p[:30_000], y[:30_000])[0].confirmed_position == 10_069
    # the bias measured after the first confirmation (and its ~600 events of settling) is the
    # stressed one; the lower recent excess takes its place, or the second stress would pass as
    # miscalibration
    state = monitor.to_dict()
    assert (round(state["bias"], 3), round(state["recent"], 3)) == (0.205, 0.024)
    [found] = drifts(monitor, p[30_000:], y[30_000:])
    assert (found.confirmed_position, round(found.bias, 3)) == (30_065, 0.026)


@pytest.mark.parametrize(
    ("seed", "positions", "settling"),
    [(0, [9_372, 30_105, 50_702], 12_624), (2, [10_255, 30_065, 50_762], 12_657)],
)
def test_a_drift_whose_labels_arrive_mixed_is_confirmed_once_per_onset(
    seed: int, positions: list[int], settling: int
) -> None:
    # stressed regimes from 10,000 and 30,000 (application positions), label delays spread
    # over 5,000 applications: for that long after each onset the labels of both regimes arrive
    # mixed. A monitor restarted on that still-tipping mix confirmed the same onset again: seed
    # 0 five times in all (9,372, 13,182, 30,105, 32,296, 50,702), seed 2 six times. With
    # settling alone, seed 2 confirmed once more at 34,760, on an alarm 445 events into its new
    # bias: an alarm is now judged with a wider tolerance while the bias is young.
    p, y = mixed(60_000, seed, lambda i: np.where((i // 10_000) % 2 == 1, 0.45, 0.0))
    monitor = ConceptDriftMonitor()
    found = timed_drifts(monitor, *arriving(p, y, 5000, seed))
    assert [d.confirmed_position for d in found] == positions
    # each time it waited until 95% of the labels were for applications after the window
    assert monitor.stats.settling == settling
    assert not monitor.settling


def test_without_event_times_settling_lasts_its_minimum() -> None:
    p, y = applicants(30_000, seed=5, flip=0.25)
    monitor = ConceptDriftMonitor()
    assert [d.confirmed_position for d in drifts(monitor, p[:20_141], y[:20_141])] == [20_140]
    assert monitor.settling
    assert drifts(monitor, p[20_141:20_738], y[20_141:20_738]) == []
    assert monitor.settling and monitor.stats.settling == 597
    assert drifts(monitor, p[20_738:20_739], y[20_738:20_739]) == []
    assert not monitor.settling and monitor.stats.settling == 598  # 200 x ln(20), rounded up


def test_a_drift_soon_after_a_start_is_judged_with_a_tolerance_for_the_young_bias() -> None:
    # the drift starts 300 events after the monitor: the alarm at 379 is judged against a bias
    # learnt from 379 events, with a tolerance of 1 / sqrt(379) = 0.051 instead of 0.02
    rng = np.random.default_rng(0)
    p = rng.beta(5, 2, 10_000)
    q = p.copy()
    q[300:][rng.random(p.size - 300) < 0.45] *= 0.25
    y = (rng.random(p.size) < q).astype(int)
    [found] = drifts(ConceptDriftMonitor(), p.tolist(), y.tolist())
    assert (found.alarm_position, found.confirmed_position) == (379, 539)


def test_a_window_that_leans_to_drift_looks_again_until_it_confirms() -> None:
    p, y = applicants(30_000, seed=5, flip=0.25)
    [found] = drifts(ConceptDriftMonitor(alpha=1e-15), p, y)  # the evidence needed grows
    assert (found.alarm_position, found.window_size, found.confirmed_position) == (
        20_113,
        225,  # more than confirm_events = 200: at 200 the likelihood ratio was above 1
        20_338,
    )


@pytest.mark.parametrize("split", [20_000, 20_120, 20_500, 25_000])
def test_a_restored_monitor_continues_exactly_like_the_original(split: int) -> None:
    # 20,120 is inside the confirmation window (20,113 to 20,140), 20,500 in the settling after
    # it; 25,000 is after the drift
    p, y = applicants(30_000, seed=5, flip=0.25)
    whole = ConceptDriftMonitor()
    expected = drifts(whole, p, y)
    assert [found.confirmed_position for found in expected] == [20_140]
    before = ConceptDriftMonitor()
    first = drifts(before, p[:split], y[:split])
    restored = ConceptDriftMonitor.from_dict(json.loads(json.dumps(before.to_dict())))
    assert first + drifts(restored, p[split:], y[split:]) == expected
    assert restored.stats == whole.stats


def test_reset_forgets_an_open_confirmation() -> None:
    p, y = applicants(30_000, seed=5, flip=0.25)
    monitor = ConceptDriftMonitor()
    assert drifts(monitor, p[:20_120], y[:20_120]) == []  # the window opened at 20,113
    monitor.reset()
    assert drifts(monitor, p[20_120:], y[20_120:]) == []  # the detectors restarted mid-drift
    assert monitor.stats.confirmed == 0


def test_bad_events_and_settings_say_what_was_expected() -> None:
    monitor = ConceptDriftMonitor()
    for p, y, message in [
        (1.2, 1, r"p must be a probability within \[0, 1\], got 1.2"),
        (math.nan, 1, "got nan"),
        (0.5, 2, r"y must be 0 \(defaulted\) or 1 \(repaid\), got 2"),
    ]:
        with pytest.raises(ValueError, match=message):
            monitor.update(p, y)
    assert monitor.stats.events == 0
    with pytest.raises(ValueError, match=r"alpha must be within \(0, 1\), got 0"):
        ConceptDriftMonitor(alpha=0)
    with pytest.raises(ValueError, match="effects must be one or more numbers"):
        ConceptDriftMonitor(effects=())
    with pytest.raises(ValueError, match="restart_after must be at least 1, got 0"):
        ConceptDriftMonitor(restart_after=0)
