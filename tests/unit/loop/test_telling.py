"""The one-line sentences people (and the webhook notifier) read for each record kind."""

from __future__ import annotations

from datetime import UTC, datetime

from loanstream.contracts import DriftEvent, ModelUpdate, RetrainOutcome, RetrainResult
from loop.telling import (
    drift_sentence,
    psi_band,
    result_sentence,
    statistic_name,
    update_sentence,
)

T = datetime(2026, 3, 1, tzinfo=UTC)


def event(**overrides: object) -> DriftEvent:
    fields: dict[str, object] = {
        "event_id": "drift-1",
        "signal": "concept",
        "detector": "adwin",
        "statistic": 13.81551,
        "threshold": 9.21034,
        "p_value": 1e-6,
        "window_size": 400,
        "first_position": 10_234,
        "confirmed_position": 10_812,
        "first_event_time": T,
        "confirmed_event_time": T,
        "model_name": "loan-default",
        "model_version": "1",
    }
    return DriftEvent.model_validate({**fields, **overrides})


def test_concept_drift_names_its_statistic_threshold_and_p_value() -> None:
    assert drift_sentence(event()) == (
        "concept drift on loan-default v1: log-likelihood ratio 13.82 against threshold 9.21, "
        "p=1e-06, adwin over 400 events"
    )


def test_psi_is_read_in_its_band() -> None:
    assert [psi_band(x) for x in (0.05, 0.1, 0.2, 0.25, 0.4)] == [
        "stable", "watch", "watch", "act", "act",
    ]  # fmt: skip
    watch = event(signal="data", detector="psi[watch]", feature="income", statistic=0.17)
    assert "in income" in drift_sentence(watch)
    assert "PSI 0.17 (watch band, ≥ 0.1)" in drift_sentence(watch)
    prediction = event(signal="prediction", detector="psi[act]", statistic=0.3, p_value=None)
    assert "PSI 0.3 (act band, ≥ 0.25) against threshold 9.21, psi[act]" in drift_sentence(
        prediction
    )


def test_a_segment_cusum_is_called_so() -> None:
    segment = event(signal="performance", detector="segment-cusum[0.05]", feature="grade=B")
    assert drift_sentence(segment).startswith(
        "performance drift in grade=B on loan-default v1: CUSUM 13.82"
    )


def result(outcome: RetrainOutcome, **overrides: object) -> RetrainResult:
    fields: dict[str, object] = {
        "model_name": "loan-default",
        "outcome": outcome,
        "reason": "",
        "finished_at": T,
    }
    return RetrainResult.model_validate({**fields, **overrides})


def test_each_outcome_reads_as_a_sentence() -> None:
    promoted = result(
        RetrainOutcome.PROMOTED,
        reason="AUC +0.04 over the champion",
        challenger_version="2",
        champion_version="2",
        metrics={"auc": 0.81, "ece": 0.01, "tn": 3.0},
        champion_metrics={"auc": 0.77},
    )
    assert result_sentence(promoted) == (
        "promoted v2 of loan-default; AUC +0.04 over the champion; auc 0.8100 vs 0.7700, ece 0.0100"
    )
    kept = result(
        RetrainOutcome.KEPT_CHAMPION,
        reason="AUC margin 0.001 < 0.005",
        challenger_version="3",
        champion_version="2",
    )
    assert result_sentence(kept) == ("kept v2 of loan-default: v3 lost; AUC margin 0.001 < 0.005")
    waiting = result(RetrainOutcome.WAITING, rows=1200, rows_needed=2000)
    assert result_sentence(waiting) == (
        "retrain of loan-default still waiting for labels (1,200 of 2,000 rows)"
    )
    shadow = result(RetrainOutcome.SHADOWING, challenger_version="3", champion_version="2")
    assert result_sentence(shadow).startswith("v3 of loan-default scores in shadow beside v2")
    failed = result(RetrainOutcome.FAILED, reason="no labelled rows in the window")
    assert result_sentence(failed) == (
        "retrain of loan-default failed; no labelled rows in the window"
    )


def test_an_update_names_the_new_champion() -> None:
    update = ModelUpdate(
        model_name="loan-default",
        version="2",
        run_id="0123456789abcdef",
        model_uri="models:/loan-default/2",
        sha256="0" * 64,
        metrics={"auc": 0.8, "brier": 0.1},
    )
    assert update_sentence(update) == (
        "loan-default v2 is the champion now (run 0123456789ab); auc 0.8000, brier 0.1000"
    )


def test_a_label_test_drift_tells_its_region_and_effect() -> None:
    e = event(
        detector="label-cusum[-1]",
        feature="loan_purpose=car",
        expected_rate=0.812,
        observed_rate=0.64,
    )
    assert statistic_name(e) == "CUSUM"
    assert drift_sentence(e).endswith("; repaid 64.0% where the model promised 81.2%")
    assert " in loan_purpose=car " in drift_sentence(e)
