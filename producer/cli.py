"""`loanstream produce`, `loanstream generate` and `loanstream replay`."""

from __future__ import annotations

import re
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from prometheus_client import CollectorRegistry, start_http_server
from rich.console import Console

from loanstream.config import kafka_settings
from loanstream.contracts import as_utc
from loanstream.errors import LoanStreamError
from loanstream.progress import progress_bar
from loanstream.spec import load_spec
from producer.selective import LabelsMode

if TYPE_CHECKING:  # the heavy imports wait until a command runs: `loanstream --help` stays quick
    from producer.emitter import EmitSummary
    from producer.generator import Generator
    from producer.metrics import ProducerMetrics

console = Console(soft_wrap=True)

SpecOpt = Annotated[Path | None, typer.Option("--spec", help="feature spec (default: loan)")]
SeedOpt = Annotated[int, typer.Option("--seed", help="same seed, same payloads")]
ScenarioOpt = Annotated[str, typer.Option("--scenario", help="name, or names joined by '+'")]
ScenarioFileOpt = Annotated[Path | None, typer.Option("--scenario-file", help="your scenarios")]
WorldOpt = Annotated[Path | None, typer.Option("--world", help="synthetic world for the spec")]
BootstrapOpt = Annotated[str | None, typer.Option("--bootstrap-servers", "-b")]
MetricsOpt = Annotated[int | None, typer.Option("--metrics-port", help="serve /metrics here")]
MedianOpt = Annotated[float, typer.Option("--label-median-days", help="label delay median")]
SigmaOpt = Annotated[float, typer.Option("--label-sigma", help="label delay lognormal sigma")]
UnlabelledOpt = Annotated[float, typer.Option("--unlabelled-fraction", help="never labelled")]
IntervalOpt = Annotated[float, typer.Option("--interval-s", help="event seconds between apps")]
LabelsOpt = Annotated[
    LabelsMode,
    typer.Option(
        "--labels",
        case_sensitive=False,
        help="all: every outcome; approved: only approved applications (read from "
        "loan.predictions) and an exploration share of the rest get one",
    ),
]
ExplorationOpt = Annotated[
    float,
    typer.Option(
        "--exploration",
        min=0.0,
        max=1.0,
        help="--labels approved: share of reviews and declines approved anyway (seeded by id)",
    ),
]
DecisionTimeoutOpt = Annotated[
    float,
    typer.Option(
        "--decision-timeout-s",
        min=0.1,
        help="--labels approved: how long a due outcome waits for its prediction",
    ),
]
WaitOpt = Annotated[
    bool,
    typer.Option(
        "--wait-outcomes/--no-wait-outcomes", help="after the applications, wait for late outcomes"
    ),
]


def _generator(
    spec_path: Path | None,
    world: Path | None,
    scenario: str,
    scenario_file: Path | None,
    seed: int,
    interval_s: float,
    median: float,
    sigma: float,
    unlabelled: float,
) -> Generator:
    from producer.generator import Generator
    from producer.outcomes import LabelPolicy
    from producer.scenarios import load_scenario
    from producer.world import load_world

    spec = load_spec(spec_path)
    return Generator(
        spec,
        load_world(world, spec),
        load_scenario(scenario, scenario_file),
        seed=seed,
        interval=timedelta(seconds=interval_s),
        labels=LabelPolicy(median_days=median, sigma=sigma, unlabelled_fraction=unlabelled),
    )


def _metrics(port: int | None) -> ProducerMetrics:
    from producer.metrics import ProducerMetrics

    registry = CollectorRegistry()
    if port is not None:
        start_http_server(port, registry=registry)
    return ProducerMetrics(registry)


def produce(
    rate: Annotated[float, typer.Option("--rate", min=1, help="applications per second")] = 1000,
    count: Annotated[int | None, typer.Option("--count", min=1)] = None,
    duration: Annotated[float | None, typer.Option("--duration", min=0.1, help="seconds")] = None,
    seed: SeedOpt = 0,
    scenario: ScenarioOpt = "stable",
    scenario_file: ScenarioFileOpt = None,
    spec: SpecOpt = None,
    world: WorldOpt = None,
    manifest: Annotated[Path | None, typer.Option("--manifest")] = None,
    interval_s: IntervalOpt = 60.0,
    label_median_days: MedianOpt = 30.0,
    label_sigma: SigmaOpt = 0.5,
    unlabelled_fraction: UnlabelledOpt = 0.1,
    time_scale: Annotated[
        float | None,
        typer.Option(
            "--time-scale", help="event seconds per wall second (default: rate x interval)"
        ),
    ] = None,
    wait_outcomes: WaitOpt = True,
    labels: LabelsOpt = LabelsMode.ALL,
    exploration: ExplorationOpt = 0.05,
    decision_timeout_s: DecisionTimeoutOpt = 120.0,
    metrics_port: MetricsOpt = None,
    bootstrap_servers: BootstrapOpt = None,
) -> None:
    """Stream synthetic applications to loan.applications at a steady rate, outcomes later."""
    from producer.decisions import SelectiveOutcomes
    from producer.live import produce_live
    from producer.manifest import manifest as make_manifest
    from producer.manifest import write_manifest
    from producer.selective import Selection

    if count is None and duration is None:
        raise typer.BadParameter("give --count or --duration")
    generator = _generator(
        spec,
        world,
        scenario,
        scenario_file,
        seed,
        interval_s,
        label_median_days,
        label_sigma,
        unlabelled_fraction,
    )
    selection = Selection(
        mode=labels, exploration=exploration, seed=seed, decision_timeout_s=decision_timeout_s
    )
    total = count or int(rate * (duration or 0))
    path = manifest or Path("out") / f"manifest-{generator.scenario.name}-{seed}.json"
    write_manifest(path, make_manifest(generator, total, selection, rate=rate))
    console.print(f"scenario {generator.scenario.name}, seed {seed}: manifest {path}")
    kafka, metrics = kafka_settings(bootstrap_servers), _metrics(metrics_port)
    selective = None
    if labels is LabelsMode.APPROVED:
        selective = SelectiveOutcomes(kafka, selection, metrics)
        console.print(
            f"selective labels: outcomes for approved applications and {exploration:.1%} of "
            "the others, decisions read from loan.predictions"
        )
    with progress_bar(console) as bar:
        task = bar.add_task("applications", total=total)
        summary, interrupted = produce_live(
            kafka,
            generator,
            rate,
            metrics,
            count=count,
            duration_s=duration,
            time_scale=time_scale,
            wait_for_outcomes=wait_outcomes,
            on_sent=lambda n: bar.advance(task, n),
            selective=selective,
        )
    console.print(
        f"{'interrupted: ' if interrupted else ''}{summary.applications:,} applications at "
        f"{summary.rate:,.0f}/s (target {rate:,.0f}/s), {summary.outcomes:,} outcomes "
        f"({summary.pending_outcomes:,} not yet due, not sent), {summary.retried} retried, "
        f"{summary.failed} failed deliveries"
    )
    if selective is not None:
        console.print(_selective_line(summary, decision_timeout_s))


def _selective_line(summary: EmitSummary, timeout_s: float) -> str:
    """What selective labels did with the due outcomes, for the summary."""
    line = (
        f"selective labels: {summary.outcomes - summary.explored:,} approved and "
        f"{summary.explored:,} explored outcomes sent, {summary.withheld:,} withheld "
        f"(declined or reviewed), {summary.undecided:,} never decided (no prediction within "
        f"{timeout_s:g} s), {summary.awaiting_decision:,} still awaiting a decision"
    )
    if summary.undecided_examples:
        line += f"; undecided e.g. {', '.join(summary.undecided_examples[:3])}"
    return line


def generate(
    out: Annotated[Path, typer.Option("--out", help=".parquet or .csv")],
    rows: Annotated[int, typer.Option("--rows", min=1)] = 100_000,
    seed: SeedOpt = 0,
    scenario: ScenarioOpt = "stable",
    scenario_file: ScenarioFileOpt = None,
    spec: SpecOpt = None,
    world: WorldOpt = None,
    interval_s: IntervalOpt = 60.0,
    label_median_days: MedianOpt = 30.0,
    label_sigma: SigmaOpt = 0.5,
    unlabelled_fraction: UnlabelledOpt = 0.1,
) -> None:
    """Write a synthetic labelled history (with label times) and its ground-truth manifest."""
    from producer.live import write_history
    from producer.manifest import manifest, write_manifest

    generator = _generator(
        spec,
        world,
        scenario,
        scenario_file,
        seed,
        interval_s,
        label_median_days,
        label_sigma,
        unlabelled_fraction,
    )
    with progress_bar(console) as bar:
        task = bar.add_task("rows", total=rows)
        write_history(generator, rows, out, on_rows=lambda n: bar.advance(task, n))
    path = write_manifest(
        out.with_name(out.name + ".manifest.json"), manifest(generator, rows, file=str(out))
    )
    console.print(f"wrote {rows:,} rows to {out} and the manifest to {path}")


def _delay(text: str | None) -> timedelta | None:
    if text is None:
        return None
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([smhd]?)", text.strip())
    if not match:
        raise typer.BadParameter(f"--label-delay must look like 30d, 12h, 90m or 3600s, got {text}")
    unit = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2)]
    return timedelta(seconds=float(match.group(1)) * unit)


def replay(
    file: Annotated[Path, typer.Argument(help="history file, .parquet or .csv")],
    spec: SpecOpt = None,
    speed: Annotated[
        float | None,
        typer.Option(
            "--speed",
            help="pace the events at this many times their event-time pace, e.g. 3600: an hour "
            "of history per second [default: no pacing, as fast as possible]",
        ),
    ] = None,
    as_fast_as_possible: Annotated[
        bool,
        typer.Option(
            "--as-fast-as-possible",
            help="no pacing: the default, named for scripts that want to say so; not with --speed",
        ),
    ] = False,
    start: Annotated[datetime | None, typer.Option("--start", help="first event time kept")] = None,
    end: Annotated[datetime | None, typer.Option("--end", help="event times before this")] = None,
    label_time_column: Annotated[str | None, typer.Option("--label-time-column")] = None,
    label_delay: Annotated[str | None, typer.Option("--label-delay", help="e.g. 30d")] = None,
    rejections: Annotated[Path | None, typer.Option("--rejections", help="CSV report")] = None,
    chunk_rows: Annotated[int, typer.Option("--chunk-rows", min=1000)] = 50_000,
    wait_outcomes: WaitOpt = True,
    metrics_port: MetricsOpt = None,
    bootstrap_servers: BootstrapOpt = None,
) -> None:
    """Replay a history file in event-time order; bad rows to a report and the dead-letter topic.

    Without --speed it sends as fast as Kafka takes the rows (--as-fast-as-possible says the
    same explicitly); with --speed it keeps the history's own gaps, scaled.

    Examples:

    \b
      loanstream replay history.parquet
      loanstream replay history.csv --speed 86400 --start 2024-01-01 --end 2024-07-01
      loanstream replay own.parquet --spec own-spec.yaml --label-delay 30d
    """
    from loanstream.files import count_rows
    from producer.emitter import Pacing
    from producer.replay import ReplayOptions
    from producer.replay import replay as run_replay

    if speed is not None and as_fast_as_possible:
        raise typer.BadParameter("give --speed or --as-fast-as-possible, not both")
    if speed is not None and speed <= 0:
        raise typer.BadParameter("--speed must be positive")
    feature_spec = load_spec(spec)
    options = ReplayOptions(
        pacing=Pacing(speed=speed, time_scale=speed),
        start=as_utc(start),
        end=as_utc(end),
        label_time_column=label_time_column,
        label_delay=_delay(label_delay),
        chunk_rows=chunk_rows,
        wait_for_outcomes=wait_outcomes,
    )
    report = rejections or Path("out") / f"{file.name}.rejections.csv"
    total = count_rows(file)
    console.print(
        f"replaying {file} ({total:,} rows) "
        f"{'at ' + str(speed) + 'x' if speed else 'as fast as possible'}"
    )
    with progress_bar(console) as bar:
        task = bar.add_task("rows", total=total)
        began = time.monotonic()
        summary, interrupted = run_replay(
            file,
            feature_spec,
            kafka_settings(bootstrap_servers),
            options,
            _metrics(metrics_port),
            report,
            on_rows=lambda n: bar.advance(task, n),
        )
    seconds = time.monotonic() - began
    emitted = summary.emitted
    assert emitted is not None
    console.print(
        f"{'interrupted: ' if interrupted else ''}{summary.rows:,} rows read in "
        f"{seconds:.1f} s ({summary.rows / max(seconds, 1e-9):,.0f} rows/s from opening the file "
        f"to the last acknowledgement), {emitted.applications:,} applications, "
        f"{emitted.outcomes:,} outcomes ({emitted.pending_outcomes:,} not sent), "
        f"{summary.rejected:,} rejected {summary.by_reason} "
        f"(report {report}), {summary.skipped_by_window:,} outside --start/--end"
    )


def register(app: typer.Typer) -> None:
    """Add the producer's commands to the ``loanstream`` CLI (an entry point)."""
    app.command("produce")(produce)
    app.command("generate")(generate)
    app.command("replay")(replay)


__all__ = ["LoanStreamError", "register"]
