"""`loanstream train`, `loanstream model list|promote|rollback|shadow` and `loanstream trainer`."""

from __future__ import annotations

import logging
import signal
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from loanstream.config import KafkaSettings, kafka_settings
from loanstream.contracts import as_utc
from loanstream.errors import LoanStreamError
from loanstream.progress import progress_bar
from loanstream.spec import load_spec

console = Console(soft_wrap=True)
logger = logging.getLogger(__name__)
model_app = typer.Typer(
    help="The registered models: list, promote, roll back, put in shadow.",
    epilog="Examples:\n\n\b\n  loanstream model list\n  loanstream model promote 3\n"
    "  loanstream model rollback",
    no_args_is_help=True,
)

SpecOpt = Annotated[Path | None, typer.Option("--spec", help="feature spec (default: loan)")]
BootstrapOpt = Annotated[str | None, typer.Option("--bootstrap-servers", "-b")]
PublishOpt = Annotated[
    bool,
    typer.Option("--publish/--no-publish", help="announce a new champion on loan.model-updates"),
]


def train(
    data: Annotated[Path | None, typer.Argument(help="history file (.parquet/.csv)")] = None,
    from_topic: Annotated[bool, typer.Option("--from-topic", help="read loan.labelled")] = False,
    start: Annotated[datetime | None, typer.Option("--start", help="event time from")] = None,
    end: Annotated[datetime | None, typer.Option("--end", help="event time before")] = None,
    spec: SpecOpt = None,
    seed: Annotated[int | None, typer.Option("--seed")] = None,
    candidates: Annotated[str, typer.Option("--candidates")] = "logistic,hgb,forest",
    shuffle_labels: Annotated[
        bool,
        typer.Option(
            "--shuffle-labels", help="train on shuffled labels: a deliberately worse challenger"
        ),
    ] = False,
    report: Annotated[
        Path | None, typer.Option("--report", help="also write the card here")
    ] = None,
    publish: PublishOpt = True,
    bootstrap_servers: BootstrapOpt = None,
) -> None:
    """Train, calibrate and register a model; promote it if it beats the champion.

    Examples:

    \b
      loanstream train history.parquet
      loanstream train --from-topic --start 2024-01-01 --candidates logistic,hgb
    """
    from trainer.data import load_file, read_labelled
    from trainer.pipeline import announce, options_from, training_round
    from trainer.registry import Registry
    from trainer.settings import TrainerSettings

    if (data is None) == (not from_topic):
        raise typer.BadParameter("give a history FILE or --from-topic, not both")
    settings = TrainerSettings() if seed is None else TrainerSettings(seed=seed)
    feature_spec = load_spec(spec)
    kafka = kafka_settings(bootstrap_servers)
    names = tuple(c.strip() for c in candidates.split(",") if c.strip())
    published: list[bool] = []
    with progress_bar(console) as bar:
        if data is not None:
            reading = bar.add_task("reading", total=None)
            frame, dropped = load_file(data, feature_spec, lambda n: bar.advance(reading, n))
        else:
            frame = read_labelled(
                kafka,
                feature_spec,
                as_utc(start),
                as_utc(end),
                settings.max_training_rows,
                latest=datetime.now(UTC) + timedelta(days=settings.max_future_days),
            )
            dropped = 0
        steps = bar.add_task("training", total=2 * len(names) + 3)

        def step(text: str) -> None:
            bar.update(steps, description=text)
            bar.advance(steps)

        result = training_round(
            frame,
            feature_spec,
            settings,
            Registry(settings),
            options_from(settings, candidates=names, shuffle_labels=shuffle_labels),
            (lambda u: published.append(announce(kafka, u, settings.broker_check_s)))
            if publish
            else None,
            tags={"source": str(data) if data else "loan.labelled"},
            report_dir=report,
            on_step=step,
        )
    metrics = result.version.metrics
    console.print(
        f"{len(frame):,} labelled rows ({dropped:,} dropped). Registered "
        f"{result.version.name} v{result.version.version}: AUC {metrics['auc']:.4f}, "
        f"Gini {metrics['gini']:.4f}, KS {metrics['ks']:.4f}, "
        f"Brier {metrics['brier']:.4f}, ECE {metrics['ece']:.4f}.\n"
        f"{'Promoted to champion' if result.promoted else 'Not promoted'}: {result.reason}"
        f"{announced(published, kafka.bootstrap_servers)}.\n"
        f"Model card: {result.report_dir / 'model_card.html'}"
    )


def announced(published: list[bool], servers: str) -> str:
    """What became of the ModelUpdate of a promotion, for the command's last words."""
    if not published:
        return ""
    if published[-1]:
        return " (ModelUpdate published)"
    return (
        f" (no Kafka broker answered at {servers}, so no ModelUpdate was published: the "
        "scorers will take the new champion from the registry when they next look)"
    )


@model_app.command("list")
def model_list() -> None:
    """Every registered version with its aliases, metrics and why it was or was not promoted."""
    from trainer.registry import Registry
    from trainer.settings import TrainerSettings

    settings = TrainerSettings()
    table = Table(title=f"{settings.model_name} in {settings.resolved_tracking_uri()}")
    for column in ("version", "aliases", "model", "AUC", "ECE", "train rows", "why"):
        table.add_column(column)
    for v in Registry(settings).list_versions():
        table.add_row(
            v["version"],
            ",".join(v["aliases"]),
            v["model"],
            f"{v['auc']:.4f}" if v["auc"] is not None else "",
            f"{v['ece']:.4f}" if v["ece"] is not None else "",
            v["rows"],
            v["reason"],
        )
    console.print(table)


@model_app.command("promote")
def model_promote(
    version: Annotated[str, typer.Argument()],
    publish: PublishOpt = True,
    bootstrap_servers: BootstrapOpt = None,
) -> None:
    """Make VERSION the champion (by hand) and announce it."""
    from trainer.pipeline import announce
    from trainer.registry import BY_CLI, Registry
    from trainer.settings import TrainerSettings

    settings = TrainerSettings()
    chosen = Registry(settings).promote(version, "promoted by hand", BY_CLI)
    kafka = kafka_settings(bootstrap_servers)
    published = [announce(kafka, chosen.update(), settings.broker_check_s)] if publish else []
    tell_promotion(kafka, published, chosen.version, "promoted by hand")
    console.print(f"v{chosen.version} is champion{announced(published, kafka.bootstrap_servers)}")


def tell_promotion(kafka: KafkaSettings, published: list[bool], version: str, reason: str) -> None:
    """A promotion by hand on loan.retrain-results too, when its ModelUpdate went out (a broker
    answered); a failure to is only logged."""
    from loanstream.contracts import RetrainOutcome, RetrainResult
    from trainer.pipeline import publish_result
    from trainer.settings import TrainerSettings

    if not (published and published[-1]):
        return
    result = RetrainResult(
        model_name=TrainerSettings().model_name,
        outcome=RetrainOutcome.PROMOTED,
        reason=reason,
        challenger_version=version,
        champion_version=version,
    )
    try:
        publish_result(kafka, result)
    except Exception as err:
        logger.error("could not publish the retrain result: %s", err)


@model_app.command("rollback")
def model_rollback(publish: PublishOpt = True, bootstrap_servers: BootstrapOpt = None) -> None:
    """Make the previous champion champion again, and announce it."""
    from trainer.pipeline import announce
    from trainer.registry import Registry
    from trainer.settings import TrainerSettings

    settings = TrainerSettings()
    chosen = Registry(settings).rollback()
    kafka = kafka_settings(bootstrap_servers)
    published = [announce(kafka, chosen.update(), settings.broker_check_s)] if publish else []
    tell_promotion(kafka, published, chosen.version, "rolled back by hand")
    console.print(
        f"rolled back: v{chosen.version} is champion{announced(published, kafka.bootstrap_servers)}"
    )


@model_app.command("shadow")
def model_shadow(
    version: Annotated[str | None, typer.Argument(help="the version to score in shadow")] = None,
    clear: Annotated[bool, typer.Option("--clear", help="no challenger in shadow")] = False,
) -> None:
    """Put VERSION in shadow: the scorers score every application with it too, into
    loan.shadow-predictions, and decide nothing on it; under the shadow promotion policy the
    trainer promotes or drops it on the live outcomes it shares with the champion."""
    from trainer.registry import Registry
    from trainer.settings import TrainerSettings

    if (version is None) == (not clear):
        raise typer.BadParameter("give a VERSION or --clear, not both")
    registry = Registry(TrainerSettings())
    if clear:
        dropped = registry.clear_challenger()
        console.print(f"v{dropped} left the shadow" if dropped else "no challenger was in shadow")
        return
    assert version is not None
    shadowing = registry.shadow(version, {"shadow_reason": "put in shadow by hand"})
    console.print(
        f"v{shadowing.version.version} is the challenger in shadow since "
        f"{shadowing.since.isoformat(timespec='seconds')}: the scorers take it at their next look"
    )


@model_app.command("register")
def model_register(
    model_file: Annotated[
        Path | None, typer.Argument(help="the model, saved with skops.io.dump (.skops)")
    ] = None,
    spec: SpecOpt = None,
    data: Annotated[
        Path | None,
        typer.Option(
            "--data", help="labelled history (.csv/.parquet): checks, calibration, reference"
        ),
    ] = None,
    trust: Annotated[
        list[str] | None,
        typer.Option("--trust", help="a type the model holds that you trust (module.Class)"),
    ] = None,
    from_run: Annotated[
        str | None, typer.Option("--from-run", help="take the model an MLflow run logged")
    ] = None,
    name: Annotated[
        str | None, typer.Option("--name", help="registered model name [default: loan-repayment]")
    ] = None,
    max_ece: Annotated[
        float, typer.Option("--max-ece", help="a calibrated model above this is recalibrated")
    ] = 0.05,
    promote: Annotated[
        bool, typer.Option("--promote/--no-promote", help="make it the champion at once")
    ] = False,
    publish: PublishOpt = True,
    bootstrap_servers: BootstrapOpt = None,
) -> None:
    """Register a scikit-learn model trained outside LoanStream, checked against the spec and
    calibrated on --data if need be; e.g. `loanstream model register model.skops --data
    history.csv --trust mylib.Clipper --promote`."""
    from loanstream.models import sha256_of
    from trainer.data import load_file
    from trainer.outside import read_model, read_run_model, register_outside
    from trainer.pipeline import announce
    from trainer.registry import BY_CLI, Registry
    from trainer.settings import TrainerSettings

    if (model_file is None) == (from_run is None):
        raise typer.BadParameter("give a MODEL_FILE or --from-run RUN_ID, not both")
    settings = TrainerSettings() if name is None else TrainerSettings(model_name=name)
    feature_spec, trusted = load_spec(spec), tuple(trust or ())
    if model_file is not None:
        model = read_model(model_file, trusted)
        source, tags = str(model_file), {"model_file_sha256": sha256_of(model_file)}
    else:
        assert from_run is not None
        model = read_run_model(from_run, settings.resolved_tracking_uri(), trusted)
        source, tags = f"runs:/{from_run}/model", {"model_run_id": from_run}
    frame = load_file(data, feature_spec)[0] if data is not None else None
    registry = Registry(settings)
    version, chosen = register_outside(
        model, source, feature_spec, frame, settings, registry, trusted, max_ece, tags
    )
    m = version.metrics
    console.print(
        f"Registered {version.name} v{version.version} ({chosen.reason}): AUC {m['auc']:.4f}, "
        f"Gini {m['gini']:.4f}, KS {m['ks']:.4f}, Brier {m['brier']:.4f}, ECE {m['ece']:.4f} "
        f"on the newest {int(m['rows']):,} rows "
        f"of {data}."
    )
    if not promote:
        console.print(f"Not promoted: `loanstream model promote {version.version}` serves it.")
        return
    chosen_version = registry.promote(version.version, "registered from outside", BY_CLI)
    kafka = kafka_settings(bootstrap_servers)
    published = (
        [announce(kafka, chosen_version.update(), settings.broker_check_s)] if publish else []
    )
    tell_promotion(kafka, published, version.version, "registered from outside")
    console.print(f"v{version.version} is champion{announced(published, kafka.bootstrap_servers)}")


def trainer(
    spec: SpecOpt = None,
    metrics_port: Annotated[int | None, typer.Option("--metrics-port")] = None,
    bootstrap_servers: BootstrapOpt = None,
) -> None:
    """Run the retrain service: train on loan.labelled when loan.retrain-requests asks.

    Examples:

    \b
      loanstream trainer
      LOANSTREAM_TRAINER_PROMOTION_POLICY=shadow loanstream trainer --metrics-port 8003
    """
    from prometheus_client import CollectorRegistry, start_http_server

    from loanstream.lag import watch_lag
    from loanstream.topics import RETRAIN_REQUESTS
    from trainer.metrics import TrainerMetrics
    from trainer.pipeline import publish as publish_update
    from trainer.registry import Registry
    from trainer.service import RetrainService
    from trainer.settings import TrainerSettings

    settings = TrainerSettings()
    kafka = kafka_settings(bootstrap_servers)
    registry = CollectorRegistry()
    port = metrics_port or settings.metrics_port
    if port:
        start_http_server(port, registry=registry)
        watch_lag(kafka, registry, "loanstream-trainer", [RETRAIN_REQUESTS])
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    service = RetrainService(
        kafka,
        load_spec(spec),
        settings,
        Registry(settings),
        TrainerMetrics(registry),
        lambda u: publish_update(kafka, u),
    )
    console.print(
        f"trainer: waiting for retrain requests (model {settings.model_name}, "
        f"MLflow {settings.resolved_tracking_uri()})"
    )
    service.run(stop)
    console.print("trainer stopped")


def register(app: typer.Typer) -> None:
    """Add the trainer's commands to the ``loanstream`` CLI (an entry point)."""
    app.command("train")(train)
    app.command("trainer")(trainer)
    app.add_typer(model_app, name="model")


__all__ = ["LoanStreamError", "register"]
