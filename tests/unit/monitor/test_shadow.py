"""Shadow predictions in the monitor core: joined once in any arrival order, windows equal to an
offline computation on the same rows, nothing in loan.labelled, no change to drift detection."""

from __future__ import annotations

import itertools
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import CollectorRegistry
from sklearn.metrics import roc_auc_score

from loanstream.config import KafkaSettings
from loanstream.contracts import Decision, DriftEvent, Outcome, Prediction
from loanstream.spec import load_spec
from loanstream.topics import DEAD_LETTER, DRIFT_EVENTS, LABELLED
from monitor.metrics import MonitorMetrics
from monitor.performance import WindowMetrics
from monitor.service import MonitorCore
from monitor.settings import MonitorSettings
from monitor.shadow import Half, ShadowJoiner
from monitor.simulate import scored_stream
from monitor.state import SHADOW_STATE, SavedState
from tests.scorer_model import small_model
from tests.trainer_data import history

T0 = datetime(2026, 1, 1, tzinfo=UTC)
PRED, SHADOW, OUT = ("loan.predictions", 0, 0), ("loan.shadow-predictions", 0, 0), ("o", 0, 0)


def core(data_dir: Path, window: int = 5000, step: int = 1000, **refs: object) -> MonitorCore:
    settings = MonitorSettings(data_dir=data_dir, shadow_window=window, shadow_window_step=step)
    metrics = MonitorMetrics(CollectorRegistry())
    kafka = KafkaSettings(topic_prefix="")
    return MonitorCore(kafka, settings, load_spec(), metrics, refs, {}, {}, {})  # type: ignore[arg-type]


def prediction(i: int, p: float, version: str = "1", at: datetime = T0) -> bytes:
    return Prediction(
        application_id=f"a{i}",
        event_time=at,
        probability=p,
        decision=Decision.APPROVE if p >= 0.5 else Decision.DECLINE,
        model_name="loan-repayment",
        model_version=version,
        features={"loan_purpose": "car"},
        received_at=at,
        scored_at=at,
    ).to_json()


def outcome(i: int, label: int) -> bytes:
    return Outcome(
        application_id=f"a{i}", label=label, outcome_time=T0 + timedelta(days=30)
    ).to_json()


def send(
    c: MonitorCore, kind: str, value: bytes
) -> list[tuple[str, bytes | None, bytes, float | None]]:
    if kind == "P":
        return c.on_predictions([(value, PRED)])
    if kind == "S":
        return c.on_shadow_predictions([(value, SHADOW)])
    return c.on_outcomes([(value, OUT)])


@pytest.mark.parametrize("order", ["".join(o) for o in itertools.permutations("PSO")])
def test_each_shadow_prediction_is_joined_and_paired_once_in_any_order(
    tmp_path: Path, order: str
) -> None:
    c = core(tmp_path, window=2, step=1)
    values = {"P": prediction(1, 0.8), "S": prediction(1, 0.3, "2"), "O": outcome(1, 1)}
    send(c, "S", prediction(0, 0.5, "2"))  # the challenger is scoring: outcomes wait for it
    sent = []
    for kind in order + order:  # and every record once again (at-least-once)
        sent += send(c, kind, values[kind])
    assert [m[1] for m in sent if m[0] == LABELLED] == [b"a1"]  # the champion's row only
    assert not [m for m in sent if m[0] == DEAD_LETTER]
    counts = c.shadow.counts()
    assert (counts.joined, counts.paired, counts.pending, counts.waiting) == (1, 1, 1, 0)
    assert counts.duplicates == 2  # the shadow and the outcome again
    assert list(c.shadow.store) == ["a0"]  # the other application's, still waiting
    windows = c.shadow.windows["2"]
    shadow, champion = windows.total("shadow"), windows.total("champion")
    assert shadow is not None and champion is not None
    assert (shadow.count, shadow.mean_probability, champion.mean_probability) == (1, 0.3, 0.8)
    assert windows.champion_version == "1"


def test_a_shadow_whose_outcome_went_by_while_the_join_was_idle_is_counted_late(
    tmp_path: Path,
) -> None:
    c = core(tmp_path)
    send(c, "P", prediction(1, 0.8))
    send(c, "O", outcome(1, 1))  # no shadow seen yet: the outcome does not wait
    assert not c.shadow.store
    send(c, "S", prediction(1, 0.4, "2"))
    assert (c.shadow.counts().late, c.shadow.counts().joined) == (1, 0)
    send(c, "P", prediction(2, 0.8))
    send(c, "O", outcome(2, 0))  # a shadow came lately: now outcomes wait for theirs
    assert c.shadow.counts().waiting == 1
    send(c, "S", prediction(2, 0.4, "2"))
    assert (c.shadow.counts().paired, c.shadow.counts().waiting) == (1, 0)


def test_waits_expire_by_their_clocks(tmp_path: Path) -> None:
    join = ShadowJoiner({}, timedelta(days=10), timedelta(seconds=60))
    old = Prediction.from_json(prediction(1, 0.5, "2", at=T0 - timedelta(days=20)))
    join.on_shadow(old, now=T0)
    join.on_outcome(Outcome.from_json(outcome(2, 1)), None, now=T0)  # active: it waits
    assert (join.counts().pending, join.counts().waiting) == (1, 1)
    counts = join.expire(T0 + timedelta(seconds=61), label_clock=T0)
    assert (counts.pending, counts.waiting, counts.expired, counts.dropped) == (0, 0, 1, 1)
    assert not join.store


def offline(p: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """The monitor's metric definitions computed directly on (p, y) rows: accuracy at 0.5; AUC
    of the 100-bin scores (the monitor's histogram AUC, ties counted half) with scikit-learn;
    ECE over 10 equal-width bins; Brier; log loss with p clipped to [1e-6, 1 - 1e-6]."""
    bins = np.minimum((p * 100).astype(int), 99)
    cal = bins // 10
    ece = sum(abs(p[cal == b].sum() - y[cal == b].sum()) for b in range(10)) / len(p)
    pc = np.clip(p, 1e-6, 1 - 1e-6)
    return {
        "accuracy": float(np.mean((p >= 0.5) == (y == 1))),
        "auc": float(roc_auc_score(y, bins)),
        "ece": float(ece),
        "brier": float(np.mean((y - p) ** 2)),
        "log_loss": float(-np.mean(y * np.log(pc) + (1 - y) * np.log(1 - pc))),
    }


def assert_same(metrics: WindowMetrics | None, expected: dict[str, float], count: int) -> None:
    assert metrics is not None and metrics.count == count
    for name, value in expected.items():
        assert getattr(metrics, name) == pytest.approx(value, abs=1e-9), name


def test_the_challenger_windows_equal_an_offline_computation_on_the_same_rows(
    tmp_path: Path,
) -> None:
    rng = np.random.default_rng(7)
    n = 3000
    y = (rng.random(n) < 0.8).astype(int)
    champion = np.clip(0.55 + 0.3 * (y - 0.8) + rng.normal(0, 0.2, n), 0.0, 1.0)
    challenger = np.clip(0.55 + 0.4 * (y - 0.8) + rng.normal(0, 0.15, n), 0.0, 1.0)
    scored = rng.random(n) < 0.9  # a tenth of the applications was scored before the challenger
    c = core(tmp_path, window=1000, step=500)
    records = []
    for i in range(n):  # every application's three records, in a random order each
        kinds = ["P", "S", "O"] if scored[i] else ["P", "O"]
        random.Random(i).shuffle(kinds)
        values = {
            "P": prediction(i, champion[i]),
            "S": prediction(i, challenger[i], "2"),
            "O": outcome(i, int(y[i])),
        }
        records += [(k, values[k]) for k in kinds]
    send(c, "S", prediction(n, 0.5, "2"))  # a challenger is scoring from the start
    sent = [m for kind, value in records for m in send(c, kind, value)]
    c.tick(datetime.now(UTC))
    labelled = [m for m in sent if m[0] == LABELLED]
    assert len(labelled) == n  # the champion's rows, and no other
    assert all(b'"model_version":"1"' in m[2] for m in labelled)
    windows = c.shadow.windows["2"]
    rows = np.flatnonzero(scored)
    assert_same(windows.total("all"), offline(challenger[rows], y[rows]), len(rows))
    assert_same(windows.total("shadow"), offline(challenger[rows], y[rows]), len(rows))
    assert_same(windows.total("champion"), offline(champion[rows], y[rows]), len(rows))
    gauge = c.metrics.registry.get_sample_value
    labels = {"model_version": "2", "role": "shadow", "rows": "paired", "metric": "auc"}
    assert gauge("loanstream_monitor_version_total_metric", labels) == pytest.approx(
        offline(challenger[rows], y[rows])["auc"], abs=1e-9
    )
    paired = {"model_version": "2", "rows": "paired"}
    assert gauge("loanstream_monitor_shadow_outcomes", paired) == len(rows)
    # the latest closed count windows: when the outcomes come last, in order, they hold the
    # last 1,000 applications' rows
    join = ShadowJoiner({}, timedelta(days=400), timedelta(hours=1), size=1000, step=500)
    for i in rows:
        join.on_shadow(Prediction.from_json(prediction(int(i), challenger[i], "2")), T0)
    closed = []
    for i in rows:
        half = Half(float(champion[i]), "1", bool(champion[i] >= 0.5))
        closed += join.on_outcome(Outcome.from_json(outcome(int(i), int(y[i]))), half, T0)
    last = {(w.rows, w.role): w.window for w in closed}
    for (kind, role), p in ((("all", "shadow"), challenger), (("paired", "champion"), champion)):
        window = last[kind, role]
        assert (window.start, window.end) == (len(rows) // 500 * 500 - 1000, len(rows) // 500 * 500)
        tail = rows[window.start : window.end]
        assert_same(window.metrics, offline(p[tail], y[tail]), 1000)


def test_the_shadow_windows_round_trip_through_the_snapshot(tmp_path: Path) -> None:
    c = core(tmp_path, window=4, step=2)
    for i in range(7):
        send(c, "P", prediction(i, 0.9 - i / 10))
        send(c, "S", prediction(i, 0.2 + i / 10, "2"))
        send(c, "O", outcome(i, i % 2))
    state = c.snapshot()
    assert set(state) == {SHADOW_STATE}  # no reference: no pipeline
    restored = core(tmp_path, window=4, step=2)
    restored.restore(SavedState(pipelines=state))
    assert restored.snapshot() == state
    for c_ in (c, restored):  # both carry on alike
        send(c_, "P", prediction(7, 0.6))
        send(c_, "S", prediction(7, 0.7, "2"))
        send(c_, "O", outcome(7, 1))
    assert restored.snapshot() == c.snapshot()
    broken = core(tmp_path)
    broken.restore(SavedState(pipelines={SHADOW_STATE: {"format": 99}}))
    assert broken.shadow.windows == {}  # unreadable: starts fresh, counted
    unreadable = broken.metrics.registry.get_sample_value(
        "loanstream_monitor_state_unreadable_total"
    )
    assert unreadable == 1.0


def test_a_hostile_shadow_record_is_dead_lettered(tmp_path: Path) -> None:
    c = core(tmp_path)
    sent = c.on_shadow_predictions([(b"{not json", SHADOW), (None, SHADOW)])
    assert [m[0] for m in sent] == [DEAD_LETTER, DEAD_LETTER]
    ok = c.metrics.registry.get_sample_value(
        "loanstream_monitor_messages_total", {"kind": "shadow", "result": "dead_letter"}
    )
    assert ok == 2.0


def test_a_shadow_stream_changes_no_drift_detection(tmp_path: Path) -> None:
    model = small_model(seed=3)
    frame, spec = history(22_000, seed=21, scenario="concept-drift")
    scored = list(scored_stream(model, frame, spec))
    runs = []
    for with_shadow in (False, True):
        settings = MonitorSettings(data_dir=tmp_path, time_past_days=36500)
        metrics = MonitorMetrics(CollectorRegistry())
        c = MonitorCore(
            KafkaSettings(topic_prefix=""),
            settings,
            spec,
            metrics,
            {model.version: model.reference},
            {},
            {},
            {},
        )
        sent = []
        for start in range(0, len(scored), 500):
            chunk = scored[start : start + 500]
            sent += c.on_predictions([(s.prediction.to_json(), PRED) for s in chunk])
            if with_shadow:
                shadows = [
                    s.prediction.model_copy(
                        update={
                            "model_version": "shadow-9",
                            "probability": 1 - s.prediction.probability,
                        }
                    ).to_json()
                    for s in chunk
                ]
                sent += c.on_shadow_predictions([(v, SHADOW) for v in shadows])
            outcomes = [
                Outcome(
                    application_id=s.labelled.application_id,
                    label=s.labelled.label,
                    outcome_time=s.labelled.outcome_time,
                ).to_json()
                for s in chunk
                if s.labelled is not None
            ]
            sent += c.on_outcomes([(v, OUT) for v in outcomes])
        state = {v: p.to_dict() for v, p in c.pipelines.items()}
        seen = [  # the events without the wall-clock time they were detected at
            (m[0], DriftEvent.from_json(m[2]).model_dump(exclude={"detected_at"}))
            if m[0] == DRIFT_EVENTS
            else m
            for m in sent
            if m[0] in (DRIFT_EVENTS, LABELLED)
        ]
        runs.append((seen, state, c))
    (plain, plain_state, _), (shadowed, shadowed_state, c) = runs
    assert any(m[0] == DRIFT_EVENTS for m in plain)  # the drift is there to be found
    assert shadowed == plain
    assert shadowed_state == plain_state
    assert c.shadow.counts().joined > 15_000


def test_the_report_shows_both_models_on_the_paired_rows(tmp_path: Path) -> None:
    import pandas as pd

    from monitor.report import build_report

    rng = np.random.default_rng(3)
    n = 2000
    y = (rng.random(n) < 0.8).astype(int)
    champion = np.clip(0.6 + 0.2 * (y - 0.8) + rng.normal(0, 0.2, n), 0.0, 1.0)
    challenger = np.clip(0.6 + 0.3 * (y - 0.8) + rng.normal(0, 0.15, n), 0.0, 1.0)
    ids = [f"a{i}" for i in range(n)]
    labelled = pd.DataFrame(
        {
            "application_id": ids,
            "event_time": pd.Timestamp("2026-01-01", tz="UTC") + pd.to_timedelta(range(n), "min"),
            "probability": champion,
            "label": y,
            "decision": np.where(champion >= 0.5, "approve", "decline"),
            "model_version": "1",
        }
    )
    shown = np.arange(n) % 4 != 0  # a quarter was scored before the challenger came
    shadow = pd.DataFrame(
        {
            "application_id": [ids[i] for i in np.flatnonzero(shown)] + ["stranger"],
            "model_version": "2",
            "probability": [*challenger[shown], 0.5],
            "decision": "approve",
        }
    )
    result = build_report(labelled, tmp_path, window=500, shadow=shadow)
    (comparison,) = result.comparisons
    rows = np.flatnonzero(shown)
    assert (comparison.challenger_version, comparison.shared_outcomes) == ("2", len(rows))
    assert comparison.champion_versions == ("1",)
    for metrics, p in ((comparison.champion, champion), (comparison.challenger, challenger)):
        expected = offline(p[rows], y[rows])
        for name in ("accuracy", "auc", "ece", "brier", "log_loss"):
            assert getattr(metrics, name) == pytest.approx(expected[name], abs=1e-9)
    assert len(comparison.windows) == 3  # 1,500 paired rows in windows of 500
    assert (tmp_path / "shadow.png").exists()
    html = result.html.read_text()
    assert "Champion and challenger on the same applications" in html
    assert result.summary["shadow"][0]["shared_outcomes"] == len(rows)
    plain = build_report(labelled, tmp_path / "plain", window=500)
    assert plain.comparisons == () and not (tmp_path / "plain" / "shadow.png").exists()
