"""``loanstream backtest --through-kafka``: a lender's labelled history through the real services.

The default backtest runs on the event-time engine (``loop.engine``): deterministic, no broker.
This path keeps the real processes in the loop, for a check of the services themselves; its
positions depend on timing. The oldest share of the file trains the first champion (the split of
``loop.timeline``, as the engine cuts it); the rest is replayed as fast as possible in event-time
order through the real scorer, monitor and trainer (processes, on a real broker). The run is
read back from its topics and told as a risk team asks: when drift would have been detected, how
many applications a stale model scored, and accuracy with automatic retraining beside the first
champion scoring the same rows offline (without retraining).

The pure parts (id -> position map, manifest shift, with/without comparison) are at the top;
the orchestration reuses the demo's run (``loop.demo.Demo``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pandas as pd
from rich.console import Console
from rich.table import Table

from loanstream.errors import LoanStreamError
from loanstream.spec import FeatureSpec, load_spec
from loop.story import Labelled, LoopSummary, phase_rows
from loop.timeline import Split, split_history

logger = logging.getLogger(__name__)

THRESHOLD = 0.5  # predicted repaid when p >= 0.5, as monitor/performance.py counts it


# -- pure parts ---------------------------------------------------------------------------
def positions_of(replay: pd.DataFrame, spec: FeatureSpec) -> dict[str, int]:
    """application id -> its position in the replayed part (event-time order).

    A lender's ids are not synthetic, so the summary places applications with this map.
    """
    ids = replay[spec.id_column].astype(str).tolist()
    return {application_id: i for i, application_id in enumerate(ids)}


def shift_manifest(manifest: Mapping[str, Any], offset: int) -> dict[str, Any]:
    """A generator's manifest with drift positions counted from the replay's first row.

    A drift that starts inside the training part is not "within the run" any more.
    """
    drifts = []
    for drift in manifest.get("drifts", []):
        start = int(drift["start_position"]) - offset
        shifted = {**drift, "start_position": start, "file_start_position": drift["start_position"]}
        if "full_position" in drift:
            shifted["full_position"] = int(drift["full_position"]) - offset
        shifted["within_run"] = bool(drift.get("within_run", True)) and start >= 0
        drifts.append(shifted)
    return {**manifest, "drifts": drifts, "replay_offset": offset}


@dataclass(frozen=True)
class Comparison:
    """Accuracy with retraining (what the loop served) and without (the first champion) over
    the same labelled rows from ``from_position`` on."""

    from_position: int | None
    rows: int
    with_retraining: float | None
    without_retraining: float | None

    @property
    def gain(self) -> float | None:
        if self.with_retraining is None or self.without_retraining is None:
            return None
        return self.with_retraining - self.without_retraining


def _correct(p: np.ndarray, y: np.ndarray) -> np.ndarray:
    return np.asarray((p >= THRESHOLD) == (y == 1), dtype=float)


def aligned(
    labelled: list[Labelled], baseline: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(positions, served probability, first-champion probability, label) of the labelled
    rows, one per position (the last record wins), in position order."""
    last = {r.position: r for r in labelled if 0 <= r.position < len(baseline)}
    at = np.array(sorted(last), dtype=int)
    served = np.array([last[i].probability for i in at], dtype=float)
    labels = np.array([last[i].label for i in at], dtype=float)
    return at, served, baseline[at] if len(at) else np.array([], dtype=float), labels


def compare(
    labelled: list[Labelled], baseline: np.ndarray, from_position: int | None
) -> Comparison:
    """With vs without retraining on the labelled rows at or after ``from_position``.

    >>> rows = [Labelled(i, "2", 0.9, 1) for i in range(4)]
    >>> compare(rows, np.array([0.9, 0.9, 0.1, 0.1]), 2)
    Comparison(from_position=2, rows=2, with_retraining=1.0, without_retraining=0.0)
    """
    at, served, first, labels = aligned(labelled, baseline)
    if from_position is None:
        return Comparison(None, 0, None, None)
    keep = at >= from_position
    n = int(keep.sum())
    if n == 0:
        return Comparison(from_position, 0, None, None)
    return Comparison(
        from_position,
        n,
        float(_correct(served[keep], labels[keep]).mean()),
        float(_correct(first[keep], labels[keep]).mean()),
    )


def rolling(
    labelled: list[Labelled], baseline: np.ndarray, window: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(position, accuracy with retraining, without) over a trailing window of labelled rows."""
    at, served, first, labels = aligned(labelled, baseline)
    if len(at) < window:
        window = max(1, len(at))
    kernel = np.ones(window) / window
    with_ = np.convolve(_correct(served, labels), kernel, mode="valid")
    without = np.convolve(_correct(first, labels), kernel, mode="valid")
    return at[window - 1 :], with_, without


def event_position(replay: pd.DataFrame, spec: FeatureSpec, moment: str | None) -> int | None:
    """The last replayed application at or before ``moment`` (event time): where in the
    history the evidence was complete.

    >>> from loanstream.spec import load_spec
    >>> f = pd.DataFrame({"applied_at": pd.to_datetime(["2025-01-01", "2025-01-02"], utc=True)})
    >>> event_position(f, load_spec(), "2025-01-01T12:00:00+00:00")
    0
    """
    if moment is None:
        return None
    times = pd.to_datetime(replay[spec.event_time_column], utc=True, format="mixed")
    naive = times.dt.tz_localize(None).to_numpy(dtype="datetime64[ns]")
    stamp = pd.Timestamp(moment).tz_convert("UTC").tz_localize(None).to_datetime64()
    at = int(np.searchsorted(naive, stamp, "right"))
    return at - 1 if at > 0 else None


class TrainingHold:
    """Holds the scorer (SIGSTOP) so that a replay far faster than real time stays a faithful
    loop, in which the applications the old model scores after a detection are due to the
    evidence the trainer waits for, not to this machine's speed. The scorer is held:

    - while the trainer trains a challenger (retraining then takes no event time);
    - once the labelled rows a waiting retrain asked for have probably been joined, until the
      trainer looks again (it looks every few seconds; the scorer would run far past them);
    - while the scorer runs more than ``max_lag`` applications ahead of what the monitor has
      joined (the monitor is the slower service; without the hold the drift would be confirmed
      long after the scorer passed it);
    - from a promotion until the promoted model scores: the scorer runs only for short looks,
      each until its watcher reports news on its metrics (it has taken the update, or the model
      is in) or ``look_s`` passes, and is held ``swap_hold_s`` between looks while its loader
      process, which is never held, works. With the scorer running between looks, one CI run's
      old model scored the ~4,300 applications left before the new one came in.

    A hold ends when its cause does, when the monitor stops moving, or after ``max_hold_s``;
    the wait for a promoted model after ``max_swap_s``.
    """

    def __init__(
        self,
        supervisor: Any,
        console: Console,
        enabled: bool,
        max_hold_s: float,
        labelled_share: float = 1.0,
        max_lag: int = 2000,
        swap_hold_s: float = 3.0,
        max_swap_s: float = 60.0,
        look_s: float = 1.0,
    ) -> None:
        self.supervisor = supervisor
        self.console = console
        self.enabled = enabled
        self.max_hold_s = max_hold_s
        self.labelled_share = max(labelled_share, 0.01)
        self.max_lag = max_lag
        self.swap_hold_s, self.max_swap_s, self.look_s = swap_hold_s, max_swap_s, look_s
        self.paused_pid: int | None = None
        self.paused_at = 0.0
        self.held_s = 0.0
        self.holds = 0
        self._joined = (-1.0, 0.0)  # (count, when it last moved)
        self._rows_wanted: tuple[float, float] | None = None  # (trainer's looks, joined count)
        self._promoted = 0.0  # promotions seen
        self._awaiting: tuple[str, float, float] | None = None  # (serving, since, scorer's loads)
        self._swap_until: float | None = None  # set while held for a promoted model to load

    def held(self) -> set[str]:
        """The services held now."""
        return {"scorer"} if self.paused_pid is not None else set()

    def lag(self, view: Any) -> float:
        """Applications scored that the monitor has not reached yet (estimated)."""
        return float(view.scored() - view.labelled() / self.labelled_share)

    def __call__(self, view: Any) -> bool:
        """True while the loop is not through (the watch goes on): the trainer trains, the
        scorer is held, or a promoted model has yet to come in (a run whose scorer is held
        between looks would look quiet)."""
        missing = view.value("trainer", "loanstream_trainer_rows_missing")
        rounds = view.value("trainer", "loanstream_trainer_retrain_seconds_count")
        asked = view.value("trainer", "loanstream_trainer_requests_total", outcome="trained")
        training = bool(asked > rounds and not missing)
        now, joined = time.monotonic(), view.labelled()
        if joined != self._joined[0]:
            self._joined = (joined, now)
        rows_due = self._rows_due(view, missing, joined)
        swapping = self._swapping(view, now) and not training
        if not self.enabled:
            return training
        if swapping:
            if self._swap_until is None or now >= self._swap_until:
                self._look(view)
            return True
        cause = self._cause(training, rows_due, self.lag(view), now)
        if self.paused_pid is None:
            if cause is not None:
                self.pause(cause)
        elif (
            cause is None or self._swap_until is not None or now - self.paused_at > self.max_hold_s
        ):
            self.release()
        return training or self.paused_pid is not None

    def _cause(self, training: bool, rows_due: bool, lag: float, now: float) -> str | None:
        """Why the scorer should be held now, if it should."""
        if training:
            return "the trainer trains a challenger"
        if rows_due:
            return "the trainer looks again for the rows it waits for"
        stalled = now - self._joined[1] > 10  # the monitor stopped moving: holding is no use
        if lag > self.max_lag or (self.paused_pid is not None and lag >= self.max_lag / 2):
            return None if stalled else "the monitor lags"
        return None

    def _rows_due(self, view: Any, missing: float, joined: float) -> bool:
        """Whether the monitor has joined as many rows as a waiting retrain lacked at the
        trainer's last look (counted from when the hold first saw that look)."""
        if missing <= 0:
            self._rows_wanted = None
            return False
        looks = view.value("trainer", "loanstream_trainer_row_checks_total")
        if self._rows_wanted is None or looks != self._rows_wanted[0]:
            self._rows_wanted = (looks, joined + missing)
        return joined >= self._rows_wanted[1]

    def _swapping(self, view: Any, now: float) -> bool:
        """Whether a promoted model has yet to come into the scorer (for at most
        ``max_swap_s``). It has once the scorer loaded a model, or failed to, or serves a new
        version."""
        promoted = view.value("trainer", "loanstream_trainer_retrains_total", result="promoted")
        serving, loads = view.version(), self._loads(view)
        if promoted > self._promoted:
            self._promoted, self._awaiting = promoted, (serving, now, loads)
        elif self._awaiting is not None and (
            serving != self._awaiting[0]
            or loads > self._awaiting[2]
            or now - self._awaiting[1] > self.max_swap_s
        ):
            self._awaiting = None
        return self._awaiting is not None

    @staticmethod
    def _loads(view: Any) -> float:
        """Model loads the scorer finished (loaded or failed)."""
        return float(
            view.value("scorer", "loanstream_scorer_model_loads_total", result="loaded")
            + view.value("scorer", "loanstream_scorer_model_loads_total", result="failed")
        )

    def _watcher(self, view: Any) -> tuple[float, float]:
        """What the scorer's model watcher reports: (loading now, loads finished)."""
        return view.value("scorer", "loanstream_scorer_model_loading"), self._loads(view)

    def _look(self, view: Any) -> None:
        """Let the scorer run until its watcher has news, then hold it while the loader works;
        once the model is in, let it go."""
        before = self._watcher(view)
        self.release()
        ends = time.monotonic() + self.look_s
        while time.monotonic() < ends:
            time.sleep(0.02)
            view.refresh("scorer")
            if self._watcher(view) != before:
                break
        if not self._swapping(view, time.monotonic()):
            return  # in: it scores from the scorer's next batch
        self.pause("the promoted model loads")
        self._swap_until = time.monotonic() + self.swap_hold_s

    def pause(self, why: str) -> None:
        state = self.supervisor.state("scorer")
        if state is None or not state.alive:
            return
        self._signal(state.pid, signal.SIGSTOP)
        self.paused_pid, self.paused_at = state.pid, time.monotonic()
        self.holds += 1
        logger.debug("holding the scorer: %s", why)
        if why.startswith("the trainer trains"):
            self.console.print(f"holding the scorer while {why}")

    def release(self) -> None:
        if self.paused_pid is None:
            return
        self._signal(self.paused_pid, signal.SIGCONT)
        held = time.monotonic() - self.paused_at
        self.held_s += held
        self.paused_pid, self._swap_until = None, None
        logger.debug("released the scorer after %.1f s", held)

    @staticmethod
    def _signal(pid: int, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


# -- the run ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Options:
    file: Path
    spec: Path | None
    train_fraction: float
    out: Path
    port: int
    data_dir: Path | None
    candidates: str
    label_delay: str | None
    min_rows: int
    deadline_s: float
    hold: bool = True


def labelled_share(replay: pd.DataFrame, spec: FeatureSpec, options: Options) -> float:
    """The share of replayed rows that will get an outcome (a label, and a label time)."""
    if spec.target_column not in replay or replay.empty:
        return 1.0
    labelled = pd.to_numeric(replay[spec.target_column], errors="coerce").isin([0, 1])
    if options.label_delay is None and "outcome_time" in replay:
        labelled &= replay["outcome_time"].notna()
    return float(labelled.mean())


def read_history(path: Path) -> pd.DataFrame:
    if path.suffix.lower() == ".csv":
        return pd.read_csv(path)
    if path.suffix.lower() in (".parquet", ".pq"):
        return pd.read_parquet(path)
    raise LoanStreamError(f"expected a .parquet or .csv history, got {path}")


def run_backtest(options: Options, console: Console) -> dict[str, Any]:
    """The whole backtest; returns what summary.json holds."""
    from loanstream.topics import create_topics
    from loop.demo import Demo, Plan
    from loop.story import summarize
    from loop.supervise import ServiceCommand

    began = time.monotonic()
    spec = load_spec(options.spec)
    history = read_history(options.file)
    split = split_history(history, spec, options.train_fraction)
    plan = Plan(
        0, 0, len(split.replay), 0, 0, options.candidates, 3, options.min_rows, options.deadline_s
    )
    run = Demo(plan, options.out, options.port, console, prefix="backtest")
    run.run_dir.mkdir(parents=True, exist_ok=True)
    # A held scorer must keep its partitions: no heartbeats or polls while it is stopped
    # (Faust wants the session timeout below its 90 s request timeout, so holds end at 70 s).
    run.supervisor.env["LOANSTREAM_SCORER_SESSION_TIMEOUT_S"] = "80"
    run.supervisor.env["LOANSTREAM_SCORER_MAX_POLL_INTERVAL_S"] = "600"
    # The scorer is held while a waiting retrain looks again for its rows: look more often.
    run.supervisor.env.setdefault("LOANSTREAM_TRAINER_ROWS_POLL_S", "2")
    hold = TrainingHold(
        run.supervisor, console, options.hold, 70, labelled_share(split.replay, spec, options)
    )
    train_path, replay_path = run.run_dir / "train.parquet", run.run_dir / "replay.parquet"
    split.train.to_parquet(train_path)
    split.replay.to_parquet(replay_path)
    truth = options.file.with_name(options.file.name + ".manifest.json")
    manifest = (
        shift_manifest(orjson.loads(truth.read_bytes()), len(split.train)) if truth.exists() else {}
    )
    (run.run_dir / "manifest.json").write_bytes(orjson.dumps(manifest, option=orjson.OPT_INDENT_2))
    console.print(
        f"backtest run in {run.run_dir}: {len(split.train):,} rows train the first champion, "
        f"{len(split.replay):,} are replayed (topics prefixed {run.kafka.topic_prefix})"
    )
    spec_args = ["--spec", str(options.spec)] if options.spec else []
    try:
        run.start_broker(options.data_dir)
        create_topics(run.kafka)
        run.command(
            "training, calibrating and registering the first champion",
            ["train", str(train_path), *spec_args, "--candidates", options.candidates],
        )
        for service in run.services():
            run.supervisor.start(
                ServiceCommand(service.name, [*service.argv, *spec_args], service.health_url)
            )
        with console.status("starting scorer, monitor and trainer"):
            run.supervisor.wait_healthy(["scorer", "monitor", "trainer"], 180)
        argv = ["replay", str(replay_path), *spec_args, "--as-fast-as-possible"]
        argv += ["--rejections", str(run.run_dir / "rejections.csv")]
        argv += ["--metrics-port", str(run.ports["producer"])]
        if options.label_delay:
            argv += ["--label-delay", options.label_delay]
        console.print(f"replaying {len(split.replay):,} applications as fast as possible")
        replay_began = time.monotonic()
        # Named "producer": the demo's live view and its end condition watch that service.
        run.supervisor.start(
            ServiceCommand("producer", argv, f"http://127.0.0.1:{run.ports['producer']}/metrics")
        )
        run.watch(hold, every_s=0.25, held=hold.held)
        hold.release()
        loop_s = time.monotonic() - replay_began
        positions = positions_of(split.replay, spec)
        records = run.read_back(positions.get)
        loop = summarize(
            manifest,
            records.events,
            records.requests,
            records.updates,
            records.scored,
            records.labelled,
        )
        baseline = first_champion_scores(run, records.updates, split.replay)
        result = build_summary(options, split, loop, records.labelled, baseline, loop_s)
        result["held_scorer_s"] = round(hold.held_s, 1)
        result["scorer_holds"] = hold.holds
        result["detected_event_position"] = event_position(
            split.replay, spec, loop.confirmed_on_event_time
        )
        result["first_evidence_position"] = event_position(
            split.replay, spec, loop.first_evidence_event_time
        )
        result["wall_s"] = round(time.monotonic() - began, 1)
        (run.run_dir / "summary.json").write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
        report = ["report", "--out", str(run.run_dir), "--labels", "all"]  # the file's every label
        run.command("writing the monitor's HTML report", report)
        write_report(run.run_dir, result, loop, records.labelled, baseline)
        print_backtest(console, result, loop)
        console.print(f"backtest report: {run.run_dir / 'backtest.html'}")
        return result
    finally:
        hold.release()
        run.stop()
        console.print(f"the backtest took {(time.monotonic() - began) / 60:.1f} min")


def first_champion_scores(run: Any, updates: list[Any], replay: pd.DataFrame) -> np.ndarray:
    """The first champion's P(repaid) on every replayed row, scored offline: the loop
    without retraining. Loaded from the run's MLflow store, verified by its sha256."""
    from loanstream.models import download_and_load, repaid_probability

    if not updates:
        raise LoanStreamError("no model update on the run's topic: the first champion is unknown")
    first = updates[0]
    tracking_uri = run.supervisor.env["LOANSTREAM_SCORER_TRACKING_URI"]
    model = download_and_load(
        first.model_uri, tracking_uri, first.sha256, first.model_name, first.version
    )
    return repaid_probability(model.model, replay[model.feature_names])


def build_summary(
    options: Options,
    split: Split,
    loop: LoopSummary,
    labelled: list[Labelled],
    baseline: np.ndarray,
    loop_s: float,
) -> dict[str, Any]:
    after_promotion = compare(labelled, baseline, loop.first_served_position)
    onset = loop.drift_position if loop.drift_position is not None else loop.detected_position
    after_drift = compare(labelled, baseline, onset)
    first = min(labelled, key=lambda r: r.position).model_version if labelled else None
    served_by_first = [
        r for r in labelled if r.model_version == first and r.position < len(baseline)
    ]
    # the offline first champion must be the one the loop served: the same probabilities
    parity = max(
        (abs(r.probability - float(baseline[r.position])) for r in served_by_first), default=None
    )
    return {
        "file": str(options.file),
        "train_rows": len(split.train),
        "replayed_rows": len(split.replay),
        "positions": "in the replayed part, event-time order (file position = train_rows + it)",
        "loop": loop.as_dict(),
        "with_vs_without": {
            "after_promotion": {**asdict(after_promotion), "gain": after_promotion.gain},
            "after_drift": {**asdict(after_drift), "gain": after_drift.gain},
        },
        "first_champion_parity_max_abs_diff": parity,
        "loop_seconds": round(loop_s, 1),
        "rows_per_s": round(loop.scored / loop_s, 1) if loop_s > 0 else None,
    }


def plot_rolling(
    path: Path,
    loop: LoopSummary,
    labelled: list[Labelled],
    baseline: np.ndarray,
    evidence: tuple[int | None, int | None] = (None, None),
) -> None:
    """Rolling accuracy with and without retraining; the drift drawn where it became known
    (the application the scorer had reached when the alarm came), its ``evidence`` (positions
    of the first and the confirming labelled application) shaded."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    window = max(200, len(labelled) // 40)
    at, with_, without = rolling(labelled, baseline, window)
    fig, ax = plt.subplots(figsize=(10, 4.5))
    ax.plot(at, with_, label="with retraining (served)")
    ax.plot(at, without, label="without retraining (first champion)", linestyle="--")
    first, confirmed = evidence
    if first is not None and confirmed is not None:
        low, high = min(first, confirmed), max(first, confirmed)
        ax.axvspan(low, max(high, low + 1), color="tab:red", alpha=0.12, lw=0, label="evidence")
    marks = [
        (loop.drift_position, "true onset", "black"),
        (loop.detected_position, "drift known (alarm)", "tab:red"),
        (loop.first_served_position, f"v{loop.promoted_version} serving", "tab:green"),
    ]
    for x, name, colour in marks:
        if x is not None:
            ax.axvline(x, color=colour, linestyle=":", label=name)
    ax.set_xlabel("application (position in the replay)")
    ax.set_ylabel(f"accuracy, trailing {window:,} labelled rows")
    ax.legend(loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


TEMPLATE = """<!doctype html><html><head><meta charset="utf-8"><title>LoanStream backtest</title>
<style>body{font-family:sans-serif;max-width:960px;margin:2em auto}
td,th{padding:4px 10px;border-bottom:1px solid #ddd;text-align:left}</style></head><body>
<h1>Backtest of {{ s.file }}</h1>
<p>{{ "{:,}".format(s.train_rows) }} oldest rows trained the first champion;
{{ "{:,}".format(s.replayed_rows) }} were replayed through scorer, monitor and trainer in
{{ s.loop_seconds }} s ({{ s.rows_per_s }} applications/s through the whole loop).
Positions count from the first replayed application.</p>
<h2>What the loop did</h2><table>
{% for name, value in rows %}<tr><th>{{ name }}</th><td>{{ value }}</td></tr>{% endfor %}
</table>
<h2>With and without retraining</h2>
<img src="rolling_accuracy.png" alt="rolling accuracy with and without retraining">
<p>The drift is drawn where it became known: the application the scorer had reached when the
alarm came. The shaded band spans the applications whose outcomes were its evidence, from the
first to the confirming one; outcomes arrive late, so the band lies before the alarm and can
start before the onset.</p>
<table><tr><th>rows</th><th>from</th><th>n</th><th>with</th><th>without</th><th>gain</th></tr>
{% for name, c in s.with_vs_without.items() %}<tr><td>{{ name }}</td>
<td>{{ c.from_position }}</td><td>{{ c.rows }}</td><td>{{ fmt(c.with_retraining) }}</td>
<td>{{ fmt(c.without_retraining) }}</td><td>{{ fmt(c.gain) }}</td></tr>{% endfor %}</table>
<h2>Drift events</h2><table>
{% for signal, n in s.loop.drift_events.items() %}<tr><th>{{ signal }}</th><td>{{ n }}</td></tr>
{% else %}<tr><td>none</td></tr>{% endfor %}</table>
<p>The monitor's own report: <a href="report.html">report.html</a>;
the numbers: <a href="summary.json">summary.json</a>.</p></body></html>
"""


def story(loop: LoopSummary, summary: Mapping[str, Any]) -> list[tuple[str, str]]:
    def at(position: int | None) -> str:
        if position is None:
            return "no"
        after = ""
        if loop.drift_position is not None:
            after = f", {position - loop.drift_position:,} after the onset"
        return f"at application {position:,}{after}"

    detected = at(loop.detected_position)
    if loop.detected_by:
        detected += f" by {loop.detected_signal}/{loop.detected_by}"
    injected = "unknown (no manifest)"
    if loop.drift_position is not None:
        injected = f"at application {loop.drift_position:,} ({loop.drift_event_time})"
    evidence = summary.get("detected_event_position")
    rows = [
        ("drift injected (manifest)", injected),
        ("drift detected (scorer had reached)", detected),
        (
            "... confirmed on the outcome of",
            f"{at(evidence)} ({loop.confirmed_on_event_time})" if evidence is not None else "-",
        ),
        ("retrain requested", at(loop.retrain_requested_position)),
        (f"version {loop.promoted_version or '-'} promoted", at(loop.promoted_position)),
        ("... and serving", at(loop.first_served_position)),
        ("scored by a stale model", f"{loop.stale_scored or 0:,}"),
        ("applications scored", f"{loop.scored:,}"),
    ]
    return rows + phase_rows(loop.phases)


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


def write_report(
    run_dir: Path,
    summary: dict[str, Any],
    loop: LoopSummary,
    labelled: list[Labelled],
    baseline: np.ndarray,
) -> Path:
    import jinja2

    evidence = (summary.get("first_evidence_position"), summary.get("detected_event_position"))
    plot_rolling(run_dir / "rolling_accuracy.png", loop, labelled, baseline, evidence)
    html = jinja2.Environment(autoescape=True).from_string(TEMPLATE)
    path = run_dir / "backtest.html"
    path.write_text(html.render(s=summary, rows=story(loop, summary), fmt=_fmt))
    return path


def print_backtest(console: Console, summary: dict[str, Any], loop: LoopSummary) -> None:
    table = Table("what", "when / how much", title="What the backtest found")
    for name, value in story(loop, summary):
        table.add_row(name, value)
    for name, c in summary["with_vs_without"].items():
        table.add_row(
            f"accuracy {name.replace('_', ' ')}: with / without retraining",
            f"{_fmt(c['with_retraining'])} / {_fmt(c['without_retraining'])} on {c['rows']:,}",
        )
    console.print(table)
    console.print(
        f"replayed {loop.scored:,} applications through the loop in {summary['loop_seconds']} s: "
        f"{summary['rows_per_s']} rows/s; total {summary['wall_s']} s"
    )
