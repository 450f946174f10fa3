"""Monitor throughput: labelled events/s through the pure monitor (join, windows, detectors) on
one core, and where the time goes, part by part, on the same pre-built events.

    .venv/bin/python -m bench.monitor_speed [--events 200000] [--repeats 3] [--lag 5000]

Predictions and outcomes are built before timing, serialised and parsed back as the service has
them, and so is each part's state (a pipeline calibrates its detectors); only the monitor is
timed. Each outcome arrives ``lag`` predictions after its own, so the join holds ``lag`` pending
predictions as it would in service. The last row adds what the service's core does around the
monitor: parse and validate the bytes, count metrics, serialise the labelled examples it sends.
Wall and CPU time are both shown: on a shared machine the CPU time is the steadier figure.
Prints a table, writes out/bench-monitor-speed.json. The detection benchmark (bench/detection.py)
runs the same measurement beside its table.
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path

from prometheus_client import CollectorRegistry
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from loanstream.config import KafkaSettings
from loanstream.contracts import Decision, LabelledExample, Outcome, Prediction
from loanstream.models import LoadedModel
from loanstream.spec import FeatureSpec, load_spec
from monitor.datadrift import DataDriftMonitor
from monitor.join import Joiner, labelled
from monitor.labeltest import LabelDriftTest
from monitor.metrics import MonitorMetrics
from monitor.performance import PerformanceTracker, epoch_seconds
from monitor.pipeline import DetectionPipeline, PipelineConfig
from monitor.service import BATCH, MonitorCore
from monitor.settings import MonitorSettings
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
ONE_BY_ONE = "monitor, one event at a time"  # the pipeline's per-event methods, as baseline
MONITOR = "monitor: join + pipeline"  # the row the goal is judged on: batches, as the service
SERVICE = "service: + parse, metrics, JSON out"


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
    """``n`` scored applications from the stable scenario, every one labelled.

    The objects are parsed from their JSON, as the service has them: pydantic's parsed times are
    slower to read than the generator's (0.6 against 0.25 us a timestamp).
    """
    generator = Generator(spec, load_world(None, spec), load_scenario("stable"), seed=seed)
    scored = list(scored_stream(model, generator.rows(0, n), spec))
    prediction_bytes = [s.prediction.to_json() for s in scored]
    outcome_bytes = [
        Outcome.model_construct(
            application_id=x.application_id, label=x.label, outcome_time=x.outcome_time
        ).to_json()
        for x in (s.labelled for s in scored)
        if x is not None
    ]
    predictions = [Prediction.from_json(raw) for raw in prediction_bytes]
    outcomes = [Outcome.from_json(raw) for raw in outcome_bytes]
    examples = [labelled(p, o) for p, o in zip(predictions, outcomes, strict=True)]
    return Events(predictions, prediction_bytes, outcomes, outcome_bytes, examples)


@dataclass(frozen=True)
class PartTiming:
    """One part of the monitor over all events: median wall and CPU seconds of ``repeats`` runs."""

    part: str
    events: int
    seconds: float
    events_per_s: float
    us_per_event: float
    cpu_us_per_event: float


def _joiner() -> Joiner:
    return Joiner({}, {}, label_ttl=timedelta(days=400), orphan_ttl=timedelta(hours=1))


def run_join(events: Events, lag: int, pipeline: DetectionPipeline | None) -> int:
    """The service's path: prediction i arrives, then the outcome of prediction i - lag (then the
    remaining outcomes); each joined example goes on to the pipeline. Returns how many joined.

    One plain loop, no callbacks, so that the harness adds as little as it can to the timing.
    """
    joiner = _joiner()
    predictions, outcomes = events.predictions, events.outcomes
    raw_p, raw_o = events.prediction_bytes, events.outcome_bytes
    n, joined, now = len(predictions), 0, predictions[0].event_time
    for i in range(n + lag):
        if i < n:
            p = predictions[i]
            now = p.event_time
            if pipeline is not None:
                pipeline.on_prediction(p)
            example = joiner.on_prediction(p, raw_p[i])
            if example is not None:
                joined += 1
                if pipeline is not None:
                    pipeline.on_labelled(example)
            if i % EXPIRE_EVERY == 0:
                joiner.expire(now)
        if i >= lag:
            example = joiner.on_outcome(outcomes[i - lag], now, raw_o[i - lag])
            if example is not None:
                joined += 1
                if pipeline is not None:
                    pipeline.on_labelled(example)
    return joined


def run_join_batched(
    events: Events, lag: int, pipeline: DetectionPipeline, batch: int = BATCH
) -> int:
    """`run_join` as the service does it under load: ``batch`` predictions through the join one
    by one, then through the pipeline at once with the examples they completed; then as many
    outcomes, likewise. The same arrivals, in blocks of ``batch`` per topic."""
    joiner = _joiner()
    predictions, outcomes = events.predictions, events.outcomes
    raw_p, raw_o = events.prediction_bytes, events.outcome_bytes
    n, joined, now = len(predictions), 0, predictions[0].event_time
    for start in range(0, n + lag, batch):
        stop = min(start + batch, n + lag)
        examples = []
        for i in range(start, min(stop, n)):
            p = predictions[i]
            now = p.event_time
            example = joiner.on_prediction(p, raw_p[i])
            if example is not None:
                examples.append(example)
            if i % EXPIRE_EVERY == 0:
                joiner.expire(now)
        pipeline.on_prediction_batch(predictions[start : min(stop, n)])
        for i in range(max(start, lag), stop):
            example = joiner.on_outcome(outcomes[i - lag], now, raw_o[i - lag])
            if example is not None:
                examples.append(example)
        pipeline.on_labelled_batch(examples)
        joined += len(examples)
    return joined


def run_pipeline(events: Events, pipeline: DetectionPipeline) -> None:
    """The pipeline alone, on labelled examples already joined."""
    for prediction, example in zip(events.predictions, events.labelled, strict=True):
        pipeline.on_prediction(prediction)
        pipeline.on_labelled(example)


def run_data(events: Events, data: DataDriftMonitor) -> None:
    for p in events.predictions:
        data.update(p.features, p.probability)


def data_monitor(model: LoadedModel, spec: FeatureSpec) -> DataDriftMonitor:
    config = PipelineConfig()
    return DataDriftMonitor(
        dict(model.reference),
        spec,
        size=config.drift_window,
        step=config.drift_step,
        target_run_length=config.target_run_length,
        min_psi=config.min_psi,
    )


def run_performance(events: Events, tracker: PerformanceTracker) -> None:
    """The windows as a pipeline feeds them: one model version, each event time read once."""
    segment = tracker.segment
    for p, x in zip(events.predictions, events.labelled, strict=True):
        value = p.features.get(segment)
        tracker.update_estimate(
            p.probability,
            p.decision == Decision.APPROVE,
            epoch_seconds(p.event_time),
            p.model_version,
            value if isinstance(value, str) else None,
        )
        tracker.update(
            x.probability,
            x.label,
            x.decision == Decision.APPROVE,
            epoch_seconds(x.event_time),
            x.model_version,
            value if isinstance(value, str) else None,
        )


def run_labels(events: Events, test: LabelDriftTest) -> None:
    """The label test over every labelled event, in the pipeline's batches."""
    examples = events.labelled
    for start in range(0, len(examples), BATCH):
        part = examples[start : start + BATCH]
        test.update(
            [x.probability for x in part],
            [x.label for x in part],
            [x.features for x in part],
            start,
            [epoch_seconds(x.event_time) for x in part],
        )


def run_service(events: Events, lag: int, core: MonitorCore) -> int:
    """What the service's agents do without Kafka, in the same batches as `run_join_batched`:
    bytes in (parsed and validated), join, pipeline, metrics, the messages to send out."""
    raw_p, raw_o = events.prediction_bytes, events.outcome_bytes
    n, sent, source = len(raw_p), 0, ("bench", 0, 0)
    for start in range(0, n + lag, BATCH):
        stop = min(start + BATCH, n + lag)
        sent += len(core.on_predictions([(raw, source) for raw in raw_p[start : min(stop, n)]]))
        core.tick(datetime.now(UTC))  # once a batch: every 1,000 predictions, as run_join
        if stop > lag:
            arrived = raw_o[max(start, lag) - lag : stop - lag]
            sent += len(core.on_outcomes([(raw, source) for raw in arrived]))
    return sent


def service_core(model: LoadedModel, spec: FeatureSpec, pipeline: DetectionPipeline) -> MonitorCore:
    metrics = MonitorMetrics(CollectorRegistry())
    references = {model.version: model.reference}
    core = MonitorCore(KafkaSettings(), MonitorSettings(), spec, metrics, references, {}, {})
    core.pipelines[model.version] = pipeline  # as the service builds it on its first message
    return core


Part = Callable[[], Callable[[], object]]  # builds fresh state, returns the run to time


def _parts(model: LoadedModel, spec: FeatureSpec, events: Events, lag: int) -> dict[str, Part]:
    def pipeline() -> DetectionPipeline:
        return DetectionPipeline(model.name, model.version, model.reference, spec)

    segment = PipelineConfig().segment
    return {
        "join (dict stores, bytes in)": lambda: partial(run_join, events, lag, None),
        "data + prediction drift": lambda: partial(run_data, events, data_monitor(model, spec)),
        "performance windows + estimate": lambda: partial(
            run_performance, events, PerformanceTracker(segment=segment, versions=False)
        ),
        "label test (concept drift)": lambda: partial(run_labels, events, pipeline().labels),
        "pipeline (no join)": lambda: partial(run_pipeline, events, pipeline()),
        ONE_BY_ONE: lambda: partial(run_join, events, lag, pipeline()),
        MONITOR: lambda: partial(run_join_batched, events, lag, pipeline()),
        SERVICE: lambda: partial(run_service, events, lag, service_core(model, spec, pipeline())),
    }


def measure(
    model: LoadedModel,
    spec: FeatureSpec,
    events: Events,
    repeats: int = 3,
    lag: int = 5000,
    progress: Progress | None = None,
) -> list[PartTiming]:
    """Each part, then the whole monitor, then the service's core, each timed ``repeats`` times
    on the same events. Each run gets fresh state, built before its clock starts."""
    parts = _parts(model, spec, events, lag)
    task = progress.add_task("monitor throughput", total=len(parts) * repeats) if progress else None
    n = len(events.labelled)
    timings = []
    gc.collect()
    gc.freeze()  # the pre-built events are scaffolding: keep them out of every collection
    for name, build in parts.items():
        wall, cpu = [], []
        for _ in range(repeats):
            run = build()
            gc.collect()
            began, began_cpu = time.perf_counter(), time.process_time()
            run()
            wall.append(time.perf_counter() - began)
            cpu.append(time.process_time() - began_cpu)
            if progress is not None and task is not None:
                progress.advance(task)
        median = statistics.median(wall)
        cpu_us = statistics.median(cpu) / n * 1e6
        timings.append(PartTiming(name, n, median, n / median, median / n * 1e6, cpu_us))
    gc.unfreeze()
    return timings


def speed_table(timings: list[PartTiming]) -> Table:
    n = timings[0].events if timings else 0
    table = Table(title=f"Monitor throughput on one core ({n:,} labelled events, pre-built)")
    for column in ("part", "labelled/s", "us/event", "CPU us/event"):
        table.add_column(column, justify="left" if column == "part" else "right")
    for t in timings:
        table.add_row(
            t.part, f"{t.events_per_s:,.0f}", f"{t.us_per_event:.1f}", f"{t.cpu_us_per_event:.1f}"
        )
    return table


def verdict(timings: list[PartTiming]) -> str:
    """The goal is judged on the monitor's row; the service's core is shown beside it."""
    by_part = {t.part: t for t in timings}
    whole, service = by_part[MONITOR], by_part.get(SERVICE)
    status = "meets" if whole.events_per_s >= GOAL else "MISSES"
    line = (
        f"monitor: {whole.events_per_s:,.0f} labelled events/s "
        f"({1e6 / whole.cpu_us_per_event:,.0f}/s of CPU time), {status} the goal of {GOAL:,}/s"
    )
    if service is not None:
        line += f"; with the service's parsing, metrics and JSON: {service.events_per_s:,.0f}/s"
    return line


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
