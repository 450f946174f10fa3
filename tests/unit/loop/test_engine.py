"""The event-time engine on seeded histories: deterministic, causal, and a loop that closes.

Each backtest here trains real models into a real MLflow store (SQLite, in tmp_path); the
histories are small (12,000 rows, labels within a day) so the module runs in about a minute.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from loanstream.errors import LoanStreamError
from loanstream.spec import load_spec
from loop.backtest import BacktestOptions, BacktestResult, policy_table, run_backtest, run_policies
from loop.engine import LoopOptions
from loop.timeline import LABEL_TIME, LabelSource, build_timeline
from producer.generator import Generator
from producer.manifest import manifest as manifest_of
from producer.outcomes import LabelPolicy
from producer.scenarios import Drift, Scenario
from producer.selective import LabelsMode, Selection
from producer.world import load_world

SPEC = load_spec()
ROWS, ONSET = 12_000, 6_000
CONCEPT = Drift(
    kind="concept",
    start=ONSET,
    categories={"loan_purpose": {"debt_consolidation": -2.5}},
    coefficients={"credit_score": -0.5},
)


def history(drifts: list[Drift], seed: int = 11) -> tuple[pd.DataFrame, dict[str, Any]]:
    generator = Generator(
        SPEC,
        load_world(None, SPEC),
        Scenario(name="test", drifts=drifts),
        seed=seed,
        labels=LabelPolicy(median_days=0.5, sigma=0.3, unlabelled_fraction=0.05),
    )
    return generator.rows(0, ROWS), manifest_of(generator, ROWS)


def options(**loop: Any) -> BacktestOptions:
    return BacktestOptions(
        train_fraction=0.25,
        candidates=("logistic",),
        min_rows=500,
        search_candidates=2,
        loop=LoopOptions(training_latency=timedelta(hours=6), **loop),
    )


@pytest.fixture(scope="module")
def drifting() -> tuple[pd.DataFrame, dict[str, Any]]:
    return history([CONCEPT])


@pytest.fixture(scope="module")
def run(
    drifting: tuple[pd.DataFrame, dict[str, Any]], tmp_path_factory: pytest.TempPathFactory
) -> BacktestResult:
    frame, manifest = drifting
    return run_backtest(frame, SPEC, options(), manifest, tmp_path_factory.mktemp("run"))


def ms(moment: dict[str, Any] | None) -> int:
    assert moment is not None
    return int(pd.Timestamp(moment["event_time"]).value // 1_000_000)


def test_the_same_backtest_twice_gives_byte_identical_summaries(
    drifting: tuple[pd.DataFrame, dict[str, Any]], run: BacktestResult, tmp_path: Path
) -> None:
    frame, manifest = drifting
    again = run_backtest(frame, SPEC, options(), manifest, tmp_path)
    assert again.to_json() == run.to_json()
    assert again.drift_events.equals(run.drift_events)


def test_batch_size_changes_nothing(
    drifting: tuple[pd.DataFrame, dict[str, Any]], run: BacktestResult, tmp_path: Path
) -> None:
    """Slices are cut by the data; what happens inside one is ordered by event time, so a
    different cut gives the same result (only the setting itself differs)."""
    frame, manifest = drifting
    small = run_backtest(frame, SPEC, options(batch_size=37), manifest, tmp_path)
    a, b = small.summary(), run.summary()
    assert a["settings"].pop("batch_size") == 37
    assert b["settings"].pop("batch_size") == 1000
    assert a == b


def test_the_loop_closes_in_causal_order(run: BacktestResult) -> None:
    s = run.summary()
    loop = s["loop"]
    assert s["onset"] == {"position": ONSET - 3_000, "event_time": s["onset"]["event_time"]}
    assert loop["promoted_version"] == "2"
    moments = [
        loop[k]
        for k in (
            "first_evidence",
            "confirmed",
            "retrain_requested",
            "training_started",
            "promoted",
            "first_served",
        )
    ]
    times = [ms(m) for m in moments]
    assert times == sorted(times), moments
    positions = [m["position"] for m in moments]
    assert positions == sorted(positions), moments
    assert ms(s["onset"]) <= ms(loop["confirmed"])
    # every application after the swap is scored by v2, none before it
    served = run.predictions
    first = loop["first_served"]["position"]
    assert set(served.model_version[:first]) == {"1"}
    assert set(served.model_version[first:]) == {"2"}
    assert s["stale_scoring"]["from_onset"] == first - s["onset"]["position"]


def test_no_label_is_used_before_its_label_time(run: BacktestResult) -> None:
    labelled = run.labelled
    assert (labelled["known_at"] >= labelled["event_time"]).all()
    assert (labelled["known_at"] == labelled["label_time"].dt.floor("ms")).all()
    assert labelled["known_at"].is_monotonic_increasing
    for attempt in run.summary()["retraining"]["attempts"]:
        if attempt["training_started"] is None:
            continue
        started = pd.Timestamp(attempt["training_started"]["event_time"])
        known = labelled[labelled["known_at"] <= started]
        window = known[known["event_time"] >= pd.Timestamp(attempt["window_start"])]
        assert attempt["rows"] == len(window)  # exactly the rows known when it started
    for event in run.summary()["detections"]["events"]:
        assert ms(event["evidence"]) <= ms(event["known"])


def test_every_signal_counts_and_names_its_feature(run: BacktestResult) -> None:
    d = run.summary()["detections"]
    assert d["false_alarms"] == 0
    assert set(d["first_by_signal"]) >= {"concept"}
    region = d["first_by_signal"]["concept"]  # the label test names where the labels moved
    assert region["feature"] == "loan_purpose=debt_consolidation"
    assert run.drift_events["signal"].tolist() == [e["signal"] for e in d["events"]]


def test_retraining_pays_after_the_drift_in_the_measures_a_risk_team_reads(
    run: BacktestResult,
) -> None:
    after = run.summary()["with_vs_without_retraining"]["after_first_served"]
    with_, without = after["with_retraining"], after["without_retraining"]
    assert with_["rows"] == without["rows"] > 1000
    assert with_["auc"] > without["auc"] + 0.05
    assert with_["gini"] == pytest.approx(2 * with_["auc"] - 1)
    assert with_["cost_per_application"] < without["cost_per_application"]
    before = run.summary()["phases"]["before the drift"]
    assert 0.0 < before["ks"] < 1.0 and 0.0 < before["approval_rate"] < 1.0


def test_a_lost_round_is_retried_from_the_confirmation_and_the_loop_closes(
    drifting: tuple[pd.DataFrame, dict[str, Any]], tmp_path: Path
) -> None:
    frame, manifest = drifting
    result = run_backtest(frame, SPEC, options(drill_losing_rounds=1), manifest, tmp_path)
    s = result.summary()
    first, second = s["retraining"]["attempts"][:2]
    assert (first["outcome"], second["outcome"]) == ("kept the champion", "promoted")
    assert second["requested_by"] == "retry-policy" and second["retry"] == 2
    assert ms(second["requested"]) == ms(first["result_known"])
    assert second["rows"] >= first["rows"]
    # from the confirmation on, never before the losing window (here the drift's first evidence
    # is an application after the confirming label's: labels come ~7 days late, out of order)
    [event] = [e for e in s["detections"]["events"] if e["signal"] == "concept"]
    confirmed = pd.Timestamp(event["confirmed_on"]["event_time"])
    losing = pd.Timestamp(first["window_start"])
    assert pd.Timestamp(second["window_start"]) == max(confirmed, losing)
    assert s["loop"]["attempts_until_promotion"] == 2
    assert s["loop"]["promoted_version"] == "3"


def test_retries_are_bounded(
    drifting: tuple[pd.DataFrame, dict[str, Any]], tmp_path: Path
) -> None:
    frame, manifest = drifting
    result = run_backtest(frame, SPEC, options(drill_losing_rounds=5), manifest, tmp_path)
    attempts = result.summary()["retraining"]["attempts"]
    retries = [a for a in attempts if a["requested_by"] == "retry-policy"]
    assert [a["retry"] for a in retries] == [2, 3]  # three rounds per drift at most
    assert all(a["outcome"] == "kept the champion" for a in attempts)
    assert result.summary()["loop"]["first_served"] is None


def test_policies_side_by_side(
    drifting: tuple[pd.DataFrame, dict[str, Any]], tmp_path: Path
) -> None:
    frame, manifest = drifting
    results = run_policies(
        frame, SPEC, ["any", "never", "every:2d"], options(), manifest, tmp_path
    )
    rows = {r["policy"]: r for r in policy_table(results)}
    assert rows["never"]["retrains"] == 0 and rows["never"]["stale_rows"] == ROWS - 3_000 - 3_000
    assert rows["any"]["promotions"] >= 1
    assert rows["any"]["stale_rows"] < rows["never"]["stale_rows"]
    assert rows["every:2d"]["retrains"] >= 2
    periodic = results["every:2d"].summary()["retraining"]["attempts"]
    assert {a["requested_by"] for a in periodic} == {"schedule"}
    # detection does not depend on the retrain policy: the same events up to the first swap
    assert rows["never"]["detected"] == rows["any"]["detected"]


def test_selective_labels_hide_declined_outcomes_from_the_loop(
    drifting: tuple[pd.DataFrame, dict[str, Any]], tmp_path: Path
) -> None:
    frame, manifest = drifting
    chosen = Selection(mode=LabelsMode.APPROVED, exploration=0.1, seed=3)
    result = run_backtest(frame, SPEC, options(selection=chosen), manifest, tmp_path)
    p = result.predictions
    seen = p[p["labelled_in_loop"]]
    assert set(seen["decision"]) >= {"approve"}
    declined = p[(p["decision"] != "approve") & p["label"].notna() & p["label_time"].notna()]
    share = declined["labelled_in_loop"].mean()
    assert 0.05 < share < 0.15  # the exploration share, not all of them
    assert (p[p["decision"] == "approve"]["labelled_in_loop"] == p[p["decision"] == "approve"][
        "label_time"
    ].notna()).all()


def test_label_times_come_from_a_column_a_delay_or_the_delay_model() -> None:
    frame, _ = history([])
    by_delay = build_timeline(frame, SPEC, 0.25, LabelSource(delay=timedelta(days=2)))
    gap = by_delay.replay[LABEL_TIME] - by_delay.replay[SPEC.event_time_column]
    assert (gap.dropna() == pd.Timedelta(days=2)).all()
    modelled = build_timeline(frame, SPEC, 0.25, LabelSource(model=LabelPolicy(), seed=1))
    again = build_timeline(frame, SPEC, 0.25, LabelSource(model=LabelPolicy(), seed=1))
    assert modelled.outcome_ms.tolist() == again.outcome_ms.tolist()
    assert 0.85 < len(modelled.outcome_ms) / len(modelled.app_ms) < 0.95  # 10% never known
    assert (modelled.outcome_ms[1:] >= modelled.outcome_ms[:-1]).all()


def test_a_label_time_before_its_application_is_refused() -> None:
    frame, _ = history([])
    frame.loc[5, "outcome_time"] = frame.loc[5, "applied_at"] - pd.Timedelta(hours=1)
    with pytest.raises(LoanStreamError, match="1 rows have a label time before"):
        build_timeline(frame, SPEC, 0.25, LabelSource())


def test_outcomes_built_from_the_table_equal_the_replayed_messages() -> None:
    frame, _ = history([])
    timeline = build_timeline(frame, SPEC, 0.25, LabelSource())
    n = len(timeline.outcome_ms)
    assert n > 8000
    assert timeline.outcomes(0, n, SPEC) == timeline.outcome_messages(0, n, SPEC)
