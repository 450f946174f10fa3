"""The label test on seeded streams: exact confirmation positions, the same answer however the
stream is cut into batches, the same CUSUMs as a plain one-label-at-a-time reference, and a
state that restores exactly."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pytest

from monitor.labeltest import (
    CALIBRATE,
    CLIP,
    DELTAS,
    MAX_OFFSET,
    PRIOR_INFO,
    SCALE,
    STAGE,
    LabelDrift,
    LabelDriftTest,
    Regions,
    _fit_calibration,
    _gathered,
    _level,
    _moved,
    _recalibrated,
    llr_units,
    null_threshold,
)

# everyone; a numeric feature z in two bins; a categorical x with three values
REGIONS = Regions(
    ("all", "z < 0", "z ≥ 0", "x=a", "x=b", "x=c"),
    (("z", 1, (0.0,)),),
    (("x", {"a": 3, "b": 4, "c": 5}),),
    (1.0, 0.45, 0.45, 0.6, 0.3, 0.1),
)
THRESHOLD = 17.0  # nats: about what the simulation sets for the test model (17.5)
QUANTILES = list(np.linspace(0.55, 0.98, 101))


@dataclass(frozen=True)
class Label:
    p: float
    y: int
    features: dict[str, object]
    seconds: float


def labels(n: int, seed: int, drift: str = "none", onset: int = 10_000) -> list[Label]:
    """Seeded labels of calibrated applicants; ``drift`` changes their repayment from ``onset``:
    strong (everyone repays 20 points less), local (x=c, 10% of labels, alike),
    reversing (strong, ending 5,000 labels later), local-reversing (local, ending 10,000 labels
    later), gradual (strong, mixed in over 5,000)."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        x = rng.choices("abc", (0.6, 0.3, 0.1))[0]
        z = rng.gauss(0.0, 1.0) if rng.random() > 0.1 else None  # 10% missing
        p = rng.uniform(0.55, 0.98)
        if drift == "gradual":  # draws only here: the other streams keep their draws
            hit = i >= onset and rng.random() < min(1.0, (i - onset) / 5000)
        else:
            hit = {
                "strong": i >= onset,
                "local": i >= onset and x == "c",
                "reversing": onset <= i < onset + 5000,
                "local-reversing": onset <= i < onset + 10_000 and x == "c",
            }.get(drift, False)
        cut = 0.2 if hit else 0.0
        out.append(Label(p, int(rng.random() < p - cut), {"x": x, "z": z}, 1e9 + 60.0 * i))
    return out


def feed(test: LabelDriftTest, stream: list[Label], sizes: Iterator[int]) -> list[LabelDrift]:
    found, i = [], 0
    while i < len(stream):
        part = stream[i : i + next(sizes)]
        found += test.update(
            [a.p for a in part],
            [a.y for a in part],
            [a.features for a in part],
            i,
            [a.seconds for a in part],
        )
        i += len(part)
    return found


def ones() -> Iterator[int]:
    while True:
        yield 1


def randomly(seed: int) -> Iterator[int]:
    rng = random.Random(seed)
    while True:
        yield rng.choice([1, 7, 100, 1024, 3000])


def confirmed(stream: list[Label]) -> list[tuple[str, float, int, int]]:
    found = feed(LabelDriftTest(REGIONS, THRESHOLD), stream, randomly(0))
    return [(d.region, d.shift, d.first_position, d.confirmed_position) for d in found]


def test_a_stable_stream_raises_nothing() -> None:
    assert confirmed(labels(60_000, seed=1)) == []


def test_a_strong_drift_is_confirmed_once_at_an_exact_position() -> None:
    assert confirmed(labels(30_000, seed=2, drift="strong")) == [("all", -1.0, 9_999, 10_175)]


def test_a_local_drift_is_found_in_its_region() -> None:
    [drift] = feed(LabelDriftTest(REGIONS, THRESHOLD), labels(30_000, 3, "local"), ones())
    # found while x=c still learns its own level, against the level of its last stage
    assert (drift.region, drift.shift, drift.confirmed_position) == ("x=c", -1.0, 10_943)
    assert drift.events == 95  # x=c's labels in the run that crossed
    assert (drift.expected_rate, drift.observed_rate) == pytest.approx((0.776, 0.505), abs=1e-3)


def test_a_drift_that_ends_is_found_both_times() -> None:
    found = confirmed(labels(30_000, seed=4, drift="reversing"))
    assert found == [("all", -2.0, 10_043, 10_081), ("all", 1.0, 15_007, 15_164)]


def test_a_local_drift_that_ends_is_found_both_times() -> None:
    """x=c relearns its level after the first confirmation and is tested again from 16 units of
    information on, so the end is found against the level of the drift, not absorbed into it."""
    found = confirmed(labels(30_000, seed=3, drift="local-reversing"))
    assert found == [("x=c", -1.0, 10_018, 10_943), ("x=c", 1.0, 19_841, 22_632)]


def test_a_gradual_drift_is_confirmed_as_it_grows() -> None:
    assert confirmed(labels(30_000, seed=5, drift="gradual")) == [("all", -0.5, 11_758, 12_518)]


@pytest.mark.parametrize("seed", [1, 2])
def test_any_cut_into_batches_gives_the_same_drifts_and_state(seed: int) -> None:
    stream = labels(14_000, seed=6, drift="reversing", onset=4_000)
    one = LabelDriftTest(REGIONS, THRESHOLD)
    cut = LabelDriftTest(REGIONS, THRESHOLD)
    assert feed(one, stream, ones()) == feed(cut, stream, randomly(seed))
    assert one.to_dict() == cut.to_dict()
    assert one.confirmed == 2


def test_the_cusums_are_those_of_a_plain_reference_implementation() -> None:
    """Before the first confirmation: label by label, the first labels are only gathered until
    their information reaches CALIBRATE, and the model's calibration is fitted on them; then
    each later label's probability is recalibrated, and each region of the label takes its level
    (the one solved from its sums when their information last reached a stage, until frozen),
    every CUSUM is max(0, S + llr) at that level in the same integer units, and a learning
    region adds the label to its sums, freezing its level once their information reaches
    learn_information."""
    stream = labels(30_000, seed=7, drift="strong", onset=28_000)[:28_050]
    test = LabelDriftTest(REGIONS, THRESHOLD, learn_information=600.0, quiet_information=100.0)
    size = len(REGIONS.names)
    cusum = np.zeros((size, len(test.shifts)), np.int64)
    sums = np.zeros((size, test.learnt.shape[0]), np.int64)
    offset, staged, learning = np.zeros(size), np.zeros(size), np.ones(size, bool)
    stages = [PRIOR_INFO * STAGE**k for k in range(20) if PRIOR_INFO * STAGE**k < 600.0] + [600.0]
    shifts = np.array(test.shifts)
    gathered: list[tuple[float, int]] = []
    information, calibration = 0, None
    for a in stream:
        if calibration is None:
            q = min(max(a.p, CLIP), 1.0 - CLIP)
            information += int(np.rint(q * (1.0 - q) * SCALE))
            gathered.append((np.log(q / (1.0 - q)), a.y))
            if information >= round(CALIBRATE * SCALE):
                z, y = np.array(gathered).T
                calibration = _fit_calibration(z, y)
            continue
        for r in REGIONS.assign([a.features])[0]:
            if r < 0:
                continue
            p, y = _recalibrated(np.array([a.p]), *calibration), np.array([float(a.y)])
            units = llr_units(_moved(p, np.array([offset[r] + staged[r]])), y, shifts)[0]
            cusum[r] = np.maximum(0, cusum[r] + units)
            if learning[r]:
                before = sums[r, 1]
                sums[r] += np.rint(_gathered(_moved(p, offset[[r]]), y)[0] * SCALE).astype(np.int64)
                if any(before < round(s * SCALE) <= sums[r, 1] for s in stages):
                    staged[r] = _level(sums[[r]] / SCALE)[0]
                if sums[r, 1] >= 600.0 * SCALE:
                    offset[r] = np.clip(offset[r] + staged[r], -MAX_OFFSET, MAX_OFFSET)
                    staged[r], learning[r] = 0.0, False
    assert feed(test, stream, randomly(4)) == []
    assert test.calibration == calibration and calibration != (0.0, 1.0)
    assert (test.cusum == cusum).all()
    assert (test.offset == offset).all() and (test.learning == learning).all()
    assert learning.any() and not learning.all()  # both kinds of region were compared
    assert test.cusum.max() > 5 * SCALE  # the drift is under way: the comparison is not of zeros


def test_the_calibration_is_the_most_likely_one_under_its_prior() -> None:
    """`_fit_calibration` against a general-purpose optimiser of the same posterior, on labels
    of a model too confident by a log-odds slope of 0.6 (and 0.3 too optimistic)."""
    from scipy.optimize import minimize

    rng = np.random.default_rng(1)
    z = rng.normal(1.5, 1.2, 3000)
    y = (rng.random(z.size) < 1.0 / (1.0 + np.exp(-(-0.3 + 0.6 * z)))).astype(float)

    def minus_log_posterior(theta: np.ndarray) -> float:
        s = theta[0] + theta[1] * z
        prior = PRIOR_INFO / 2 * (theta[0] ** 2 + (theta[1] - 1.0) ** 2)
        return float(-(y * s - np.logaddexp(0.0, s)).sum() + prior)

    expected = minimize(minus_log_posterior, np.array([0.0, 1.0]), tol=1e-10).x
    fitted = _fit_calibration(z, y)
    assert fitted == pytest.approx(tuple(expected), abs=1e-4)
    assert fitted == pytest.approx((-0.3, 0.6), abs=0.1)


def test_an_overconfident_model_is_recalibrated_and_raises_nothing() -> None:
    """Every probability's log-odds stretched by 1 / 0.6, as a model calibrated on too few rows
    can be: the test learns the slope back from its first labels and stays quiet."""
    stream = []
    for a in labels(60_000, seed=1):
        z = np.log(a.p / (1.0 - a.p)) / 0.6
        stream.append(Label(float(1.0 / (1.0 + np.exp(-z))), a.y, a.features, a.seconds))
    test = LabelDriftTest(REGIONS, THRESHOLD)
    assert feed(test, stream, randomly(1)) == []
    assert test.calibration is not None
    assert test.calibration[1] == pytest.approx(0.6, abs=0.05)
    probabilities = np.array([a.p for a in stream[:5]])
    assert _recalibrated(probabilities, 0.0, 0.6) == pytest.approx([a.p for a in labels(5, 1)])


def test_a_level_is_the_most_likely_offset_under_its_prior() -> None:
    """`_level` solves sum(y) = sum(moved(p, l)) + l x PRIOR_INFO; checked by bisection over all
    the labels, for a small and a large shift of the log-odds."""
    rng = np.random.default_rng(0)
    p = rng.uniform(0.5, 0.98, 4000)
    for shift in (-0.3, -1.2):
        y = (rng.random(p.size) < _moved(p, np.full(p.size, shift))).astype(float)
        low, high = -3.0, 3.0
        for _ in range(60):
            mid = (low + high) / 2
            score = y.sum() - _moved(p, np.full(p.size, mid)).sum() - mid * PRIOR_INFO
            low, high = (mid, high) if score > 0 else (low, mid)
        learnt = _level(_gathered(p, y).sum(axis=0)[None, :])[0]
        assert learnt == pytest.approx(low, abs=0.01)
        assert learnt == pytest.approx(shift, abs=0.1)


@pytest.mark.parametrize("cut", [700, 10_040])  # while the calibration is gathered; in a run
def test_a_restored_state_carries_on_exactly(cut: int) -> None:
    stream = labels(20_000, seed=8, drift="strong")
    straight = LabelDriftTest(REGIONS, THRESHOLD)
    whole = feed(straight, stream, randomly(5))
    first = LabelDriftTest(REGIONS, THRESHOLD)
    head = feed(first, stream[:cut], randomly(6))
    assert (first.calibration is None) == (cut == 700)
    state = json.loads(json.dumps(first.to_dict()))
    restored = LabelDriftTest.from_dict(state, REGIONS)
    tail = [a for a in stream[cut:]]
    found, i = [], 0
    for part in (tail[:500], tail[500:]):
        found += restored.update(
            [a.p for a in part],
            [a.y for a in part],
            [a.features for a in part],
            cut + i,
            [a.seconds for a in part],
        )
        i += len(part)
    assert head == [] and found == whole and len(whole) == 1
    assert restored.to_dict() == straight.to_dict()


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("calibration", [0.0, float("nan")], "slope"),
        ("calibration", [9.0, 1.0], "intercept"),
        ("offset", [float("inf")] + [0.0] * 5, "offset"),
        ("staged", [0.0] * 5 + [-7.0], "staged"),
        ("gathered_z", [1e300], "log-odds"),
        ("gathered_y", [0.5], "labels"),
    ],
)
def test_a_forged_state_is_refused(field: str, value: list[float], message: str) -> None:
    """Read back from Kafka, a state must hold what the test itself could have written: a NaN
    slope or offset would make every later probability NaN."""
    test = LabelDriftTest(REGIONS, THRESHOLD)
    feed(test, labels(700, seed=8), ones())  # still gathering: gathered_z and _y in the state
    state = json.loads(json.dumps(test.to_dict()))
    LabelDriftTest.from_dict(state, REGIONS)  # as written, it restores
    if field.startswith("gathered"):
        state["gathered_z"], state["gathered_y"] = [0.0], [1]
    state[field] = value
    with pytest.raises(ValueError, match=message):
        LabelDriftTest.from_dict(state, REGIONS)


def test_a_state_for_other_regions_is_refused() -> None:
    state = LabelDriftTest(REGIONS, THRESHOLD).to_dict()
    other = Regions(("all",), (), (), (1.0,))
    with pytest.raises(ValueError, match="other regions"):
        LabelDriftTest.from_dict(state, other)


def test_invalid_labels_or_probabilities_change_nothing() -> None:
    test = LabelDriftTest(REGIONS, THRESHOLD)
    before = test.to_dict()
    with pytest.raises(ValueError, match="labels"):
        test.update([0.5, 0.6], [1, 2], [{}, {}], 0)
    with pytest.raises(ValueError, match="probabilities"):
        test.update([0.5, float("nan")], [1, 0], [{}, {}], 0)
    assert test.to_dict() == before


def test_regions_come_from_the_reference_deciles_and_the_spec_values() -> None:
    from loanstream.spec import load_spec

    spec = load_spec()
    edges = [float(e) for e in range(10, 100, 10)]  # deciles 10..90
    reference = {
        "features": {
            "income": {"missing_rate": 0.0, "edges": edges, "shares": [0.1] * 10},
            "loan_purpose": {"missing_rate": 0.0, "shares": {"car": 0.5}},
        }
    }
    regions = Regions.from_reference(reference, spec)
    assert regions.names[:4] == ("all", "income < 10", "income in [10, 20)", "income in [20, 30)")
    assert regions.names[10] == "income ≥ 90"
    assert "loan_purpose=car" in regions.names
    assigned = regions.assign([{"income": 40.0, "loan_purpose": "car"}, {"income": None}])
    car = regions.names.index("loan_purpose=car")
    assert assigned[0].tolist()[:3] == [0, 5, car]  # 40 is in [40, 50)
    assert assigned[1].tolist()[1:] == [-1] * (regions.groups - 1)  # missing: in no region
    assert regions.shares[1:11] == pytest.approx([0.1] * 10)
    quintiles = Regions.from_reference(reference, spec, bins=5)
    assert quintiles.names[1:6] == (
        "income < 20",
        "income in [20, 40)",
        "income in [40, 60)",
        "income in [60, 80)",
        "income ≥ 80",
    )
    assert quintiles.shares[1:6] == pytest.approx([0.2] * 5)


def test_the_simulated_threshold_is_seeded_and_grows_with_the_budget() -> None:
    low = null_threshold(REGIONS, QUANTILES, 100_000)
    high = null_threshold(REGIONS, QUANTILES, 10_000_000)
    assert high - low == pytest.approx(np.log(100))  # h = ln(A x target)
    assert null_threshold(REGIONS, QUANTILES, 10_000_000) == high
    # below Lorden's bound over every test, which ignores that most runs die young
    assert high < np.log(10_000_000 * len(REGIONS.names) * 2 * len(DELTAS))
    # the simulated regions' true levels are off the stated one: with levels frozen at the
    # first label (never learnt) the same budget needs a threshold higher by far
    never = null_threshold(REGIONS, QUANTILES, 10_000_000, learn_information=1e-9)
    assert never > high + 2.0
