"""`loanstream scorer`: the Faust worker, its model watcher and its REST API in one process."""

from __future__ import annotations

import gc
import logging
import threading
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from loanstream.config import kafka_settings
from loanstream.errors import LoanStreamError

console = Console(soft_wrap=True)
logger = logging.getLogger(__name__)


def scorer(
    spec: Annotated[
        Path | None, typer.Option("--spec", help="feature spec (default: loan)")
    ] = None,
    api_port: Annotated[int | None, typer.Option("--api-port", help="REST and /metrics")] = None,
    no_api: Annotated[bool, typer.Option("--no-api", help="stream only")] = False,
    bootstrap_servers: Annotated[str | None, typer.Option("--bootstrap-servers", "-b")] = None,
) -> None:
    """Score loan.applications into loan.predictions, hot-swapping to each new champion."""
    import uvicorn
    from prometheus_client import CollectorRegistry

    from loanstream.spec import load_spec
    from loanstream.streams import run_worker
    from loanstream.validation import ApplicationValidator
    from scorer.api import build_api
    from scorer.app import BatchScorer, build_app
    from scorer.holder import ModelHolder
    from scorer.metrics import ScorerMetrics
    from scorer.settings import ScorerSettings
    from scorer.watcher import ModelWatcher

    settings = ScorerSettings()
    if api_port is not None:
        settings = settings.model_copy(update={"api_port": api_port})
    kafka = kafka_settings(bootstrap_servers)
    validator = ApplicationValidator(load_spec(spec), max_bytes=settings.max_message_bytes)
    holder, metrics = ModelHolder(), ScorerMetrics(CollectorRegistry())
    watcher = ModelWatcher(kafka, settings, holder, metrics)
    watcher.start()
    if settings.api_port and not no_api:
        api = build_api(settings, holder, metrics, validator)
        server = uvicorn.Server(
            uvicorn.Config(api, host=settings.api_host, port=settings.api_port, log_level="warning")
        )
        threading.Thread(target=server.run, name="rest-api", daemon=True).start()
        console.print(
            f"REST on http://{settings.api_host}:{settings.api_port} "
            "(/v1/score, /v1/model, /healthz, /readyz, /metrics, /docs)"
        )
    if not holder.ready.wait(settings.model_wait_s):
        console.print(
            f"[yellow]no model yet after {settings.model_wait_s:.0f} s: applications "
            "wait in Kafka until a champion is published on loan.model-updates[/]"
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


def register(app: typer.Typer) -> None:
    """Add the scorer's command to the ``loanstream`` CLI (an entry point)."""
    app.command("scorer")(scorer)


__all__ = ["LoanStreamError", "register"]
