"""The commands that run the whole system: ``demo``, ``backtest``, ``up``/``down``/``ps``
(added to the ``loanstream`` CLI through its entry points)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import orjson
import typer
from rich.console import Console
from rich.table import Table

from loanstream.config import BrokerSettings

if TYPE_CHECKING:  # the engine's imports wait until a backtest runs
    from loop.backtest import BacktestOptions

console = Console(soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True)

PortOpt = Annotated[int | None, typer.Option("--port", help="broker client port (default: 9092)")]
DataDirOpt = Annotated[Path | None, typer.Option("--data-dir", help="broker jars, logs, data")]


def demo(
    quick: Annotated[bool, typer.Option("--quick", help="a smaller run, under 3 minutes")] = False,
    out: Annotated[Path, typer.Option("--out", help="runs go in dated folders here")] = Path(
        "out/demo"
    ),
    port: PortOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """The whole loop: broker, first model, services, a drifting stream, retrain, hot swap.

    Examples:

    \b
      loanstream demo --quick     # under 3 minutes
      loanstream demo --out runs
    """
    from loop.demo import FULL, QUICK, run_demo  # imports what only the demo needs
    from loop.supervise import stop_children_on_sigterm

    stop_children_on_sigterm()
    broker_port = port if port is not None else BrokerSettings().port
    summary = run_demo(QUICK if quick else FULL, out, broker_port, data_dir, console)
    if summary.detected_position is None or summary.first_served_position is None:
        err_console.print(
            "[red]the loop did not close: no drift detected or no new model served[/]"
        )
        raise typer.Exit(1)


SpecPathOpt = Annotated[
    Path | None, typer.Option("--spec", help="feature spec (default: the loan spec)")
]


def backtest(
    file: Annotated[Path, typer.Argument(help="labelled history, .parquet or .csv")],
    spec: SpecPathOpt = None,
    train_fraction: Annotated[
        float, typer.Option("--train-fraction", help="oldest share that trains v1")
    ] = 0.2,
    out: Annotated[Path, typer.Option("--out", help="runs go in dated folders here")] = Path(
        "out/backtest"
    ),
    label_time_column: Annotated[
        str | None,
        typer.Option(
            "--label-time-column", help="when each label became known (default: outcome_time)"
        ),
    ] = None,
    label_delay: Annotated[
        str | None, typer.Option("--label-delay", help="a fixed label delay instead, e.g. 30d")
    ] = None,
    label_model: Annotated[
        bool,
        typer.Option(
            "--label-model", help="draw delays from the producer's lognormal model instead"
        ),
    ] = False,
    labels: Annotated[
        str, typer.Option("--labels", help="all, or approved (selective labels)")
    ] = "all",
    exploration: Annotated[
        float, typer.Option("--exploration", help="share of reviews/declines approved anyway")
    ] = 0.05,
    policy: Annotated[
        str,
        typer.Option("--policy", help="retrain trigger: any, performance, never, every:30d"),
    ] = "any",
    policies: Annotated[
        str | None,
        typer.Option(
            "--policies", help="compare triggers on the same history, e.g. any,performance,never"
        ),
    ] = None,
    training_latency: Annotated[
        str, typer.Option("--training-latency", help="event time a retrain takes")
    ] = "12h",
    deploy_latency: Annotated[
        str, typer.Option("--deploy-latency", help="event time from promotion to serving")
    ] = "1h",
    retry_attempts: Annotated[
        int, typer.Option("--retry-attempts", min=1, help="rounds per drift while challengers lose")
    ] = 3,
    candidates: Annotated[str, typer.Option("--candidates")] = "logistic,hgb",
    min_rows: Annotated[
        int, typer.Option("--min-rows", help="training rows a retrain needs (in its split)")
    ] = 2000,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    drill_losing_rounds: Annotated[
        int,
        typer.Option(
            "--drill-losing-rounds",
            min=0,
            help="drill: the first N retrains train on shuffled labels, so they lose",
        ),
    ] = 0,
    through_kafka: Annotated[
        bool,
        typer.Option(
            "--through-kafka",
            help="run the real scorer, monitor and trainer on a local broker instead",
        ),
    ] = False,
    port: PortOpt = None,
    data_dir: DataDirOpt = None,
    hold: Annotated[
        bool, typer.Option("--hold/--no-hold", help="--through-kafka: hold the scorer in step")
    ] = True,
    deadline_s: Annotated[
        float, typer.Option("--deadline-s", help="--through-kafka: give up after this")
    ] = 1800.0,
) -> None:
    """Replay a labelled history through the whole loop in event time (deterministic, no
    broker): when drift is detected, what the loop does, stale scoring, and the portfolio with
    vs without retraining.

    Examples:

    \b
      loanstream backtest history.parquet --label-delay 30d
      loanstream backtest history.parquet --labels approved --policy performance
    """
    if through_kafka:
        from loop.kafka_backtest import Options, run_backtest
        from loop.supervise import stop_children_on_sigterm

        stop_children_on_sigterm()
        broker_port = port if port is not None else BrokerSettings().port
        run_backtest(
            Options(
                file, spec, train_fraction, out, broker_port, data_dir, candidates,
                label_delay, min_rows, deadline_s, hold,
            ),
            console,
        )  # fmt: skip
        return
    from loanstream.retraining import RetryPolicy
    from loop.backtest import BacktestOptions, parse_duration
    from loop.engine import LoopOptions
    from loop.timeline import LabelSource
    from producer.outcomes import LabelPolicy
    from producer.selective import LabelsMode, Selection

    options = BacktestOptions(
        train_fraction=train_fraction,
        labels=LabelSource(
            column=label_time_column,
            delay=parse_duration(label_delay) if label_delay else None,
            model=LabelPolicy() if label_model else None,
            seed=seed,
        ),
        loop=LoopOptions(
            training_latency=parse_duration(training_latency),
            deploy_latency=parse_duration(deploy_latency),
            selection=Selection(mode=LabelsMode(labels), exploration=exploration, seed=seed),
            retry=RetryPolicy(retry_attempts),
            drill_losing_rounds=drill_losing_rounds,
        ),
        policy=policy,
        candidates=tuple(c.strip() for c in candidates.split(",") if c.strip()),
        min_rows=min_rows,
        seed=seed,
    )
    names = [p.strip() for p in policies.split(",")] if policies else None
    run_engine_backtest(file, spec, options, out, names)


def run_engine_backtest(
    file: Path,
    spec_path: Path | None,
    options: BacktestOptions,
    out: Path,
    policies: list[str] | None,
) -> None:
    from loanstream.spec import load_spec
    from loop.backtest import policy_table, run_backtest, run_policies
    from loop.kafka_backtest import read_history
    from loop.progress import EngineProgress

    logging.getLogger("mlflow").setLevel(logging.WARNING)
    spec = load_spec(spec_path)
    history = read_history(file)
    truth = file.with_name(file.name + ".manifest.json")
    manifest = orjson.loads(truth.read_bytes()) if truth.exists() else {}
    run_dir = out / datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    console.print(
        f"backtest of {file} ({len(history):,} rows) in event time; run folder {run_dir}"
        + (f"; drift manifest {truth.name}" if manifest else "")
    )
    with EngineProgress(console) as progress:
        if policies:
            results = run_policies(
                history, spec, policies, options, manifest, run_dir,
                progress.policy_update, progress.step,
            )  # fmt: skip
        else:
            results = {
                options.policy: run_backtest(
                    history, spec, options, manifest, run_dir / "store", progress.update,
                    progress.step,
                )
            }
    for policy, result in results.items():
        target = run_dir if len(results) == 1 else run_dir / policy.replace(":", "_")
        report = result.save(target)
        if len(results) == 1:
            print_summary(result.data)
        console.print(f"{policy}: report {report}, numbers {target / 'summary.json'}")
    if len(results) > 1:
        print_policies(policy_table(results))


def _at(moment: dict | None) -> str:
    if not moment:
        return "-"
    return f"{moment['position']:,} ({moment['event_time'][:16]})"


def print_summary(s: dict) -> None:
    from loop.report import moments

    table = Table("what", "application position (event time)", title="What the loop did")
    for name, value in moments(s):
        table.add_row(name, value)
    console.print(table)
    signals = Table("signal", "first after the onset", "by", "events", title="Detections")
    counts = s["detections"]["events_by_signal"]
    for signal, first in s["detections"]["first_by_signal"].items():
        by = f"{first['detector']} {first['feature'] or ''}".strip()
        signals.add_row(signal, _at(first["known"]), by, str(counts.get(signal, 0)))
    console.print(signals)
    phases = dict(s["phases"])
    compare = {}
    for name, c in s["with_vs_without_retraining"].items():
        label = name.replace("_", " ")
        compare[f"{label}: with"] = c["with_retraining"]
        compare[f"{label}: without"] = c["without_retraining"]
    for title, stretches in (
        ("Phases (every label in the history)", phases),
        ("With vs without retraining", compare),
    ):
        if stretches:
            console.print(measures_table(title, stretches))
    console.print(
        f"false alarms before the onset: {s['detections']['false_alarms']}; retrain attempts: "
        f"{len(s['retraining']['attempts'])}, promoted: {s['retraining']['promotions']}"
    )


def measures_table(title: str, stretches: dict[str, dict]) -> Table:
    """Measures as rows, stretches as columns (fits a terminal)."""
    from loop.measures import NAMES

    table = Table("measure", *stretches, title=title)
    for name in NAMES:
        values = [m[name] for m in stretches.values()]
        table.add_row(name, *(f"{v:,}" if isinstance(v, int) else _num(v) for v in values))
    return table


def _num(x: float | None) -> str:
    return "-" if x is None else f"{x:.4f}"


def print_policies(rows: list[dict]) -> None:
    table = Table(title="Retrain policies on the same history")
    for name in ("policy", "detected at", "by"):
        table.add_column(name, no_wrap=True)
    for name in ("stale rows", "AUC after onset", "cost/app after onset", "retrains", "promoted"):
        table.add_column(name, justify="right")
    for r in rows:
        table.add_row(
            r["policy"],
            "-" if r["detected"] is None else f"{r['detected']:,}",
            r["detected_by"] or "-",
            "-" if r["stale_rows"] is None else f"{r['stale_rows']:,}",
            _num(r["auc_after_onset"]),
            _num(r["cost_after_onset"]),
            str(r["retrains"]),
            str(r["promotions"]),
        )
    console.print(table)


def register(app: typer.Typer) -> None:
    """Add the whole-system commands to the ``loanstream`` CLI (an entry point)."""
    from loop import notify, up
    from loop.alerts import alerts

    app.command("alerts")(alerts)
    app.command("demo")(demo)
    app.command("backtest")(backtest)
    up.register(app)
    notify.register(app)
