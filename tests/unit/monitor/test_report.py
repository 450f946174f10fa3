"""The HTML report: files, numbers checked against scikit-learn and the live drift monitor, the
concept drift the estimate misses, escaping of hostile names, and refused input."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from scipy.stats import ks_2samp
from sklearn.metrics import accuracy_score, brier_score_loss, roc_auc_score

from loanstream.contracts import DriftEvent, DriftSignal
from loanstream.spec import FeatureSpec
from monitor.datadrift import DataDriftMonitor
from monitor.estimate import expected_metrics
from monitor.report import ReportResult, build_report
from producer.generator import TRUE_PROBABILITY
from tests.trainer_data import history
from trainer.reference import reference_profile

ROWS, WINDOW, SEED = 30_000, 5000, 3
STEPS = [
    "sorting rows by event time",
    "computing windowed metrics",
    "comparing features with the reference",
    "plotting performance",
    "plotting reliability",
    "plotting predictions",
    "plotting rates",
    "writing the HTML report",
]


def labelled_rows(rows: int, seed: int) -> tuple[pd.DataFrame, FeatureSpec]:
    """Loan.labelled rows, shuffled: incomes and credit scores shift at 20,000 and repayment
    changes (concept drift); the probability is P(repaid) of the world before the concept drift
    on the shifted applicants, so a calibrated model that never saw the concept drift."""
    drifted, spec = history(rows, seed=seed, scenario="covariate-shift+concept-drift")
    before, _ = history(rows, seed=seed, scenario="covariate-shift")
    assert drifted[spec.feature_names].equals(before[spec.feature_names])  # same applicants
    p = before[TRUE_PROBABILITY].to_numpy()
    frame = pd.DataFrame(
        {
            "application_id": drifted["application_id"],
            "event_time": drifted["applied_at"],
            "outcome_time": drifted["outcome_time"],
            "probability": p,
            "decision": np.where(p >= 0.6, "approve", np.where(p >= 0.4, "review", "decline")),
            "model_name": "loan-repayment",
            "model_version": np.where(np.arange(rows) < 15_000, "1", "2"),
            "label": drifted["repaid"].astype(int),
        }
    )
    for name in spec.feature_names:
        frame[name] = drifted[name]
    return frame.sample(frac=1.0, random_state=seed, ignore_index=True), spec


def drift_event(frame: pd.DataFrame, position: int, **fields: Any) -> DriftEvent:
    times = frame["event_time"].sort_values(ignore_index=True)
    values: dict[str, Any] = {
        "event_id": f"e-{position}",
        "signal": DriftSignal.CONCEPT,
        "detector": "hddm_w",
        "statistic": 0.31,
        "threshold": 0.2,
        "p_value": 0.0004,
        "window_size": 2000,
        "first_position": position - 700,
        "confirmed_position": position,
        "first_event_time": times[position - 700].to_pydatetime(),
        "confirmed_event_time": times[position].to_pydatetime(),
        "model_name": "loan-repayment",
        "model_version": "2",
    }
    return DriftEvent(**(values | fields))


@dataclass(frozen=True)
class Built:
    frame: pd.DataFrame
    spec: FeatureSpec
    reference: dict[str, Any]
    result: ReportResult
    html: str
    steps: list[str]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    frame, spec = labelled_rows(ROWS, SEED)
    train, _ = history(20_000, seed=SEED + 1)
    reference = reference_profile(train, spec, train[TRUE_PROBABILITY].to_numpy())
    events = [
        drift_event(frame, 21_400),
        drift_event(frame, 20_500, signal=DriftSignal.DATA, detector="psi", feature="credit_score"),
    ]
    steps: list[str] = []
    result = build_report(
        frame,
        tmp_path_factory.mktemp("report"),
        reference=reference,
        drift_events=events,
        window=WINDOW,
        on_step=steps.append,
        labels="all",  # every row of this history has its outcome, whatever the decision
    )
    return Built(frame, spec, reference, result, result.html.read_text("utf-8"), steps)


def window_rows(frame: pd.DataFrame, start: int, end: int) -> pd.DataFrame:
    return frame.sort_values("event_time", ignore_index=True).iloc[start:end]


def test_report_writes_one_html_with_four_pngs_beside_it(built: Built) -> None:
    result = built.result
    assert [p.name for p in result.plots] == [
        "performance.png",
        "reliability.png",
        "predictions.png",
        "rates.png",
    ]
    for png in result.plots:
        assert png.parent == result.html.parent
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f'<img src="{png.name}"' in built.html
    assert built.steps == STEPS
    assert 0.0 < result.seconds < 20.0
    json.dumps(result.summary)  # headline numbers are plain JSON values


def test_window_metrics_match_scikit_learn_and_the_batch_estimate(built: Built) -> None:
    windows = built.result.windows
    assert [(w.start, w.end) for w in windows] == [(i, i + WINDOW) for i in range(0, ROWS, WINDOW)]
    for w in windows:
        rows = window_rows(built.frame, w.start, w.end)
        p, y = rows["probability"].to_numpy(), rows["label"].to_numpy()
        assert w.realized.count == WINDOW
        assert w.realized.accuracy == accuracy_score(y, p >= 0.5)
        assert w.realized.auc == pytest.approx(roc_auc_score(y, p), abs=1e-3)
        assert w.realized.gini == pytest.approx(2 * roc_auc_score(y, p) - 1, abs=2e-3)
        ks = ks_2samp(p[y == 1], p[y == 0]).statistic
        assert w.realized.ks == pytest.approx(ks, abs=0.01)  # 100 bins: exact at bin edges
        assert w.realized.ks <= ks + 1e-12  # a histogram only sees the gap at its edges
        assert w.realized.brier == pytest.approx(brier_score_loss(y, p), rel=1e-12)
        assert w.realized.default_rate == pytest.approx(1 - y.mean(), abs=1e-12)
        assert w.realized.approval_rate == np.mean(rows["decision"] == "approve")
        assert w.estimate == expected_metrics(p, rows["decision"].to_numpy() == "approve")
        assert w.first_time == rows["event_time"].iloc[0]
        assert w.model_versions == tuple(pd.unique(rows["model_version"]))
    y_all, p_all = built.frame["label"], built.frame["probability"]
    summary = built.result.summary
    assert summary["accuracy"] == accuracy_score(y_all, p_all >= 0.5)
    assert summary["accuracy_estimate"] == pytest.approx(
        expected_metrics(p_all.to_numpy()).accuracy, rel=1e-12
    )
    assert (summary["rows"], summary["windows"], summary["model_versions"]) == (
        ROWS,
        6,
        ["1", "2"],
    )


def test_concept_drift_shows_as_realized_accuracy_falling_below_the_estimate(
    built: Built,
) -> None:
    gaps = [w.estimate.accuracy - w.realized.accuracy for w in built.result.windows]
    assert [i for i, gap in enumerate(gaps) if gap > 0.05] == [4, 5]  # drift starts at 20,000
    assert max(abs(gap) for gap in gaps[:4]) < 0.015
    summary = built.result.summary
    assert summary["last_window_accuracy"] == built.result.windows[-1].realized.accuracy
    assert summary["last_window_accuracy_estimate"] - summary["last_window_accuracy"] > 0.1


def test_feature_drift_matches_the_live_monitor_on_the_last_window(built: Built) -> None:
    drift = {d.feature: d for d in built.result.drift}
    assert list(drift) == [*built.spec.feature_names, "probability"]
    assert {n for n, d in drift.items() if d.band == "act"} == {"credit_score", "probability"}
    assert built.result.summary["features_act"] == ["credit_score", "probability"]
    assert {d.first_band for d in drift.values()} == {"stable"}
    monitor = DataDriftMonitor(
        built.reference, built.spec, size=WINDOW, step=WINDOW, target_run_length=10 * WINDOW
    )
    rows = window_rows(built.frame, ROWS - WINDOW, ROWS)
    features = rows[built.spec.feature_names].to_dict("records")
    for values, p in zip(features, rows["probability"], strict=True):
        monitor.update(values, p)
    assert monitor.last_check is not None
    for check in monitor.last_check.features:
        name = "probability" if check.signal == "prediction" else check.feature
        mine = drift[name]
        assert mine.psi == pytest.approx(check.psi, rel=1e-9), name
        assert mine.missing_rate == pytest.approx(check.missing_rate, abs=1e-12), name
        if check.wasserstein is None:
            assert mine.wasserstein is mine.ks_p is None
        else:
            assert mine.wasserstein == pytest.approx(check.wasserstein, rel=1e-9), name
            assert mine.ks_p == pytest.approx(check.ks_p, rel=1e-9, abs=1e-300), name
    employment = drift["employment_length"]
    assert employment.missing_rate == rows["employment_length"].isna().mean() > 0.04
    assert (drift["loan_purpose"].kind, drift["loan_purpose"].wasserstein) == ("categorical", None)


def test_drift_events_are_listed_in_the_html(built: Built) -> None:
    assert built.result.summary["drift_events"] == 2
    html = built.html
    events = html[html.index("<h2>Drift events</h2>") : html.index("<h2>How to read")]
    assert events.index("psi") < events.index("hddm_w")  # ordered by confirmation time
    for needle in ("concept", "credit_score", "20500", "21400", "0.3100", "4.0e-04"):
        assert needle in events
    confirmed = window_rows(built.frame, 21_400, 21_401)["event_time"].iloc[0]
    assert confirmed.strftime("%Y-%m-%d %H:%M:%S") in events


def test_the_report_says_which_population_the_realized_figures_stand_on(built: Built) -> None:
    counts = built.frame["decision"].value_counts()
    summary = built.result.summary
    assert summary["labelled_by_decision"] == {
        d: int(counts[d]) for d in ("approve", "review", "decline")
    }
    assert sum(summary["labelled_share_by_decision"].values()) == pytest.approx(1.0)
    approved = int(counts["approve"])
    explored = ROWS - approved
    assert (summary["approved_rows"], summary["explored_rows"]) == (approved, explored)
    sentence = (
        "Every application could get an outcome in this run, whatever its decision (no "
        f"selective labels): realized on all {ROWS:,} labelled applications, {approved:,} "
        f"approved and {explored:,} reviewed or declined."
    )
    assert (summary["labels"], summary["population"]) == ("all", sentence)
    html = built.html
    cards_end = html.index('</div>\n<p class="note" id="population">')
    population = html[cards_end : html.index("<h2>Performance over time</h2>")]
    assert sentence in population  # right under the realized metrics
    shares = ", ".join(
        f"{d} {int(counts[d]):,} ({counts[d] / ROWS:.1%})" for d in ("approve", "review", "decline")
    )
    assert f"Labelled rows by decision: {shares}." in population


def test_the_population_of_an_approved_only_feed_with_explored_rows(tmp_path: Path) -> None:
    frame = small_frame(1000)
    frame["decision"] = ["approve"] * 950 + ["review"] * 30 + ["decline"] * 20
    result = build_report(frame, tmp_path / "selective", window=1000, labels="approved")
    assert result.summary["population"] == (
        "Selective labels: outcomes exist only for approved applications and the explored "
        "reviews and declines, so the realized figures stand on 950 approved and 50 explored "
        "applications."
    )
    html = result.html.read_text("utf-8")
    assert result.summary["population"] in html and "no selective labels" not in html
    unsaid = build_report(frame, tmp_path / "unsaid", window=1000).summary["population"]
    assert unsaid == (
        "Realized on the 1,000 applications with an outcome: 950 approved and 50 reviewed or "
        "declined (the run did not say whether outcomes were selective)."
    )
    assert result.summary["population_shares"] == (
        "Labelled rows by decision: approve 950 (95.0%), review 30 (3.0%), decline 20 (2.0%)."
    )
    assert result.summary["approval_rate"] == 0.95


def small_frame(rows: int, seed: int = 5) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    p = rng.random(rows)
    start = pd.Timestamp("2025-03-01", tz="UTC")
    return pd.DataFrame(
        {
            "event_time": start + pd.to_timedelta(np.arange(rows), unit="min"),
            "probability": p,
            "label": (rng.random(rows) < p).astype(int),
            "decision": np.where(p >= 0.5, "approve", "decline"),
            "model_version": "1",
            "income": np.where(rng.random(rows) < 0.1, np.nan, rng.lognormal(10, 0.4, rows)),
            "purpose": rng.choice(np.array(["car", "home", None], dtype=object), size=rows),
        }
    )


def test_hostile_names_and_versions_are_escaped(tmp_path: Path) -> None:
    frame = small_frame(3000).rename(columns={"income": "<script>alert('f')</script>"})
    frame["model_version"] = np.where(
        np.arange(3000) < 1500, "1", '"><img src=x onerror=alert(1)> $\\nocommand{$'
    )
    event = drift_event(frame, 2000, detector="<b>adwin</b>", model_version="<i>2</i>")
    result = build_report(
        frame, tmp_path, drift_events=[event], window=1000, title="<title>&report"
    )
    html = result.html.read_text("utf-8")
    for raw in ("<script>alert", "<img src=x", "<b>adwin", "<i>2", "<title>&report"):
        assert raw not in html
    for escaped in ("&lt;script&gt;alert(", "&lt;img src=x", "&lt;b&gt;adwin", "&amp;report"):
        assert escaped in html
    assert result.drift[0].feature == "<script>alert('f')</script>"


def test_single_class_one_window_no_reference_and_missing_values(tmp_path: Path) -> None:
    frame = small_frame(800)
    frame["label"] = 1
    result = build_report(frame, tmp_path, window=WINDOW)
    (window,) = result.windows
    assert (window.start, window.end, window.realized.auc) == (0, 800, None)
    assert (window.realized.default_rate, result.summary["auc"]) == (0.0, None)
    assert result.summary["reference"] == "first window"
    assert [(d.feature, d.kind, d.first_psi, d.band) for d in result.drift] == [
        ("income", "numeric", None, "stable"),
        ("purpose", "categorical", None, "stable"),
        ("probability", "numeric", None, "stable"),
    ]
    income = result.drift[0]
    assert income.missing_rate == frame["income"].isna().mean() == 0.11
    assert income.reference_missing == pytest.approx(0.11, abs=1e-12)
    html = result.html.read_text("utf-8")
    assert "No model reference was given: the first 800 rows are the reference." in html
    assert "n/a" in html


@pytest.mark.parametrize(
    ("rows", "ends"), [(12_400, [5000, 12_400]), (12_600, [5000, 10_000, 12_600])]
)
def test_a_short_remainder_joins_the_last_window(
    tmp_path: Path, rows: int, ends: list[int]
) -> None:
    frame = small_frame(rows)
    frame["event_time"] = frame["event_time"].dt.tz_convert("America/New_York")
    shuffled = frame.sample(frac=1.0, random_state=1, ignore_index=True)
    result = build_report(shuffled, tmp_path, window=WINDOW)
    assert [w.end for w in result.windows] == ends
    assert [w.first_time for w in result.windows] == [
        frame["event_time"][0] + timedelta(minutes=start) for start in [0, *ends[:-1]]
    ]  # ordered as instants, whatever the zone
    assert sum(w.realized.count for w in result.windows) == rows


def test_bad_input_is_refused_with_what_was_expected(tmp_path: Path) -> None:
    frame = small_frame(100)
    with pytest.raises(ValueError, match="got an empty frame"):
        build_report(frame.iloc[:0], tmp_path)
    with pytest.raises(ValueError, match=r"missing \['label'\]"):
        build_report(frame.drop(columns="label"), tmp_path)
    with pytest.raises(ValueError, match="window must be a positive number of rows, got 0"):
        build_report(frame, tmp_path, window=0)
    with pytest.raises(ValueError, match=r"labels must be one of \('all', 'approved'\)"):
        build_report(frame, tmp_path, labels="some")
    naive = frame.assign(event_time=frame["event_time"].dt.tz_localize(None))
    with pytest.raises(ValueError, match="time-zone-aware"):
        build_report(naive, tmp_path)
    bad_p = frame.assign(probability=np.r_[1.5, np.nan, frame["probability"][2:]])
    expected = r"probability must be within \[0, 1\], got 2 rows like 1.5"
    with pytest.raises(ValueError, match=expected):
        build_report(bad_p, tmp_path)
    with pytest.raises(ValueError, match="label must be 0 or 1, got 1 rows like 2"):
        build_report(frame.assign(label=np.r_[2, frame["label"][1:]]), tmp_path)
    assert not list(tmp_path.iterdir())  # nothing written for refused input


def test_ranking_leads_with_gini_and_ks_and_accuracy_comes_last(built: Built) -> None:
    summary = built.result.summary
    y, p = built.frame["label"].to_numpy(), built.frame["probability"].to_numpy()
    assert summary["gini"] == pytest.approx(2 * roc_auc_score(y, p) - 1, abs=2e-3)
    assert summary["ks"] == pytest.approx(ks_2samp(p[y == 1], p[y == 0]).statistic, abs=0.01)
    last = built.result.windows[-1].realized
    assert (summary["last_window_gini"], summary["last_window_ks"]) == (last.gini, last.ks)
    cards = built.html[
        built.html.index('<div class="cards">') : built.html.index('id="population"')
    ]
    assert cards.index("AUC") < cards.index("Gini") < cards.index("KS") < cards.index("ECE")
    assert cards.index("ECE") < cards.index("accuracy")  # accuracy at 0.5 is the last card
    windows = built.html[built.html.index("<h2>Windows</h2>") : built.html.index("<h2>Feature")]
    assert windows.index("<th>Gini</th>") < windows.index("<th>accuracy</th>")


def test_the_score_has_a_psi_and_each_feature_a_csi_with_its_band(built: Built) -> None:
    summary = built.result.summary
    score = next(d for d in built.result.drift if d.feature == "probability")
    assert (summary["score_psi"], summary["score_psi_band"]) == (score.psi, "act")
    table = built.html[built.html.index("<h2>Feature and prediction drift") :]
    table = table[: table.index("</table>")]
    assert "Bands: stable &lt; 0.1 ≤ watch &lt; 0.25 ≤ act." in table
    assert table.count('<td class="l">CSI</td>') == len(built.spec.feature_names)
    assert table.count('<td class="l">PSI</td>') == 1
    credit = table[table.index("credit_score") :]
    assert '<td class="l act">act</td>' in credit[: credit.index("</tr>")]


def test_a_drift_is_drawn_where_it_became_knowable_with_its_evidence(built: Built) -> None:
    marks = {m["signal"]: m for m in built.result.summary["drift_marks"]}
    ordered = built.frame.sort_values("event_time", ignore_index=True)
    confirming = ordered.iloc[21_400]
    concept = marks["concept"]
    # the confirming outcome arrived long after its application: that is when it was known
    assert concept["known_by"] == "outcome"
    assert concept["known_at"] == confirming["outcome_time"].to_pydatetime(warn=False).isoformat()
    assert concept["known_at"] > concept["evidence_to"]
    assert concept["evidence_from"] == ordered["event_time"][20_700].isoformat()
    assert concept["evidence_to"] == confirming["event_time"].isoformat()
    data = marks["data"]  # a data drift is known when the confirming application is scored
    assert (data["known_by"], data["known_at"]) == (
        "scoring",
        ordered["event_time"][20_500].isoformat(),
    )
    assert "drawn where it became knowable" in built.html
    events = built.html[built.html.index("<h2>Drift events</h2>") :]
    assert "(outcome)" in events and "(scoring)" in events
