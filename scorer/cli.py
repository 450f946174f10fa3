"""`loanstream scorer`: the Faust worker, its model watcher and its REST API in one process."""

from __future__ import annotations

import gc
import logging
import threading
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.console import Console

from loanstream.config import kafka_settings
from loanstream.errors import LoanStreamError
from scorer.settings import ScorerSettings, is_loopback

console = Console(soft_wrap=True)
logger = logging.getLogger(__name__)


def scorer(
    spec: Annotated[
        Path | None, typer.Option("--spec", help="feature spec (default: loan)")
    ] = None,
    api_port: Annotated[int | None, typer.Option("--api-port", help="REST and /metrics")] = None,
    api_host: Annotated[
        str | None,
        typer.Option(
            "--api-host", help="address the REST API binds (default 127.0.0.1; others need a key)"
        ),
    ] = None,
    insecure_no_auth: Annotated[
        bool,
        typer.Option(
            "--insecure-no-auth",
            help="serve /v1/* without LOANSTREAM_SCORER_API_KEY on a host other than loopback",
        ),
    ] = False,
    no_api: Annotated[bool, typer.Option("--no-api", help="stream only")] = False,
    bootstrap_servers: Annotated[str | None, typer.Option("--bootstrap-servers", "-b")] = None,
) -> None:
    """Score loan.applications into loan.predictions, hot-swapping to each new champion.

    Examples:

    \b
      loanstream scorer
      LOANSTREAM_SCORER_API_KEY=s3cret loanstream scorer --api-host 0.0.0.0 --api-port 8080
      curl -s localhost:8080/v1/model
    """
    settings = scorer_settings(api_port, api_host, insecure_no_auth, no_api)  # refuse first
    import uvicorn
    from prometheus_client import CollectorRegistry

    from loanstream.lag import watch_lag
    from loanstream.spec import load_spec
    from loanstream.streams import run_worker
    from loanstream.topics import APPLICATIONS
    from loanstream.validation import ApplicationValidator
    from scorer.api import build_api
    from scorer.app import BatchScorer, build_app
    from scorer.holder import ModelHolder
    from scorer.metrics import ScorerMetrics
    from scorer.watcher import ModelWatcher

    kafka = kafka_settings(bootstrap_servers)
    validator = ApplicationValidator(
        load_spec(spec), settings.max_message_bytes, settings.time_window()
    )
    holder, metrics = ModelHolder(), ScorerMetrics(CollectorRegistry())
    watcher = ModelWatcher(kafka, settings, holder, metrics)
    watcher.start()
    if settings.api_port and not no_api:
        api = build_api(settings, holder, metrics, validator)
        watch_lag(kafka, metrics.registry, settings.app_id, [APPLICATIONS])  # served on /metrics
        server = uvicorn.Server(
            uvicorn.Config(api, host=settings.api_host, port=settings.api_port, log_level="warning")
        )
        threading.Thread(target=server.run, name="rest-api", daemon=True).start()
        console.print(
            f"REST on http://{settings.api_host}:{settings.api_port} "
            "(/v1/score, /v1/model, /healthz, /readyz, /metrics, /docs)"
        )
        if settings.api_key is None and not is_loopback(settings.api_host):
            console.print(
                f"[yellow]--insecure-no-auth: anyone who reaches {settings.api_host} can score "
                "without a key[/]"
            )
    if not holder.ready.wait(settings.model_wait_s):
        console.print(
            f"[yellow]no model yet after {settings.model_wait_s:.0f} s: applications "
            "wait in Kafka until the registry has a champion[/]"
        )
    else:
        model = holder.current
        assert model is not None
        console.print(f"scoring with {model.name} v{model.version}")
    app = build_app(kafka, settings, BatchScorer(kafka, settings, holder, metrics, validator))
    # Everything imported and built so far lives as long as the process: keep it out of the
    # garbage collector's full passes, which otherwise pause scoring for 100+ ms now and then.
    gc.collect()
    gc.freeze()
    run_worker(app, "loanstream scorer")


def scorer_settings(
    api_port: int | None, api_host: str | None, insecure_no_auth: bool, no_api: bool
) -> ScorerSettings:
    """The environment's settings with the command line's over them, validated once together:
    a bad key or an exposed API without one stops the scorer before it starts, not later."""
    overrides: dict[str, Any] = {"api_port": None} if no_api else {}
    if api_port is not None and not no_api:
        overrides["api_port"] = api_port
    if api_host is not None:
        overrides["api_host"] = api_host
    if insecure_no_auth:
        overrides["api_insecure_no_auth"] = True
    try:
        return ScorerSettings(**overrides)
    except ValidationError as err:
        raise LoanStreamError(settings_problems(err)) from None


def settings_problems(err: ValidationError) -> str:
    """Each refused setting by its environment name, with the validator's own words."""
    problems = []
    for e in err.errors():
        cause = e.get("ctx", {}).get("error")
        message = str(cause) if isinstance(cause, ValueError) else e["msg"]
        field = "_".join(str(part) for part in e["loc"]).upper()
        problems.append(f"LOANSTREAM_SCORER_{field}: {message}" if field else message)
    return "scorer settings refused: " + "; ".join(problems)


def score(
    source: Annotated[Path, typer.Argument(help="applications to score (.csv/.parquet)")],
    out: Annotated[Path, typer.Option("--out", help="where the scores go (.csv/.parquet)")],
    model_version: Annotated[
        str | None,
        typer.Option("--model-version", help="a registered version [default: the champion]"),
    ] = None,
    spec: Annotated[
        Path | None, typer.Option("--spec", help="feature spec (default: loan)")
    ] = None,
) -> None:
    """Score a file with the serving model, as the stream would: id, probability, decision,
    reasons, model version; a row that fails the spec's checks keeps its place with the reason
    in `error`.

    Examples:

    \b
      loanstream score applications.csv --out scores.csv
    """
    from loanstream.contracts import Decision
    from loanstream.files import count_rows
    from loanstream.progress import progress_bar
    from loanstream.spec import load_spec
    from scorer.files import score_file, serving_model

    feature_spec = load_spec(spec)
    model = serving_model(ScorerSettings(), model_version)
    errors = Console(stderr=True)
    with progress_bar(errors) as bar:
        task = bar.add_task(f"scoring with v{model.version}", total=count_rows(source))
        summary = score_file(source, out, model, feature_spec, lambda n: bar.advance(task, n))
    errors.print(
        f"{summary.rows:,} rows: {summary.scored:,} scored by {summary.model_name} "
        f"v{summary.model_version}, {summary.invalid:,} invalid (kept, with the reason in the "
        f"error column) -> {out}"
    )
    if summary.scored:
        errors.print(
            ", ".join(
                f"{summary.decisions.get(d.value, 0):,} {d.value} "
                f"({summary.decisions.get(d.value, 0) / summary.scored:.1%})"
                for d in Decision
            )
        )


def register(app: typer.Typer) -> None:
    """Add the scorer's command to the ``loanstream`` CLI (an entry point)."""
    app.command("scorer")(scorer)
    app.command("score")(score)


__all__ = ["LoanStreamError", "register"]
