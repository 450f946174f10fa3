"""Monitor throughput: labelled events/s through the pure monitor (join, windows, detectors) on
one core, and where the time goes, part by part, on the same pre-built events.

    .venv/bin/python -m bench.monitor_speed [--events 200000] [--repeats 3] [--lag 5000]

Predictions and outcomes are built (and serialised, as the service receives them) before timing;
only the monitor is timed. Each outcome arrives ``lag`` predictions after its own, so the join
holds ``lag`` pending predictions as it would in service. Prints a table, writes
out/bench-monitor-speed.json. The detection benchmark (bench/detection.py) runs the same
measurement beside its table.
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import timedelta
from pathlib import Path

from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from loanstream.contracts import Decision, LabelledExample, Outcome, Prediction
from loanstream.models import LoadedModel
from loanstream.spec import FeatureSpec, load_spec
from monitor.datadrift import DataDriftMonitor
from monitor.detectors import ConceptDriftMonitor
from monitor.join import Joiner
from monitor.performance import PerformanceTracker
from monitor.pipeline import DetectionPipeline, PipelineConfig
from monitor.simulate import scored_stream
from producer.generator import Generator
from producer.scenarios import load_scenario
from producer.world import load_world
from tests.trainer_data import history
from trainer.data import labelled_frame, time_split
from trainer.train import TrainingOptions, train

console = Console()
GOAL = 50_000  # labelled events/s on one worker (issue 7)
EXPIRE_EVERY = 1000  # arrivals between two Joiner.expire calls, as a service timer would


def reference_model(
    rows: int = 20_000, seed: int = 1000, candidate: str = "logistic"
) -> LoadedModel:
    """A model trained by the trainer on a *stable* history; the benchmark streams drift later."""
    frame, spec = history(rows, seed=seed)
    good, _ = labelled_frame(frame, spec)
    options = TrainingOptions(seed=seed, candidates=(candidate,), search_candidates=2)
    result = train(time_split(good, spec), spec, options)
    return LoadedModel(
        result.model,
        "loan-repayment",
        "1",
        "0" * 64,
        result.bands,
        result.reference,
        spec.feature_names,
    )


@dataclass(frozen=True)
class Events:
    """Pre-built monitor inputs: each prediction with its outcome, as objects and as bytes."""

    predictions: list[Prediction]
    prediction_bytes: list[bytes]
    outcomes: list[Outcome]
    outcome_bytes: list[bytes]
    labelled: list[LabelledExample]


def build_events(model: LoadedModel, spec: FeatureSpec, n: int, seed: int = 7) -> Events:
    """``n`` scored applications from the stable scenario, every one labelled."""
    generator = Generator(spec, load_world(None, spec), load_scenario("stable"), seed=seed)
    scored = list(scored_stream(model, generator.rows(0, n), spec))
    predictions = [s.prediction for s in scored]
    labelled = [s.labelled for s in scored if s.labelled is not None]
    outcomes = [
        Outcome.model_construct(
            application_id=x.application_id, label=x.label, outcome_time=x.outcome_time
        )
        for x in labelled
    ]
    return Events(
        predictions,
        [p.to_json() for p in predictions],
        outcomes,
        [o.to_json() for o in outcomes],
        labelled,
    )


@dataclass(frozen=True)
class PartTiming:
    """One part of the monitor over all events: median seconds of ``repeats`` runs."""

    part: str
    events: int
    seconds: float
    events_per_s: float
    us_per_event: float


def _arrivals(
    events: Events,
    lag: int,
    on_prediction: Callable[[int], None],
    on_outcome: Callable[[int], None],
) -> None:
    """Prediction i, and the outcome of prediction i - lag after it; then the remaining outcomes."""
    n = len(events.predictions)
    for i in range(n + lag):
        if i < n:
            on_prediction(i)
        if i >= lag:
            on_outcome(i - lag)


def _joiner() -> Joiner:
    return Joiner({}, {}, label_ttl=timedelta(days=400), orphan_ttl=timedelta(hours=1))


def run_join(events: Events, lag: int, pipeline: DetectionPipeline | None) -> int:
    """The service's path: predictions and outcomes through the join, then the pipeline."""
    joiner = _joiner()
    predictions, outcomes = events.predictions, events.outcomes
    raw_p, raw_o = events.prediction_bytes, events.outcome_bytes
    clock = [predictions[0].event_time]
    joined = [0]

    def prediction(i: int) -> None:
        p = predictions[i]
        clock[0] = p.event_time
        if pipeline is not None:
            pipeline.on_prediction(p)
        example = joiner.on_prediction(p, clock[0], raw_p[i])
        if example is not None and pipeline is not None:
            pipeline.on_labelled(example)
        if i % EXPIRE_EVERY == 0:
            joiner.expire(clock[0])

    def outcome(i: int) -> None:
        example = joiner.on_outcome(outcomes[i], clock[0], raw_o[i])
        if example is not None:
            joined[0] += 1
            if pipeline is not None:
                pipeline.on_labelled(example)

    _arrivals(events, lag, prediction, outcome)
    return joined[0]


def run_pipeline(events: Events, pipeline: DetectionPipeline) -> None:
    """The pipeline alone, on labelled examples already joined."""
    for prediction, example in zip(events.predictions, events.labelled, strict=True):
        pipeline.on_prediction(prediction)
        pipeline.on_labelled(example)


def run_data(events: Events, model: LoadedModel, spec: FeatureSpec) -> None:
    config = PipelineConfig()
    data = DataDriftMonitor(
        dict(model.reference),
        spec,
        size=config.drift_window,
        step=config.drift_step,
        target_run_length=config.target_run_length,
        min_psi=config.min_psi,
    )
    for p in events.predictions:
        data.update(p.features, p.probability)


def run_performance(events: Events, segment: str) -> None:
    tracker = PerformanceTracker(segment=segment)
    for p, x in zip(events.predictions, events.labelled, strict=True):
        value = p.features.get(segment)
        tracker.update_estimate(
            p.probability,
            p.decision == Decision.APPROVE,
            p.event_time,
            p.model_version,
            value if isinstance(value, str) else None,
        )
        tracker.update(
            x.probability,
            x.label,
            x.decision == Decision.APPROVE,
            x.event_time,
            x.model_version,
            value if isinstance(value, str) else None,
        )


def run_concept(events: Events) -> None:
    concept = ConceptDriftMonitor()
    for x in events.labelled:
        concept.update(x.probability, x.label)


def measure(
    model: LoadedModel,
    spec: FeatureSpec,
    events: Events,
    repeats: int = 3,
    lag: int = 5000,
    progress: Progress | None = None,
) -> list[PartTiming]:
    """Each part, then the whole monitor, timed ``repeats`` times on the same events."""

    def pipeline() -> DetectionPipeline:
        return DetectionPipeline(model.name, model.version, model.reference, spec)

    parts: dict[str, Callable[[], object]] = {
        "join (dict stores, bytes in)": lambda: run_join(events, lag, None),
        "data + prediction drift": lambda: run_data(events, model, spec),
        "performance windows + estimate": lambda: run_performance(events, PipelineConfig().segment),
        "concept detectors": lambda: run_concept(events),
        "pipeline (no join)": lambda: run_pipeline(events, pipeline()),
        "monitor: join + pipeline": lambda: run_join(events, lag, pipeline()),
    }
    task = progress.add_task("monitor throughput", total=len(parts) * repeats) if progress else None
    n = len(events.labelled)
    timings = []
    gc.collect()
    gc.freeze()  # the pre-built events are scaffolding: keep them out of every collection
    for name, part in parts.items():
        seconds = []
        for _ in range(repeats):
            gc.collect()
            began = time.perf_counter()
            part()
            seconds.append(time.perf_counter() - began)
            if progress is not None and task is not None:
                progress.advance(task)
        median = statistics.median(seconds)
        timings.append(PartTiming(name, n, median, n / median, median / n * 1e6))
    gc.unfreeze()
    return timings


def speed_table(timings: list[PartTiming]) -> Table:
    n = timings[0].events if timings else 0
    table = Table(title=f"Monitor throughput on one core ({n:,} labelled events, pre-built)")
    for column in ("part", "median s", "labelled events/s", "us / event"):
        table.add_column(column, justify="left" if column == "part" else "right")
    for t in timings:
        table.add_row(t.part, f"{t.seconds:.2f}", f"{t.events_per_s:,.0f}", f"{t.us_per_event:.1f}")
    return table


def verdict(timings: list[PartTiming]) -> str:
    whole = timings[-1].events_per_s
    status = "meets" if whole >= GOAL else "MISSES"
    return f"monitor: {whole:,.0f} labelled events/s, {status} the goal of {GOAL:,}/s"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--lag", type=int, default=5000, help="predictions before each outcome")
    parser.add_argument("--candidate", default="logistic")
    parser.add_argument("--out", type=Path, default=Path("out/bench-monitor-speed"))
    args = parser.parse_args()
    spec = load_spec()
    with console.status("training the model on a stable history..."):
        model = reference_model(candidate=args.candidate)
    with console.status(f"building {args.events:,} scored, labelled events..."):
        events = build_events(model, spec, args.events)
    with Progress(console=console) as progress:
        timings = measure(model, spec, events, args.repeats, args.lag, progress)
    console.print(speed_table(timings))
    console.print(verdict(timings))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "events": args.events,
        "lag": args.lag,
        "repeats": args.repeats,
        "goal": GOAL,
        "parts": [asdict(t) for t in timings],
    }
    Path(f"{args.out}.json").write_text(json.dumps(document, indent=2))
    console.print(f"wrote {args.out}.json")


if __name__ == "__main__":
    main()
