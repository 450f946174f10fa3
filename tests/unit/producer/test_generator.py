from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from loanstream.errors import SpecError
from loanstream.frames import application_messages, check_frame
from loanstream.spec import load_spec, parse_spec
from loanstream.validation import ApplicationValidator
from producer.generator import TRUE_PROBABILITY, Generator
from producer.outcomes import OUTCOME_TIME, LabelPolicy
from producer.scenarios import load_scenario
from producer.world import load_world

SPEC = load_spec()
WORLD = load_world(None, SPEC)


def gen(scenario: str = "stable", seed: int = 11, **kw: object) -> Generator:
    return Generator(SPEC, WORLD, load_scenario(scenario), seed=seed, **kw)  # type: ignore[arg-type]


def test_the_same_seed_gives_identical_payloads_and_another_seed_does_not() -> None:
    first = application_messages(gen(seed=11).rows(0, 3000), SPEC)
    again = application_messages(gen(seed=11).rows(0, 3000), SPEC)
    other = application_messages(gen(seed=12).rows(0, 3000), SPEC)
    assert first == again
    assert [m[1] for m in first] != [m[1] for m in other]


def test_rows_do_not_depend_on_how_they_are_asked_for() -> None:
    g = gen()
    whole = g.rows(0, 2500)
    pieces = pd.concat([g.rows(0, 999), g.rows(999, 2), g.rows(1001, 1499)], ignore_index=True)
    pd.testing.assert_frame_equal(whole, pieces)


def test_generated_applications_are_valid_and_realistic() -> None:
    rows = gen().rows(0, 20_000)
    assert check_frame(rows, SPEC).rejections == []
    validator = ApplicationValidator(SPEC)
    for _, value, _ in application_messages(rows.iloc[:500], SPEC):
        validator.parse(value)
    default_rate = 1 - rows[SPEC.target_column].mean()
    assert 0.10 <= default_rate <= 0.30
    correlations = rows[["income", "loan_amount", "credit_score", "interest_rate"]].corr()
    assert correlations.loc["income", "loan_amount"] > 0.2
    assert correlations.loc["credit_score", "interest_rate"] < -0.4
    assert rows["employment_length"].isna().mean() == pytest.approx(0.06, abs=0.01)
    shares = rows["loan_purpose"].value_counts(normalize=True)
    assert shares.index[0] == "debt_consolidation"
    assert shares.iloc[0] == pytest.approx(0.45, abs=0.02)


def test_covariate_shift_moves_the_named_features_from_its_start_only() -> None:
    rows = gen("covariate-shift").rows(0, 40_000)
    before, after = rows.iloc[:20_000], rows.iloc[20_000:]
    assert after["income"].median() / before["income"].median() == pytest.approx(1.10, abs=0.03)
    assert after["credit_score"].mean() / before["credit_score"].mean() == pytest.approx(
        0.90, abs=0.01
    )
    assert after["loan_amount"].mean() / before["loan_amount"].mean() == pytest.approx(1, abs=0.03)
    stable = gen("stable").rows(0, 20_000)
    pd.testing.assert_frame_equal(before.reset_index(drop=True), stable)


def test_concept_drift_changes_outcomes_not_features() -> None:
    rows = gen("concept-drift").rows(0, 40_000)
    before, after = rows.iloc[:20_000], rows.iloc[20_000:]
    segment = "debt_consolidation"
    default = lambda part: 1 - part[part["loan_purpose"] == segment]["repaid"].mean()  # noqa: E731
    assert default(before) < 0.25 and default(after) > 0.5
    for feature in ("income", "credit_score", "debt_to_income"):
        assert after[feature].mean() == pytest.approx(before[feature].mean(), rel=0.03)


def test_gradual_drift_mixes_in_and_recurring_drift_switches_on_and_off() -> None:
    gradual = load_scenario("gradual").drifts[0]
    weights = gradual.weight(np.array([19_999, 20_000, 24_999, 29_999, 40_000]))
    assert weights.tolist() == pytest.approx([0.0, 0.0001, 0.5, 1.0, 1.0])
    recurring = load_scenario("recurring").drifts[0]
    on_off = recurring.weight(np.array([14_999, 15_000, 24_999, 25_000, 35_000, 45_000]))
    assert on_off.tolist() == [0, 1, 1, 0, 1, 0]


def test_outcomes_come_late_and_a_share_never() -> None:
    g = gen(
        labels=LabelPolicy(median_days=10, sigma=0.3, unlabelled_fraction=0.2),
        interval=timedelta(minutes=1),
    )
    rows = g.rows(0, 10_000)
    delay = (rows[OUTCOME_TIME] - rows[SPEC.event_time_column]).dt.total_seconds() / 86400
    assert rows[OUTCOME_TIME].isna().mean() == pytest.approx(0.2, abs=0.015)
    assert delay.median() == pytest.approx(10, rel=0.05)
    assert (delay.dropna() > 0).all()


def test_scenarios_compose_and_unknown_ones_are_named() -> None:
    both = load_scenario("covariate-shift+concept-drift")
    assert [d.kind for d in both.drifts] == ["covariate", "concept"]
    with pytest.raises(SpecError, match=r"unknown scenario \['nope'\]; known: \["):
        load_scenario("stable+nope")


def test_a_world_that_does_not_fit_the_spec_is_refused() -> None:
    other = parse_spec(
        {
            "name": "x",
            "id_column": "id",
            "event_time_column": "t",
            "target_column": "y",
            "features": [{"name": "income", "type": "numeric", "min": 0, "max": 1}],
        }
    )
    with pytest.raises(SpecError, match="world does not fit the feature spec: features"):
        load_world(None, other)


def test_a_local_drift_changes_repayment_inside_its_range_only() -> None:
    stable = gen("stable").rows(19_000, 2_000)
    local = gen("local-drift-mild").rows(19_000, 2_000)
    after = np.arange(len(local)) >= 1_000  # the drift starts at application 20,000
    score = local["credit_score"]
    inside = (score >= 620) & (score < 650) & after
    moved = ~np.isclose(local[TRUE_PROBABILITY], stable[TRUE_PROBABILITY])
    assert inside.sum() > 50 and (moved == inside).all()
    assert (local[TRUE_PROBABILITY][inside] < stable[TRUE_PROBABILITY][inside]).all()


def test_a_range_limits_concept_drifts_only_and_must_be_ordered(tmp_path: Path) -> None:
    path = tmp_path / "scenarios.yaml"
    for drift, error in (
        ("{kind: covariate, start: 0, within: {income: [1, 2]}}", "concept drifts only"),
        ("{kind: concept, start: 0, within: {income: [2, 1]}}", "low must be below high"),
    ):
        path.write_text(f"scenarios:\n  bad:\n    drifts: [{drift}]\n")
        with pytest.raises(SpecError, match=error):
            load_scenario("bad", path)
