"""`loanstream monitor` (the Faust worker) and `loanstream report` (the HTML report)."""

from __future__ import annotations

import gc
import logging
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from loanstream.config import kafka_settings
from loanstream.errors import LoanStreamError

console = Console(soft_wrap=True)
logger = logging.getLogger(__name__)


def monitor(
    spec: Annotated[
        Path | None, typer.Option("--spec", help="feature spec (default: loan)")
    ] = None,
    metrics_port: Annotated[
        int | None, typer.Option("--metrics-port", help="Prometheus /metrics (default 8002)")
    ] = None,
    bootstrap_servers: Annotated[str | None, typer.Option("--bootstrap-servers", "-b")] = None,
) -> None:
    """Join predictions with outcomes into loan.labelled and watch for drift.

    Examples:

    \b
      loanstream monitor
      LOANSTREAM_MONITOR_RETRAIN_TRIGGER=performance loanstream monitor --metrics-port 8002
    """
    from prometheus_client import CollectorRegistry, start_http_server

    from loanstream.lag import watch_lag
    from loanstream.spec import load_spec
    from loanstream.streams import run_worker
    from loanstream.topics import (
        OUTCOMES,
        PREDICTIONS,
        SHADOW_PREDICTIONS,
        changelog,
        create_topics,
    )
    from monitor.app import build_app, changelog_topics
    from monitor.metrics import MonitorMetrics
    from monitor.reading import read_state
    from monitor.references import ReferenceWatcher
    from monitor.service import MonitorCore
    from monitor.settings import MonitorSettings

    settings = MonitorSettings()
    if metrics_port is not None:
        settings = settings.model_copy(update={"metrics_port": metrics_port})
    kafka = kafka_settings(bootstrap_servers)
    feature_spec = load_spec(spec)
    create_topics(kafka, extra=[changelog(n, kafka) for n in changelog_topics(settings)])
    metrics = MonitorMetrics(CollectorRegistry())
    if settings.metrics_port:
        start_http_server(settings.metrics_port, registry=metrics.registry)
        read = [PREDICTIONS, OUTCOMES, SHADOW_PREDICTIONS]
        watch_lag(kafka, metrics.registry, settings.app_id, read)
        console.print(f"metrics on http://127.0.0.1:{settings.metrics_port}/metrics")
    saved = read_state(kafka, settings.app_id)
    watcher = ReferenceWatcher(
        kafka, settings.model_name, settings.resolved_tracking_uri(), settings.registry_poll_s
    )
    watcher.ensure(saved.versions)  # the versions the saved detectors watch, before they resume
    watcher.start()
    if watcher.ready.wait(settings.model_wait_s):
        console.print(f"monitoring {settings.model_name} v{watcher.current}")
    else:
        console.print(
            f"[yellow]no model after {settings.model_wait_s:.0f} s: joining without drift "
            "monitoring until the registry has a champion[/]"
        )

    def make_core(predictions: Any, outcomes: Any, shadow: Any) -> MonitorCore:
        references = watcher.references
        core = MonitorCore(
            kafka, settings, feature_spec, metrics, references, predictions, outcomes, shadow
        )
        restored = core.restore(saved)
        if restored:
            console.print(f"detector state restored for versions {restored}")
        return core

    partitions = kafka.partitions or 6
    app, _ = build_app(kafka, settings, make_core, partitions, saved)
    gc.collect()
    gc.freeze()
    run_worker(app, "loanstream monitor")


def report(
    out: Annotated[Path, typer.Option("--out", help="directory for report.html and PNGs")] = Path(
        "out/report"
    ),
    from_file: Annotated[
        Path | None,
        typer.Option("--from-file", help="labelled rows (Parquet or CSV) instead of Kafka"),
    ] = None,
    window: Annotated[int, typer.Option("--window", min=100, help="rows per window")] = 5000,
    max_rows: Annotated[
        int | None, typer.Option("--max-rows", min=1, help="read at most this many rows")
    ] = None,
    tracking_uri: Annotated[
        str | None, typer.Option("--tracking-uri", help="MLflow store for the reference")
    ] = None,
    bootstrap_servers: Annotated[str | None, typer.Option("--bootstrap-servers", "-b")] = None,
    labels: Annotated[
        str | None,
        typer.Option(
            "--labels",
            help="how the run gave outcomes, for the report's population sentence: all "
            "(whatever the decision) or approved (selective labels)",
        ),
    ] = None,
) -> None:
    """An HTML report of performance and drift, from loan.labelled (or a file)."""
    from monitor.reading import (
        labelled_frame_from_file,
        read_drift_events,
        read_labelled,
        read_shadow,
    )
    from monitor.report import build_report
    from monitor.settings import MonitorSettings

    settings = MonitorSettings()
    events, shadow = [], None
    if from_file is not None:
        frame = labelled_frame_from_file(from_file)
    else:
        kafka = kafka_settings(bootstrap_servers)
        frame = read_labelled(kafka, max_rows)
        events = read_drift_events(kafka)
        shadow = read_shadow(kafka)
    if frame.empty:
        raise LoanStreamError("no labelled rows to report on")
    reference = _reference(frame, tracking_uri or settings.resolved_tracking_uri(), settings)
    from loanstream.progress import progress_bar

    with progress_bar() as bar:
        task = bar.add_task("report", total=None)

        def step(name: str) -> None:
            bar.update(task, advance=1, description=name)

        result = build_report(
            frame,
            out,
            reference=reference,
            drift_events=events,
            window=window,
            on_step=step,
            shadow=shadow,
            labels=labels,
        )
    console.print(
        f"{len(frame):,} labelled rows, {len(events)} drift events -> {result.html} "
        f"({result.seconds:.2f} s)"
    )
    for c in result.comparisons:
        console.print(
            f"challenger v{c.challenger_version} on {c.shared_outcomes:,} shared outcomes: "
            f"AUC {c.challenger.auc or float('nan'):.4f} vs champion "
            f"{c.champion.auc or float('nan'):.4f}, ECE {c.challenger.ece:.4f} vs "
            f"{c.champion.ece:.4f}"
        )


def _reference(frame: Any, tracking_uri: str, settings: Any) -> dict[str, Any] | None:
    """The training reference of the newest model version in the data, if MLflow has it."""
    from loanstream.models import download_and_load
    from monitor.service import version_order

    if tracking_uri.startswith("sqlite:///") and not Path(tracking_uri[10:]).exists():
        console.print(f"[yellow]no MLflow store at {tracking_uri}: the first window stands in[/]")
        return None
    versions = sorted({str(v) for v in frame["model_version"]}, key=version_order)
    try:
        model = download_and_load(
            f"models:/{settings.model_name}/{versions[-1]}",
            tracking_uri,
            None,
            settings.model_name,
            versions[-1],
        )
    except Exception as err:  # MLflow raises its own types
        console.print(
            f"[yellow]no reference for {settings.model_name} v{versions[-1]} "
            f"({type(err).__name__}): the first window stands in for it[/]"
        )
        return None
    reference: dict[str, Any] = model.reference
    return reference


def register(app: typer.Typer) -> None:
    """Add the monitor's commands to the ``loanstream`` CLI (an entry point)."""
    app.command("monitor")(monitor)
    app.command("report")(report)
