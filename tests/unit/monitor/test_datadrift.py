"""Per-feature data drift and prediction drift, on seeded producer streams at exact positions."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from loanstream.spec import load_spec
from monitor.datadrift import (
    DataDrift,
    DataDriftMonitor,
    FeatureCheck,
    band,
    benjamini_hochberg,
    psi_test,
)
from tests.trainer_data import history
from trainer.reference import reference_profile

Event = tuple[dict[str, Any], float]
SPEC = load_spec()


def probability(frame: pd.DataFrame) -> np.ndarray:
    """A fixed stand-in for a model: logistic in log income and credit score."""
    z = 1.5 + 0.3 * (np.log(frame["income"].to_numpy()) - 10.9) / 0.5
    z = z + 0.95 * (frame["credit_score"].to_numpy() - 690) / 60
    return 1 / (1 + np.exp(-z))


def events(frame: pd.DataFrame) -> list[Event]:
    records = frame[SPEC.feature_names].to_dict("records")
    return list(zip(records, probability(frame).tolist(), strict=True))


def stream(scenario: str, n: int) -> list[Event]:
    return events(history(n, seed=2, scenario=scenario)[0])


def run(monitor: DataDriftMonitor, items: list[Event]) -> list[DataDrift]:
    return [d for features, p in items for d in monitor.update(features, p)]


def summary(drifts: list[DataDrift]) -> list[tuple[str, int, int]]:
    return [(d.feature, d.first_position, d.confirmed_position) for d in drifts]


@pytest.fixture(scope="module")
def reference() -> dict[str, Any]:
    frame, _ = history(20_000, seed=1)
    return reference_profile(frame, SPEC, probability(frame))


@pytest.fixture(scope="module")
def stable() -> list[Event]:
    return stream("stable", 200_000)


# --- the calibration: PSI's null distribution -------------------------------------------------


def rejection_rates(p_values: np.ndarray) -> dict[float, float]:
    return {a: float((p_values <= a).mean()) for a in (0.05, 0.01, 0.001)}


def test_psi_null_is_chi_square_over_n_eff_by_parametric_bootstrap() -> None:
    """Multinomial draws of a reference (N rows) and live windows (n) from the same shares."""
    rng = np.random.default_rng(3)
    deciles = np.r_[np.full(10, 0.094), 0.06]  # ten bins of present values and a missing bin
    purpose = np.array([0.45, 0.2, 0.1, 0.08, 0.05, 0.04, 0.03, 0.05, 0.0, 0.0])  # + unknown
    for shares, big, n in [(deciles, 20_000, 2000), (purpose, 5000, 5000), (deciles, 5000, 5000)]:
        reps = 20_000
        ref = rng.multinomial(big, shares, size=reps) / big
        live = rng.multinomial(n, shares, size=reps)
        test = psi_test(live, ref, np.full(reps, float(big)))
        df = (shares > 0).sum() - 1
        assert set(test.df) <= {df, df + 1}  # an empty-in-reference bin is counted if live hits it
        assert np.mean(test.psi) * n * big / (n + big) == pytest.approx(df, rel=0.03)
        for alpha, rate in rejection_rates(test.p_value).items():
            assert rate == pytest.approx(alpha, rel=0.25 if alpha >= 0.01 else 0.5), (alpha, rate)
        # ignoring that the reference is a sample (chi-square / n) alarms far too often
        naive = stats.chi2.sf(test.psi * n, test.df)
        assert (naive <= 0.01).mean() > 1.5 * 0.01


def test_psi_null_holds_when_the_decile_edges_come_from_the_reference_sample() -> None:
    """As the trainer builds it: edges are the reference's own deciles, so its shares are 0.1."""
    rng = np.random.default_rng(4)
    big, n, p_values = 5000, 2000, []
    for _ in range(6):  # uniform draws: PSI does not change under a monotone transform
        ref, live = rng.random((500, big)), rng.random((500, n))
        all_edges = np.quantile(ref, np.linspace(0, 1, 11)[1:-1], axis=1).T
        for r, x, edges in zip(ref, live, all_edges, strict=True):
            shares = np.bincount(np.searchsorted(edges, r), minlength=10) / big
            counts = np.bincount(np.searchsorted(edges, x), minlength=10)
            p_values.append(psi_test(counts[None], shares[None], np.array([big])).p_value[0])
    rates = rejection_rates(np.array(p_values))
    assert rates[0.05] == pytest.approx(0.05, rel=0.25)
    assert rates[0.01] == pytest.approx(0.01, rel=0.5)


def test_benjamini_hochberg_matches_scipy() -> None:
    p = np.random.default_rng(5).random(11) ** 4
    np.testing.assert_allclose(benjamini_hochberg(p), stats.false_discovery_control(p))


def test_bands() -> None:
    assert [band(x) for x in (0.0, 0.0999, 0.1, 0.2499, 0.25, 3.0)] == [
        "stable",
        "stable",
        "watch",
        "watch",
        "act",
        "act",
    ]


# --- detection on the producer's scenarios ----------------------------------------------------


def test_stable_stream_never_fires_and_stays_far_below_the_threshold(
    reference: dict[str, Any], stable: list[Event]
) -> None:
    monitor = DataDriftMonitor(reference, SPEC)
    checks: list[FeatureCheck] = []
    for features, p in stable:
        assert monitor.update(features, p) == []
        if monitor.last_check is not None and monitor.last_check.position == monitor.position:
            checks.extend(monitor.last_check.features if monitor.position >= 1999 else ())
    s = monitor.stats
    assert (s.checks, s.rejected_checks, s.flagged_checks, s.confirmed) == (400, 0, 0, 0)
    assert s.level == 500 / 10_000_000
    assert max(c.psi for c in checks) < 0.02  # the "watch" band starts at 0.1
    # the calibration on the real stream: p-values of the 11 x 397 full windows look uniform
    p_values = np.array([c.p_value for c in checks])
    assert min(p_values) > 1e-4
    assert 0.08 < (p_values <= 0.1).mean() < 0.12 and 0.4 < (p_values <= 0.5).mean() < 0.6


def test_income_shift_is_confirmed_for_income_only(reference: dict[str, Any]) -> None:
    monitor = DataDriftMonitor(reference, SPEC)
    drifts = run(monitor, stream("income-shift", 30_000))  # income x 1.25 from 20,000
    assert summary(drifts) == [("income", 21_499, 21_999)]
    drift = drifts[0]
    assert drift.signal == "data" and drift.window_size == 2000
    assert drift.band == "watch" and drift.statistic >= drift.threshold == 0.1
    assert drift.p_value <= monitor.level
    assert drift.evidence.wasserstein is not None and drift.evidence.wasserstein > 0.3
    assert drift.evidence.ks_p is not None and drift.evidence.ks_p < 1e-12
    last = monitor.last_check
    assert last is not None and last.feature("income").band == "watch"
    assert [f.feature for f in last.features if f.flagged] == ["income"]


def test_covariate_shift_fires_credit_score_and_prediction_but_not_a_ten_percent_income_rise(
    reference: dict[str, Any],
) -> None:
    monitor = DataDriftMonitor(reference, SPEC)
    drifts = run(monitor, stream("covariate-shift", 30_000))
    assert summary(drifts) == [("credit_score", 20_999, 21_499), ("prediction", 20_999, 21_499)]
    assert drifts[1].signal == "prediction"
    income = monitor.last_check.feature("income")  # type: ignore[union-attr]
    # significant, but below the "watch" band: the effect-size gate keeps it quiet
    assert income.adjusted_p <= monitor.level and income.band == "stable" and not income.flagged


def test_a_jump_in_missing_values_is_a_drift(
    reference: dict[str, Any], stable: list[Event]
) -> None:
    blank = np.random.default_rng(6).random(20_000) < 0.4
    items = [
        ({**f, "employment_length": None} if i >= 10_000 and blank[i] else f, p)
        for i, (f, p) in enumerate(stable[:20_000])
    ]
    monitor = DataDriftMonitor(reference, SPEC)
    assert summary(run(monitor, items)) == [("employment_length", 10_499, 10_999)]
    check = monitor.last_check.feature("employment_length")  # type: ignore[union-attr]
    assert check.missing_change == pytest.approx(0.4 * 0.94, abs=0.03)
    assert check.missing_p < 1e-12


def test_a_feature_fires_again_only_after_it_was_back_to_stable(
    reference: dict[str, Any], stable: list[Event]
) -> None:
    def shifted(i: int) -> bool:
        return 10_000 <= i < 16_000 or 26_000 <= i < 32_000

    items = [
        ({**f, "income": f["income"] * 1.25} if shifted(i) else f, p)
        for i, (f, p) in enumerate(stable[:40_000])
    ]
    monitor = DataDriftMonitor(reference, SPEC)
    drifts = run(monitor, items)
    assert summary(drifts) == [("income", 11_999, 12_499), ("income", 27_999, 28_499)]
    assert monitor.stats.flagged_checks > 2 * monitor.confirm_checks  # flagged, not repeated
    monitor.reset()
    assert summary(run(monitor, items[26_000:32_000])) == [("income", 40_499, 40_999)]


# --- values, restarts, errors -----------------------------------------------------------------


def test_hostile_values_are_missing_unknown_or_out_of_range_never_a_crash(
    reference: dict[str, Any], stable: list[Event]
) -> None:
    bad_numbers: list[object] = [None, float("nan"), float("inf"), "abc", 10**400]
    bad_labels: list[object] = ["spaceship", 7, ["x"], {"a": 1}]
    items = []
    for i, (f, _) in enumerate(stable[:500]):
        f = dict(f)
        if i % 5 == 0:
            f["income"] = bad_numbers[i // 5 % 5]
        if i % 10 == 1:
            del f["age"]
        if i % 10 == 2:
            f["loan_purpose"] = bad_labels[i // 10 % 4]
        if i % 50 == 3:
            f["loan_purpose"] = None
        items.append((f, 1e6 if i % 2 else -3.0))  # predictions far outside the reference
    monitor = DataDriftMonitor(reference, SPEC, size=500, step=500)
    run(monitor, items)
    check = monitor.last_check
    assert check is not None and check.window_size == 500
    assert check.feature("income").missing_rate == 0.2
    assert check.feature("age").missing_rate == 0.1
    assert check.feature("loan_purpose").missing_rate == 0.02
    assert check.feature("loan_purpose").band == "act"  # 10% unknown values
    assert check.feature("home_ownership").band == "stable"
    prediction = check.feature("prediction")
    assert prediction.band == "act" and prediction.wasserstein is not None
    assert prediction.wasserstein > 1000


def test_a_feature_never_present_in_training_drifts_when_values_appear(
    reference: dict[str, Any], stable: list[Event]
) -> None:
    empty = {"kind": "numeric", "missing_rate": 1.0, "count": 20_000}
    features = {**reference["features"], "debt_to_income": empty}
    monitor = DataDriftMonitor({**reference, "features": features}, SPEC)
    assert summary(run(monitor, stable[:1000])) == [("debt_to_income", 499, 999)]
    check = monitor.last_check.feature("debt_to_income")  # type: ignore[union-attr]
    assert check.band == "act" and check.wasserstein is None and check.ks_p is None


def test_a_restored_monitor_continues_identically(reference: dict[str, Any]) -> None:
    items = stream("income-shift", 30_000)
    first = DataDriftMonitor(reference, SPEC, size=2000, step=500)
    run(first, items[:20_750])  # mid-pane, with the window partly drifted
    state = json.loads(json.dumps(first.to_dict()))
    second = DataDriftMonitor.from_dict(state, reference, SPEC)
    assert run(first, items[20_750:]) == run(second, items[20_750:])
    assert first.last_check == second.last_check and first.stats == second.stats
    assert first.stats.confirmed == 1


def test_a_state_only_fits_its_reference_and_spec(reference: dict[str, Any]) -> None:
    state = DataDriftMonitor(reference, SPEC).to_dict()
    other = {**reference, "rows": reference["rows"] + 1}
    with pytest.raises(ValueError, match="another reference"):
        DataDriftMonitor.from_dict(state, other, SPEC)
    with pytest.raises(ValueError, match="version 1"):
        DataDriftMonitor.from_dict({**state, "version": 9}, reference, SPEC)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"size": 2000, "step": 300}, "step must divide size"),
        ({"step": 500, "target_run_length": 100}, "target_run_length must be >= step"),
        ({"confirm_checks": 0}, "confirm_checks >= 1"),
    ],
)
def test_parameters_are_checked(
    reference: dict[str, Any], kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        DataDriftMonitor(reference, SPEC, **kwargs)


def test_a_reference_that_misses_a_feature_is_refused(reference: dict[str, Any]) -> None:
    features = {k: v for k, v in reference["features"].items() if k != "age"}
    with pytest.raises(ValueError, match="no profile for feature 'age'"):
        DataDriftMonitor({**reference, "features": features}, SPEC)
    wrong = {**reference["features"], "age": reference["features"]["loan_purpose"]}
    with pytest.raises(ValueError, match="profile of 'age': expected numeric"):
        DataDriftMonitor({**reference, "features": wrong}, SPEC)


def test_wasserstein_matches_the_exact_distance_on_raw_values(reference: dict[str, Any]) -> None:
    train, _ = history(20_000, seed=1)
    live = history(24_000, seed=2, scenario="income-shift")[0].iloc[22_000:]
    monitor = DataDriftMonitor(reference, SPEC, size=2000, step=2000)
    run(monitor, events(live))
    check = monitor.last_check
    assert check is not None
    for name in ("income", "credit_score", "employment_length", "age"):
        exact = stats.wasserstein_distance(live[name].dropna(), train[name].dropna())
        expected = exact / train[name].std(ddof=0)
        assert check.feature(name).wasserstein == pytest.approx(expected, rel=0.1, abs=0.01)


def test_batches_check_at_the_same_positions_as_one_by_one(reference: dict[str, Any]) -> None:
    items = stream("income-shift", 25_000)
    for i in range(0, len(items), 7):  # rows a feature is missing from, or odd in
        features = dict(items[i][0])
        del features["age" if i % 2 else "loan_purpose"]
        features["home_ownership"] = ["x"] if i % 3 else None
        items[i] = (features, items[i][1])
    one = DataDriftMonitor(reference, SPEC, size=2000, step=500)
    expected = run(one, items)
    batched = DataDriftMonitor(reference, SPEC, size=2000, step=500)
    found, start = [], 0
    for size in [1, 499, 700, 3, 1234] * 20:  # across pane ends, and several in one batch
        chunk = items[start : start + size]
        checks = batched.update_batch([f for f, _ in chunk], [p for _, p in chunk])
        found += [(start + i, d) for i, drifts in checks for d in drifts]
        start += size
    assert start >= len(items)
    assert [d for _, d in found] == expected and "income" in {d.feature for d in expected}
    assert [i for i, _ in found] == [d.confirmed_position for d in expected]  # the batch index
    assert batched.to_dict() == one.to_dict() and batched.last_check == one.last_check
