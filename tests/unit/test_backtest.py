"""The pure parts of ``loanstream backtest``: split, positions, manifest shift, with/without."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import pytest
from rich.console import Console

from loanstream.contracts import DriftSignal
from loanstream.errors import LoanStreamError
from loanstream.spec import load_spec
from loop.kafka_backtest import (
    TrainingHold,
    compare,
    positions_of,
    rolling,
    shift_manifest,
    split_history,
)
from loop.story import Labelled, Scored, summarize
from tests.unit.test_loop import at, event, update

SPEC = load_spec()


def history(rows: int, seed: int = 3) -> pd.DataFrame:
    """A lender's file: non-synthetic ids, rows out of event-time order."""
    rng = np.random.default_rng(seed)
    times = pd.Timestamp("2025-01-01", tz="UTC") + pd.to_timedelta(
        rng.permutation(rows), unit="min"
    )
    return pd.DataFrame(
        {"application_id": [f"LN-{i:05d}" for i in range(rows)], "applied_at": times}
    )


def test_the_split_cuts_by_event_time_and_keeps_every_row_once() -> None:
    frame = history(100)
    split = split_history(frame, SPEC, 0.25)
    assert (len(split.train), len(split.replay)) == (25, 75)
    assert split.train["applied_at"].max() < split.replay["applied_at"].min()
    assert split.replay["applied_at"].is_monotonic_increasing
    assert sorted([*split.train.application_id, *split.replay.application_id]) == sorted(
        frame.application_id
    )
    assert list(split.replay.index) == list(range(75))


def test_the_split_refuses_a_fraction_that_leaves_nothing() -> None:
    with pytest.raises(LoanStreamError, match="within"):
        split_history(history(10), SPEC, 1.0)
    with pytest.raises(LoanStreamError, match="nothing to train"):
        split_history(history(10), SPEC, 0.01)


def test_positions_follow_the_replayed_event_time_order() -> None:
    split = split_history(history(100), SPEC, 0.25)
    positions = positions_of(split.replay, SPEC)
    assert len(positions) == 75
    first, last = split.replay.application_id.iloc[0], split.replay.application_id.iloc[-1]
    assert (positions[first], positions[last]) == (0, 74)
    assert positions.get("app-1-000000001") is None  # not ours


def test_the_manifest_counts_from_the_first_replayed_row() -> None:
    manifest = {
        "drifts": [
            {"start_position": 20_000, "full_position": 20_000, "within_run": True},
            {"start_position": 5_000, "within_run": True},
        ]
    }
    shifted = shift_manifest(manifest, 10_000)
    late, early = shifted["drifts"]
    assert (late["start_position"], late["file_start_position"], late["within_run"]) == (
        10_000,
        20_000,
        True,
    )
    assert early["within_run"] is False  # it drifted inside the training part
    assert shifted["replay_offset"] == 10_000


def test_with_and_without_retraining_over_the_same_rows_on_a_seeded_frame() -> None:
    rng = np.random.default_rng(11)
    n, promoted = 1000, 600
    labels = rng.integers(0, 2, n)
    # the served model is right 90% of the time after the promotion, the first champion 60%
    right_new = rng.random(n) < 0.9
    right_old = rng.random(n) < 0.6
    served = np.where(right_new == (labels == 1), 0.8, 0.2)
    baseline = np.where(right_old == (labels == 1), 0.8, 0.2)
    served[:promoted] = baseline[:promoted]  # before the promotion the loop served v1
    labelled = [
        Labelled(i, "1" if i < promoted else "2", float(served[i]), int(labels[i]))
        for i in range(n)
        if i % 3  # a third never labelled
    ]
    result = compare(labelled, baseline, promoted)
    kept = [i for i in range(promoted, n) if i % 3]
    assert result.rows == len(kept) == 266
    assert result.with_retraining == pytest.approx(np.mean(right_new[kept]))
    assert result.without_retraining == pytest.approx(np.mean(right_old[kept]))
    assert result.gain is not None and result.gain > 0.2
    before = compare(labelled, baseline, 0)
    assert before.rows == len(labelled)
    at, with_, without = rolling(labelled, baseline, 100)
    assert len(at) == len(with_) == len(without) == len(labelled) - 99
    assert with_[0] == without[0]  # the first window is all v1: the same predictions
    assert with_[-1] > without[-1]


def test_compare_without_a_promotion_says_so() -> None:
    result = compare([Labelled(0, "1", 0.9, 1)], np.array([0.9]), None)
    assert (result.rows, result.with_retraining, result.gain) == (0, None, None)


def test_without_a_manifest_stale_scoring_counts_from_the_detection() -> None:
    # v2 serves from application 1,800; the concept drift was confirmed at 1,150
    scored = [Scored(p, "1" if p < 1800 else "2", at(p).timestamp()) for p in range(2500)]
    labelled = [Labelled(p, "1" if p < 1800 else "2", 0.9, 1) for p in range(0, 2500, 10)]
    summary = summarize(
        {},
        [event(DriftSignal.CONCEPT, 1150)],
        [],
        [update("1", 0), update("2", 1700)],
        scored,
        labelled,
    )
    assert summary.drift_position is None
    assert summary.detected_position == 1150
    assert summary.first_served_position == 1800
    assert summary.stale_scored == 1800 - 1150
    assert [(p.name, p.count) for p in summary.phases] == [
        ("before the drift", 115),
        ("after the drift, old model", 65),
        ("after the drift, new model", 70),
    ]


class FakeView:
    """The metrics the hold reads, as Progress offers them. ``looked`` is what the scorer
    reports when scraped during a look (its watcher at work)."""

    def __init__(self) -> None:
        self.trainer: dict[str, float] = {}
        self.scorer: dict[str, float] = {}
        self.scored_n, self.labelled_n = 0.0, 0.0
        self.serving = "1"
        self.looked: Callable[[FakeView], None] = lambda view: None

    def value(self, service: str, name: str, **labels: str) -> float:
        if service == "trainer":
            return self.trainer.get(name, 0.0)
        return self.scorer.get(" ".join([name, *labels.values()]), 0.0)

    def refresh(self, service: str) -> None:
        assert service == "scorer"
        self.looked(self)

    def scored(self) -> float:
        return self.scored_n

    def labelled(self) -> float:
        return self.labelled_n

    def version(self) -> str:
        return self.serving


def proc_state(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


def becomes(pid: int, stopped: bool) -> bool:
    """A signal is delivered asynchronously: wait (up to 2 s) for the state to show it."""
    for _ in range(200):
        if (proc_state(pid) == "T") == stopped:
            return True
        time.sleep(0.01)
    return False


def test_the_scorer_is_held_while_a_challenger_trains_and_while_the_monitor_lags() -> None:
    # a scorer with a loader process of its own, in its process group
    scorer_with_loader = (
        "import subprocess, sys, time; "
        "loader = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(30)']); "
        "print(loader.pid, flush=True); time.sleep(30)"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", scorer_with_loader],
        start_new_session=True,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    loader = int(child.stdout.readline())
    try:
        state = SimpleNamespace(pid=child.pid, alive=True)
        supervisor = SimpleNamespace(state=lambda name: state)
        hold = TrainingHold(supervisor, Console(quiet=True), True, 60, labelled_share=0.5)
        view = FakeView()
        view.scored_n, view.labelled_n = 1000, 500  # the monitor has reached 1,000
        assert hold(view) is False and becomes(child.pid, stopped=False)
        view.trainer = {"loanstream_trainer_requests_total": 1}  # asked, rows ready: training
        assert hold(view) is True and becomes(child.pid, stopped=True)
        assert proc_state(loader) != "T"  # a promoted model goes on loading meanwhile
        view.trainer["loanstream_trainer_retrain_seconds_count"] = 1  # the round ended
        assert hold(view) is False and becomes(child.pid, stopped=False)
        view.scored_n = 4000  # 3,000 ahead of the monitor
        hold(view)
        assert becomes(child.pid, stopped=True) and hold.holds == 2
        view.labelled_n = 1600  # 800 behind: caught up
        hold(view)
        assert becomes(child.pid, stopped=False)
    finally:
        os.killpg(child.pid, signal.SIGKILL)
        child.wait()


@pytest.fixture
def sleeper() -> Iterator[int]:
    """A process to hold, in a session of its own."""
    child = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(30)"], start_new_session=True
    )
    try:
        yield child.pid
    finally:
        os.killpg(child.pid, signal.SIGKILL)
        child.wait()


def holding(pid: int, **options: Any) -> TrainingHold:
    state = SimpleNamespace(pid=pid, alive=True)
    supervisor = SimpleNamespace(state=lambda name: state)
    return TrainingHold(supervisor, Console(quiet=True), True, 60, **options)


def test_a_promoted_model_comes_in_while_the_scorer_runs_only_short_looks(sleeper: int) -> None:
    hold = holding(sleeper, swap_hold_s=0.3, look_s=0.5)
    view = FakeView()
    view.scored_n, view.labelled_n = 1000, 1000
    view.scorer["loanstream_scorer_model_loads_total loaded"] = 1  # v1
    assert hold(view) is False and becomes(sleeper, stopped=False)
    running: list[bool] = []

    def watcher_takes_the_update(view: FakeView) -> None:
        running.append(proc_state(sleeper) != "T")
        view.scorer["loanstream_scorer_model_loading"] = 1

    view.looked = watcher_takes_the_update
    view.trainer = {"loanstream_trainer_retrains_total": 1}  # v2 promoted; v1 still scores
    began = time.monotonic()
    assert hold(view) is True  # a look: it ends at the first news, not after look_s
    assert time.monotonic() - began < 0.4 and running == [True]
    assert becomes(sleeper, stopped=True) and hold.holds == 1
    hold(view)  # the loader works meanwhile
    assert proc_state(sleeper) == "T" and hold.holds == 1
    time.sleep(0.35)
    view.looked = lambda view: running.append(proc_state(sleeper) != "T")
    began = time.monotonic()
    hold(view)  # a look with nothing new lasts look_s, and the scorer is held again
    assert time.monotonic() - began >= 0.5 and running[1:] and all(running)
    assert becomes(sleeper, stopped=True) and hold.holds == 2

    def model_is_in(view: FakeView) -> None:
        view.scorer["loanstream_scorer_model_loading"] = 0
        view.scorer["loanstream_scorer_model_loads_total loaded"] = 2

    view.looked = model_is_in
    time.sleep(0.35)
    hold(view)  # in: it scores from the next batch, the scorer goes on
    assert becomes(sleeper, stopped=False) and hold.holds == 2
    view.looked = watcher_takes_the_update  # (no look happens any more)
    for _ in range(3):
        assert hold(view) is False  # the watch may end
    assert proc_state(sleeper) != "T" and hold.holds == 2


def test_a_promotion_whose_load_fails_stops_the_wait(sleeper: int) -> None:
    hold = holding(sleeper, swap_hold_s=0.05, look_s=0.2)
    view = FakeView()
    view.trainer = {"loanstream_trainer_retrains_total": 1}
    hold(view)
    assert becomes(sleeper, stopped=True)
    view.scorer["loanstream_scorer_model_loads_total failed"] = 1  # seen while held
    time.sleep(0.1)
    hold(view)
    assert becomes(sleeper, stopped=False)
    hold(view)
    assert proc_state(sleeper) != "T" and hold.holds == 1


def test_the_scorer_waits_for_the_trainer_once_the_rows_it_lacked_are_joined(
    sleeper: int,
) -> None:
    hold = holding(sleeper)
    view = FakeView()
    view.scored_n = view.labelled_n = 1000
    view.trainer = {
        "loanstream_trainer_rows_missing": 500,
        "loanstream_trainer_row_checks_total": 1,
    }
    hold(view)
    view.scored_n = view.labelled_n = 1499
    hold(view)
    assert proc_state(sleeper) != "T"
    view.scored_n = view.labelled_n = 1500  # what it lacked has come: wait for its next look
    hold(view)
    assert becomes(sleeper, stopped=True)
    hold(view)
    assert proc_state(sleeper) == "T" and hold.holds == 1
    view.trainer.update(  # it looked: 80 still missing (rows of the old regime came too)
        {"loanstream_trainer_rows_missing": 80, "loanstream_trainer_row_checks_total": 2}
    )
    hold(view)
    assert becomes(sleeper, stopped=False)
    view.scored_n = view.labelled_n = 1580
    hold(view)
    assert becomes(sleeper, stopped=True) and hold.holds == 2
    view.trainer = {"loanstream_trainer_requests_total": 1}  # enough: it trains, still held
    hold(view)
    assert proc_state(sleeper) == "T" and hold.holds == 2
    view.trainer["loanstream_trainer_retrain_seconds_count"] = 1  # no promotion
    hold(view)
    assert becomes(sleeper, stopped=False)
