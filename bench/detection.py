"""Detection benchmark: each scenario over many seeds, through the pure detection pipeline and
through every single River detector on the error stream, at its library defaults and tuned to the
pipeline's false-alarm budget, scored against the ground truth; the monitor's throughput beside.

    .venv/bin/python -m bench.detection [--seeds 20] [--mild-seeds 50] [--events 40000]
                                        [--null-events 1000000] [--quick] [--no-speed]
                                        [--label-days D]

Streams: the producer's scenarios (a model trained once on a stable history of its world), and
River's synthetic SEA, STAGGER and Hyperplane (bench/external.py: a model trained by the same
trainer on each generator's first concept). Before the cases, each stream family's *null*
stream (``--null-events`` stable events) is run through the pipeline and every single detector:
its false alarms there are the budget's test, and each River detector is tuned on it to its most
sensitive setting without a false alarm ("tuned" rows).

Delay = first detection at or after an onset minus the onset (labelled events, and event time);
missed = none within ``--horizon`` events (or before the next onset); false alarms = detections
before the first onset, per million events; repeats = detections of an onset after its first
(one drift reported twice). With ``--label-days D`` labels come D days (lognormal, sigma 0.3)
after their application, in the order they become known, mixed across a drift as in service, and
a detection counts at the application the stream had reached when the confirming label came.
Each loan case also has an ``oracle (known change)`` row, the information bound: a CUSUM of
each label's log-likelihood ratio between the world's true repayment probabilities after and
before the change (the generator's truth, which no detector has), at ln(target run length).
Where half the best single detector's delay is below the oracle's, no detector can meet it.
Prints a table per case and the issue's goals, writes out/bench-detection.json and .png.
"""

from __future__ import annotations

import argparse
import heapq
import json
import math
import multiprocessing
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from rich.console import Console
from rich.progress import Progress
from rich.table import Table
from river import drift
from river.drift import binary

from bench import external, monitor_speed
from loanstream.contracts import DriftSignal, LabelledExample
from loanstream.models import LoadedModel, repaid_probability
from loanstream.spec import FeatureSpec, load_spec
from monitor.pipeline import DetectionPipeline, PipelineConfig
from monitor.simulate import scored_stream
from producer.generator import TRUE_PROBABILITY, Generator
from producer.manifest import manifest
from producer.outcomes import OUTCOME_TIME, LabelPolicy
from producer.scenarios import Drift, Scenario, load_scenario
from producer.world import load_world

LOG_LOSS_FLOOR = 1e-3


def binary_error(p: float, y: int) -> int:
    """1 when the class the model predicts (repaid iff ``p >= 0.5``) is wrong: River's encoding."""
    return 1 if (p >= 0.5) != (y == 1) else 0


def brier_loss(p: float, y: int) -> float:
    """Squared error of the probability, in [0, 1]."""
    return (p - y) * (p - y)


def log_loss(p: float, y: int) -> float:
    """Log loss, the probability clipped at 1e-3, scaled to [0, 1]: ADWIN assumes a range of 1."""
    q = p if y == 1 else 1.0 - p
    return math.log(max(q, LOG_LOSS_FLOOR)) / math.log(LOG_LOSS_FLOOR)


console = Console(width=None if sys.stdout.isatty() else 120)  # files and pipes get 80 else
SCENARIOS = (
    "stable",
    "covariate-shift",
    "income-shift",
    "concept-drift",
    "concept-drift-mild",
    "local-drift-mild",
    "reversal-mild",
    "gradual-fast",
    "gradual",
    "gradual-slow",
    "recurring",
    *external.EXTERNAL,
)
MILD = ("concept-drift-mild", "local-drift-mild", "reversal-mild")  # more seeds, goal: half
DATA_ONLY = ("stable", "covariate-shift", "income-shift")  # no concept drift to find
LOAN = "loan"  # the family of the producer's scenarios; each external stream is its own
# Each River detector fed (p, y) in one encoding (1 = error), and its sensitivity grid, from the
# most sensitive setting to the least (the library default is among them).
SINGLE: dict[str, tuple[Callable[..., Any], Callable[[float, int], float]]] = {
    "ADWIN (error)": (drift.ADWIN, binary_error),
    "ADWIN (brier)": (drift.ADWIN, brier_loss),
    "ADWIN (log loss)": (drift.ADWIN, log_loss),
    "DDM": (binary.DDM, binary_error),
    "EDDM": (binary.EDDM, binary_error),
    "HDDM_A": (binary.HDDMA, binary_error),
    "HDDM_W": (binary.HDDMW, binary_error),
    "PageHinkley (error)": (drift.PageHinkley, binary_error),
}
_ADWIN = [{"delta": d} for d in (0.3, 0.1, 0.03, 0.01, 0.002, 1e-3, 1e-4, 1e-5, 1e-6, 1e-7, 1e-9)]
_HDDM = [
    {"drift_confidence": c, "warning_confidence": min(5 * c, 0.5)}
    for c in (1e-2, 3e-3, 1e-3, 1e-4, 1e-5, 1e-6, 1e-7, 1e-9, 1e-11)
]
GRIDS: dict[str, list[dict[str, float]]] = {
    "ADWIN (error)": _ADWIN,
    "ADWIN (brier)": _ADWIN,
    "ADWIN (log loss)": _ADWIN,
    "DDM": [
        {"drift_threshold": t, "warning_threshold": t - 1}
        for t in (2.5, 3.0, 3.5, 4.0, 5.0, 6.0, 7.0, 8.0, 10.0)
    ],
    "EDDM": [{"beta": b, "alpha": (1 + b) / 2} for b in (0.95, 0.9, 0.85, 0.8, 0.7, 0.6, 0.5)],
    "HDDM_A": _HDDM,
    "HDDM_W": _HDDM,
    "PageHinkley (error)": [
        {"threshold": t} for t in (20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0)
    ],
}
TUNED = tuple(f"{name} tuned" for name in SINGLE)
# signals of the pipeline, alone and together; concept and performance count labelled events
PIPELINE = ("concept", "performance", "data", "prediction", "data|prediction", "any")
LABELLED = (DriftSignal.CONCEPT, DriftSignal.PERFORMANCE)
CONFIGS = tuple(f"pipeline: {s}" for s in PIPELINE) + tuple(SINGLE) + TUNED
PLOTTED = ("pipeline: concept", *TUNED)
GOAL_RATIO, MILD_RATIO = 1.0, 0.5  # of the best quiet single detector's median delay
# The information bound: a CUSUM that knows every application's repayment probability before
# and after each change (the generator's truth), at the pipeline's budget. No detector that
# has to learn what changed, where, and by how much can be faster on average.
ORACLE = "oracle (known change)"
_WORKER: dict[str, Any] = {}


def family(scenario: str) -> str:
    return scenario if scenario in external.EXTERNAL else LOAN


@dataclass(frozen=True)
class Job:
    scenario: str
    seed: int
    events: int
    horizon: int
    label_days: float | None = None  # None: each label at once, after its prediction


@dataclass(frozen=True)
class Onset:
    """A change of concept or population: detections in ``[position, end)`` count for it."""

    position: int
    kind: str  # "onset", or "starts"/"ends" for a recurring regime
    end: int


@dataclass(frozen=True)
class Run:
    """One stream's ground truth and every configuration's detections (application positions)."""

    scenario: str
    seed: int
    events: int
    onsets: tuple[Onset, ...]
    detections: dict[str, tuple[int, ...]]
    event_times: dict[int, float]  # epoch seconds at each onset and detection position


@dataclass(frozen=True)
class Null:
    """One family's null stream: false alarms of every configuration, and the tuned settings."""

    family: str
    events: int
    labelled: int
    alarms: dict[str, int]  # by configuration (defaults, tuned, pipeline signals)
    tuned: dict[str, dict[str, float]]  # by single detector: its most sensitive quiet setting
    untunable: tuple[str, ...] = ()  # detectors whose least sensitive setting still alarmed


def onsets(facts: dict[str, Any], rows: int, horizon: int) -> list[Onset]:
    """Every position where the manifest's scenario changes the world, in order."""
    found: list[tuple[int, str]] = []
    for d in facts["drifts"]:
        start, period = d["start_position"], d["period"]
        if not period:
            found += [(start, "onset")] if start < rows else []
            continue
        found += [
            (p, "starts" if k % 2 == 0 else "ends")
            for k, p in enumerate(range(start, rows, period))
        ]
    found.sort()
    ends = [p for p, _ in found[1:]] + [rows] * bool(found)
    pairs = zip(found, ends, strict=True)
    return [Onset(p, kind, min(p + horizon, end)) for (p, kind), end in pairs]


def _init(model: LoadedModel, externals: dict[str, LoadedModel], tuned: dict[str, Any]) -> None:
    spec = load_spec()
    _WORKER.update(
        model=model, spec=spec, world=load_world(None, spec), externals=externals, tuned=tuned
    )


def _model_and_spec(name: str) -> tuple[LoadedModel, FeatureSpec]:
    if name == LOAN:
        return _WORKER["model"], _WORKER["spec"]
    return _WORKER["externals"][name], external.spec_of(name)


def singles(tuned: dict[str, dict[str, float]] | None) -> list[tuple[str, Any, Any]]:
    """Every single detector at its defaults, and (when known) at its tuned setting."""
    made = [(name, factory(), encode) for name, (factory, encode) in SINGLE.items()]
    for name, params in (tuned or {}).items():
        factory, encode = SINGLE[name]
        made.append((f"{name} tuned", factory(**params), encode))
    return made


def detect(
    model: LoadedModel,
    spec: FeatureSpec,
    frame: pd.DataFrame,
    in_label_order: bool = False,
    tuned: dict[str, dict[str, float]] | None = None,
) -> tuple[dict[str, list[int]], DetectionPipeline]:
    """Application positions where each configuration detected something, and the pipeline.

    ``in_label_order``: each label arrives at its outcome time (the frame's, never if NaT),
    before the first application scored after it, instead of at once after its prediction.
    """
    pipeline = DetectionPipeline(model.name, model.version, model.reference, spec)
    detectors = singles(tuned)
    found: dict[str, list[int]] = {name: [] for name in CONFIGS}
    labelled_at: list[int] = []  # application position when each labelled event arrived
    pending: list[LabelledExample] = []  # through the pipeline in batches, its fast path

    def label(example: LabelledExample, position: int) -> None:
        labelled_at.append(position)
        pending.append(example)
        if len(pending) >= 1024:
            pipeline.on_labelled_batch(pending)
            pending.clear()
        p, y = example.probability, example.label
        for name, detector, encode in detectors:
            detector.update(encode(p, y))
            if detector.drift_detected:
                found[name].append(position)

    known = pd.to_datetime(frame[OUTCOME_TIME], utc=True) if in_label_order else None
    due: list[tuple[float, int, LabelledExample]] = []  # (outcome time, position, example)
    position = -1
    for position, scored in enumerate(scored_stream(model, frame, spec)):
        now = scored.prediction.event_time.timestamp()
        while due and due[0][0] <= now:
            label(heapq.heappop(due)[2], position)
        pipeline.on_prediction(scored.prediction)
        example = scored.labelled
        if example is None:
            continue
        if known is None:
            label(example, position)
        elif not pd.isna(known.iloc[position]):
            heapq.heappush(due, (known.iloc[position].timestamp(), position, example))
    while due:  # known after the stream's last application
        label(heapq.heappop(due)[2], position)
    pipeline.on_labelled_batch(pending)
    for event in pipeline.events:
        labels = event.signal in LABELLED
        at = labelled_at[event.confirmed_position] if labels else event.confirmed_position
        for kind in ["any", event.signal.value] + ([] if labels else ["data|prediction"]):
            found[f"pipeline: {kind}"].append(at)
    return found, pipeline


def stream_frame(job: Job) -> tuple[pd.DataFrame, list[Onset]]:
    """One job's applications and the positions where their world changes."""
    if job.scenario in external.EXTERNAL:
        frame = external.rows(job.scenario, job.seed, job.events)
        end = min(external.ONSET + job.horizon, job.events)
        return frame, [Onset(external.ONSET, "onset", end)]
    labels = None if job.label_days is None else LabelPolicy(median_days=job.label_days, sigma=0.3)
    scenario = load_scenario(job.scenario)
    generator = Generator(_WORKER["spec"], _WORKER["world"], scenario, seed=job.seed, labels=labels)
    frame = generator.rows(0, job.events)
    return frame, onsets(manifest(generator, job.events), job.events, job.horizon)


def _twin(job: Job, drifts: list[Drift]) -> np.ndarray:
    """The world's repayment probabilities of the job's applications under other drifts (the
    same seed draws the same applications: a concept drift changes only their outcomes)."""
    scenario = Scenario(name=f"{job.scenario}-twin", drifts=drifts)
    generator = Generator(_WORKER["spec"], _WORKER["world"], scenario, seed=job.seed)
    return generator.rows(0, job.events)[TRUE_PROBABILITY].to_numpy()


def oracle(job: Job, frame: pd.DataFrame, changes: list[Onset]) -> list[int]:
    """Where the information bound's CUSUM finds each change: the log-likelihood ratio of each
    label under the world after the change against the world before it (no drift before a
    start, the drift going on before an end), from the change before, at the threshold
    ln(target run length) that bounds its false alarms (Lorden)."""
    after = frame[TRUE_PROBABILITY].to_numpy()
    y = frame[_WORKER["spec"].target_column].to_numpy(float)
    twins = {"starts": _twin(job, [])}
    if any(change.kind == "ends" for change in changes):
        drifts = load_scenario(job.scenario).drifts
        twins["ends"] = _twin(job, [d.model_copy(update={"period": None}) for d in drifts])
    h = math.log(PipelineConfig().target_run_length)
    found, begin = [], 0
    for change in changes:
        span = slice(begin, change.end)
        a, b = after[span], twins["ends" if change.kind == "ends" else "starts"][span]
        llr = np.where(y[span] == 1, np.log(a / b), np.log((1 - a) / (1 - b)))
        walk = np.concatenate(([0.0], np.cumsum(llr)))
        cusum = walk - np.minimum.accumulate(walk)
        crossed = np.flatnonzero(cusum[1:] >= h)
        if crossed.size:
            found.append(begin + int(crossed[0]))
        begin = change.position
    return found


def run_case(job: Job) -> Run:
    """Generate one stream, score it once, and run every configuration over it."""
    name = family(job.scenario)
    model, spec = _model_and_spec(name)
    frame, changes = stream_frame(job)
    in_order = job.label_days is not None and job.scenario not in external.EXTERNAL
    found, _ = detect(model, spec, frame, in_order, _WORKER["tuned"].get(name))
    if name == LOAN and not in_order and job.scenario not in DATA_ONLY:
        found[ORACLE] = oracle(job, frame, changes)
    times = frame[spec.event_time_column]
    marked = {o.position for o in changes}.union(*found.values())
    return Run(
        job.scenario,
        job.seed,
        job.events,
        tuple(changes),
        {name: tuple(sorted(set(ps))) for name, ps in found.items()},
        {p: pd.Timestamp(times.iloc[p]).timestamp() for p in marked},
    )


def null_frame(name: str, events: int) -> pd.DataFrame:
    """A family's stable stream, from a seed no case uses."""
    if name == LOAN:
        spec = _WORKER["spec"]
        generator = Generator(spec, _WORKER["world"], load_scenario("stable"), seed=10_000)
        return generator.rows(0, events)
    return external.rows(name, 10_000, events, onset=None)


def run_null(task: tuple[str, int]) -> Null:
    """One family's null stream through the pipeline and every single detector's grid: the
    false alarms of each, and each detector's most sensitive setting without one."""
    name, events = task
    model, spec = _model_and_spec(name)
    frame = null_frame(name, events)
    found, pipeline = detect(model, spec, frame)
    alarms = {config: len(found[config]) for config in CONFIGS if not config.endswith("tuned")}
    labelled = frame[spec.target_column].notna()
    p = repaid_probability(model.model, frame.loc[labelled, spec.feature_names])
    y = frame.loc[labelled, spec.target_column].astype(int).to_numpy()
    tuned: dict[str, dict[str, float]] = {}
    untunable = []
    for detector, grid in GRIDS.items():
        factory, encode = SINGLE[detector]
        values = [encode(pi, yi) for pi, yi in zip(p.tolist(), y.tolist(), strict=True)]
        for params in grid:  # the most sensitive first: most of them alarm early
            if not _alarms(factory(**params), values):
                tuned[detector] = params
                break
        else:
            tuned[detector] = grid[-1]
            untunable.append(detector)
        alarms[f"{detector} tuned"] = 0 if detector not in untunable else -1
    return Null(name, events, pipeline.positions.labelled + 1, alarms, tuned, tuple(untunable))


def _alarms(detector: Any, values: list[float]) -> bool:
    update = detector.update
    for x in values:
        update(x)
        if detector.drift_detected:
            return True
    return False


@dataclass(frozen=True)
class Summary:
    """One configuration on one case over all seeds; delays None where missed."""

    config: str
    delays: tuple[int | None, ...]
    delays_hours: tuple[float | None, ...]
    missed: int
    false_alarms: int
    clean_events: int
    repeats: int = 0  # detections of an onset after its first one

    def _found(self) -> list[int]:
        return [d for d in self.delays if d is not None]

    @property
    def median_delay(self) -> float | None:
        found = self._found()
        return float(np.median(found)) if found else None

    @property
    def p90_delay(self) -> float | None:
        found = self._found()
        return float(np.percentile(found, 90)) if found else None

    @property
    def median_hours(self) -> float | None:
        found = [h for h in self.delays_hours if h is not None]
        return float(np.median(found)) if found else None

    @property
    def false_alarms_per_million(self) -> float:
        return self.false_alarms / self.clean_events * 1e6 if self.clean_events else 0.0


def summarise(runs: list[Run], config: str, kind: str | None) -> Summary:
    """Delays to the onsets of ``kind`` (all when None) and false alarms before the first."""
    delays: list[int | None] = []
    hours: list[float | None] = []
    false_alarms = clean = repeats = 0
    for run in runs:
        times = run.event_times
        found = run.detections[config]
        first = run.onsets[0].position if run.onsets else run.events
        clean += first
        false_alarms += sum(1 for p in found if p < first)
        for onset in run.onsets:
            if kind is not None and onset.kind != kind:
                continue
            hits = [p for p in found if onset.position <= p < onset.end]
            hit = hits[0] if hits else None
            repeats += max(0, len(hits) - 1)
            delays.append(None if hit is None else hit - onset.position)
            gap = None if hit is None else (times[hit] - times[onset.position]) / 3600
            hours.append(gap)
    missed = sum(d is None for d in delays)
    return Summary(config, tuple(delays), tuple(hours), missed, false_alarms, clean, repeats)


def cases(runs: list[Run]) -> dict[str, list[Summary]]:
    """Summaries per case: a scenario, or for a recurring one each kind of boundary."""
    out: dict[str, list[Summary]] = {}
    for scenario in SCENARIOS:
        mine = [r for r in runs if r.scenario == scenario]
        if not mine:
            continue
        kinds: list[str | None] = list(dict.fromkeys(o.kind for r in mine for o in r.onsets))
        for kind in kinds or [None]:
            name = scenario if kind in (None, "onset") else f"{scenario} ({kind})"
            known = (ORACLE,) if all(ORACLE in r.detections for r in mine) else ()
            out[name] = [summarise(mine, config, kind) for config in (*CONFIGS, *known)]
    return out


@dataclass(frozen=True)
class Verdict:
    """The issue's goals on one concept case: the pipeline's concept signal against the best
    single River detector (fewest misses, then shortest median delay) among those, defaults and
    tuned, without a false alarm on the family's null stream."""

    case: str
    pipeline_median: float | None
    pipeline_missed: int
    pipeline_repeats: int
    onsets: int
    best: str
    best_median: float | None
    best_missed: int
    goal_ratio: float
    oracle_median: float | None = None  # the information bound, where the truth is known

    @property
    def ratio(self) -> float | None:
        ours, theirs = self.pipeline_median, self.best_median
        return ours / theirs if ours is not None and theirs else None

    @property
    def passed(self) -> bool:
        if self.pipeline_missed or self.pipeline_repeats:
            return False
        if self.best_median is None:  # the best quiet detector found nothing
            return True
        return self.ratio is not None and self.ratio <= self.goal_ratio


def quiet(null: Null | None, config: str) -> bool:
    return null is not None and null.alarms.get(config, -1) == 0


def verdict(case: str, summaries: list[Summary], null: Null | None) -> Verdict:
    by = {s.config: s for s in summaries}
    pipeline = by["pipeline: concept"]
    rivals = [by[c] for c in (*SINGLE, *TUNED) if quiet(null, c)]
    best = min(
        rivals or [by[c] for c in TUNED],
        key=lambda s: (s.missed, s.median_delay if s.median_delay is not None else np.inf),
    )
    scenario = case.split(" (")[0]
    return Verdict(
        case,
        pipeline.median_delay,
        pipeline.missed,
        pipeline.repeats,
        len(pipeline.delays),
        best.config,
        best.median_delay,
        best.missed,
        MILD_RATIO if scenario in MILD else GOAL_RATIO,
        by[ORACLE].median_delay if ORACLE in by else None,
    )


def _number(x: float | None, digits: int = 0) -> str:
    return "-" if x is None else f"{x:,.{digits}f}"


def case_table(case: str, summaries: list[Summary], null: Null | None) -> Table:
    onsets, clean = len(summaries[0].delays), summaries[0].clean_events
    where = f"; null stream: {null.labelled:,} labelled events" if null else ""
    table = Table(
        title=f"{case}: {onsets} onsets; false alarms over {clean:,} events before the first"
        + where
    )
    for column in ("configuration", "median delay", "p90 delay", "median delay h", "missed"):
        table.add_column(column, justify="left" if column == "configuration" else "right")
    for column in ("repeats", "false alarms", "per million", "null alarms"):
        table.add_column(column, justify="right")
    for s in summaries:
        alarms = "-" if null is None else null.alarms.get(s.config, -1)
        table.add_row(
            s.config,
            _number(s.median_delay),
            _number(s.p90_delay),
            _number(s.median_hours, 1),
            f"{s.missed}/{onsets}" if onsets else "-",
            str(s.repeats) if onsets else "-",
            str(s.false_alarms),
            _number(s.false_alarms_per_million, 1),
            "alarmed" if alarms == -1 else str(alarms),
        )
    return table


def verdict_table(verdicts: list[Verdict]) -> Table:
    table = Table(title="the issue's goals: pipeline (concept) vs the best quiet single detector")
    for column in ("case", "pipeline median", "missed", "repeats", "best quiet single"):
        table.add_column(
            column, justify="left" if column in ("case", "best quiet single") else "right"
        )
    for column in ("its median", "its missed", "ratio", "goal", "met", "oracle median"):
        table.add_column(column, justify="right")
    for v in verdicts:
        table.add_row(
            v.case,
            _number(v.pipeline_median),
            f"{v.pipeline_missed}/{v.onsets}",
            str(v.pipeline_repeats),
            v.best,
            _number(v.best_median),
            f"{v.best_missed}/{v.onsets}",
            "-" if v.ratio is None else f"{v.ratio:.2f}",
            f"<= {v.goal_ratio:g}",
            "yes" if v.passed else "NO",
            _number(v.oracle_median),
        )
    return table


def null_table(nulls: list[Null]) -> Table:
    table = Table(title="null streams: false alarms, and each detector's tuned setting")
    table.add_column("family")
    table.add_column("labelled events", justify="right")
    table.add_column("pipeline events", justify="right")
    table.add_column("default detectors with a false alarm")
    table.add_column("tuned settings")
    for n in nulls:
        loud = [c for c in SINGLE if n.alarms.get(c, 0)]
        settings = "; ".join(
            f"{d}: " + ", ".join(f"{k}={v:g}" for k, v in params.items())
            for d, params in n.tuned.items()
        )
        table.add_row(
            n.family,
            f"{n.labelled:,}",
            str(n.alarms["pipeline: any"]),
            ", ".join(f"{c} ({n.alarms[c]})" for c in loud) or "none",
            settings + (f" (still alarming: {', '.join(n.untunable)})" if n.untunable else ""),
        )
    return table


def plot(results: dict[str, list[Summary]], path: Path) -> None:
    """Delay distribution per configuration for the concept cases, misses written beside;
    of the pipeline only its concept signal, the one these cases score."""
    shown = [c for c in results if c.split(" (")[0] not in DATA_ONLY]
    if not shown:
        return
    columns = 3
    rows = -(-len(shown) // columns)
    figure, axes = plt.subplots(
        rows, columns, figsize=(18, 3.2 * rows), sharex=True, sharey=True, squeeze=False
    )
    for axis in axes.ravel()[len(shown) :]:
        axis.set_visible(False)
    for axis, case in zip(axes.ravel(), shown, strict=False):
        summaries = [s for s in results[case] if s.config in PLOTTED]
        data = [[float(d) for d in s.delays if d is not None] or [np.nan] for s in summaries]
        axis.boxplot(data, orientation="horizontal", whis=(0, 100))
        axis.set_yticks(range(1, len(summaries) + 1), [s.config for s in summaries])
        for row, s in enumerate(summaries, 1):
            axis.annotate(
                f"missed {s.missed}/{len(s.delays)}",
                (1.0, row),
                xycoords=("axes fraction", "data"),
                ha="right",
                va="center",
                fontsize=8,
            )
        axis.set(title=case, xlabel="delay (labelled events)", xscale="log", xlim=(10, 50_000))
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def as_json(s: Summary) -> dict[str, Any]:
    return {
        **asdict(s),
        "median_delay": s.median_delay,
        "p90_delay": s.p90_delay,
        "median_hours": s.median_hours,
        "false_alarms_per_million": s.false_alarms_per_million,
    }


def simulate(
    model: LoadedModel,
    externals: dict[str, LoadedModel],
    jobs: list[Job],
    null_events: int,
    processes: int,
) -> tuple[list[Null], list[Run]]:
    """Every family's null stream (tuning the single detectors), then every job, over a pool
    of spawned processes, with progress bars."""
    context = multiprocessing.get_context("spawn")
    families = [LOAN, *sorted({j.scenario for j in jobs if j.scenario in external.EXTERNAL})]
    with Progress(console=console) as progress:
        task = progress.add_task(
            f"{len(families)} null streams of {null_events:,}", total=len(families)
        )
        with context.Pool(processes, initializer=_init, initargs=(model, externals, {})) as pool:
            nulls = []
            for null in pool.imap_unordered(run_null, [(f, null_events) for f in families]):
                nulls.append(null)
                progress.advance(task)
        tuned = {n.family: n.tuned for n in nulls}
        task = progress.add_task(f"{len(jobs)} streams", total=len(jobs))
        runs = []
        with context.Pool(processes, initializer=_init, initargs=(model, externals, tuned)) as pool:
            for run in pool.imap_unordered(run_case, jobs):
                runs.append(run)
                progress.advance(task)
    nulls.sort(key=lambda n: families.index(n.family))
    return nulls, sorted(runs, key=lambda r: (SCENARIOS.index(r.scenario), r.seed))


def throughput(model: LoadedModel, events: int, repeats: int) -> list[monitor_speed.PartTiming]:
    spec = load_spec()
    with console.status(f"building {events:,} scored, labelled events for the throughput run..."):
        built = monitor_speed.build_events(model, spec, events)
    with Progress(console=console) as progress:
        return monitor_speed.measure(model, spec, built, repeats, progress=progress)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--mild-seeds", type=int, default=50, help=f"seeds of {', '.join(MILD)}")
    parser.add_argument("--events", type=int, default=40_000)
    parser.add_argument(
        "--null-events", type=int, default=1_000_000, help="stable events per family"
    )
    parser.add_argument("--horizon", type=int, default=10_000, help="events to detect an onset")
    parser.add_argument("--quick", action="store_true", help="2 seeds, short null and throughput")
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--candidate", default="logistic", help="model family to train")
    parser.add_argument("--speed-events", type=int, default=200_000)
    parser.add_argument("--no-speed", action="store_true", help="skip the throughput run")
    parser.add_argument("--no-external", action="store_true", help="skip River's streams")
    parser.add_argument("--scenarios", default=None, help="comma-separated subset to run")
    parser.add_argument(
        "--label-days",
        type=float,
        default=None,
        help="labels come this many days (median) after their application, in label order",
    )
    parser.add_argument("--out", type=Path, default=Path("out/bench-detection"))
    args = parser.parse_args()
    seeds = 2 if args.quick else args.seeds
    mild_seeds = 2 if args.quick else max(args.mild_seeds, seeds)
    null_events = 100_000 if args.quick else args.null_events
    began = time.perf_counter()
    chosen = [
        s
        for s in (args.scenarios.split(",") if args.scenarios else SCENARIOS)
        if not (args.no_external and s in external.EXTERNAL)
    ]
    with console.status(f"training a {args.candidate} model on a stable history..."):
        model = monitor_speed.reference_model(candidate=args.candidate)
    with console.status("training a model on each River stream's first concept..."):
        externals = {n: external.model_of(n) for n in chosen if n in external.EXTERNAL}
    jobs = [
        Job(scenario, seed, args.events, args.horizon, args.label_days)
        for scenario in chosen
        for seed in range(1, (mild_seeds if scenario in MILD else seeds) + 1)
    ]
    nulls, runs = simulate(model, externals, jobs, null_events, args.processes)
    by_family = {n.family: n for n in nulls}
    results = cases(runs)
    for case, summaries in results.items():
        console.print(case_table(case, summaries, by_family.get(family(case.split(" (")[0]))))
    console.print(null_table(nulls))
    verdicts = [
        verdict(case, summaries, by_family.get(family(case.split(" (")[0])))
        for case, summaries in results.items()
        if case.split(" (")[0] not in DATA_ONLY
    ]
    if args.label_days is not None:
        console.print(
            f"delays include the label delay (median {args.label_days:g} days, "
            f"~{args.label_days * 1440:,.0f} applications at one a minute; River's streams "
            "are labelled at once)"
        )
    console.print(verdict_table(verdicts))
    timings: list[monitor_speed.PartTiming] = []
    if not args.no_speed:
        speed_events = 50_000 if args.quick else args.speed_events
        timings = throughput(model, speed_events, 1 if args.quick else 3)
        console.print(monitor_speed.speed_table(timings))
        console.print(monitor_speed.verdict(timings))
    write(args, seeds, nulls, results, verdicts, timings, time.perf_counter() - began)


def write(
    args: argparse.Namespace,
    seeds: int,
    nulls: list[Null],
    results: dict[str, list[Summary]],
    verdicts: list[Verdict],
    timings: list[monitor_speed.PartTiming],
    seconds: float,
) -> None:
    document = {
        "created": datetime.now().astimezone().isoformat(),
        "args": {**vars(args), "out": str(args.out), "seeds": seeds},
        "seconds": seconds,
        "nulls": [asdict(n) for n in nulls],
        "cases": {case: [as_json(s) for s in summaries] for case, summaries in results.items()},
        "goals": [{**asdict(v), "ratio": v.ratio, "passed": v.passed} for v in verdicts],
        "throughput": [asdict(t) for t in timings],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    Path(f"{args.out}.json").write_text(json.dumps(document, indent=2))
    plot(results, Path(f"{args.out}.png"))
    console.print(f"{len(results)} cases in {seconds:.0f} s; wrote {args.out}.json and .png")


if __name__ == "__main__":
    main()
