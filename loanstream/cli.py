"""The ``loanstream`` command: one entry point for people and scripts.

Each service, and the ``loop`` package that runs the whole system (demo, backtest, ``up``/
``down``/``ps``), adds its commands through the entry points ``loanstream.commands``, so this
shared package imports none of them. This module wires logging and the shared commands: the
local broker, topics, schemas, the spec check and the settings reference.

Help texts are plain text, not Rich markup (``rich_markup_mode=None``, which every sub-command
inherits): with markup on, Rich took ``[default: ...]`` or ``[LOANSTREAM_...]`` in a help string
for a style tag and dropped it.
"""

from __future__ import annotations

import json
import time
from importlib.metadata import PackageNotFoundError, entry_points, version
from pathlib import Path
from typing import Annotated

import typer
from pydantic import BaseModel
from rich.console import Console
from rich.table import Table

from loanstream.config import BrokerSettings, KafkaSettings, kafka_settings
from loanstream.contracts import CONTRACTS
from loanstream.errors import LoanStreamError
from loanstream.kafka.broker import LocalBroker, is_reachable
from loanstream.logs import configure_logging
from loanstream.spec import load_spec
from loanstream.topics import create_topics, describe_topics
from loanstream.validation import ApplicationValidator

EXAMPLES = """Examples:

\b
  loanstream demo                      # the whole loop on a local broker, ~4 min
  loanstream kafka start && loanstream topics create
  loanstream up                        # scorer, monitor, trainer in the background
  loanstream score applications.csv --out scored.csv

Settings come from LOANSTREAM_* variables and a .env file: see docs/settings.md."""

app = typer.Typer(
    help="LoanStream: real-time credit scoring with drift monitoring.",
    epilog=EXAMPLES,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # help texts are plain text: see the module docstring
    context_settings={"max_content_width": 120},  # whole first lines in wide terminals
)
kafka_app = typer.Typer(
    help="The local Apache Kafka broker (no Docker needed).",
    epilog="Examples:\n\n\b\n  loanstream kafka start\n  loanstream kafka status"
    "\n  LOANSTREAM_BROKER_PORT=19092 loanstream kafka start",
    no_args_is_help=True,
)
topics_app = typer.Typer(help="The topics of DESIGN.md, declared once.", no_args_is_help=True)
spec_app = typer.Typer(help="Feature specs.", no_args_is_help=True)
app.add_typer(kafka_app, name="kafka")
app.add_typer(topics_app, name="topics")
app.add_typer(spec_app, name="spec")

console = Console(soft_wrap=True)  # no hard breaks: scripts grep these lines
err_console = Console(stderr=True, soft_wrap=True)

PortOpt = Annotated[
    int | None,
    typer.Option("--port", help="client port [default: 9092, or LOANSTREAM_BROKER_PORT]"),
]
DataDirOpt = Annotated[
    Path | None,
    typer.Option(
        "--data-dir",
        help="jars, logs and data [default: ~/.local/share/loanstream, or "
        "LOANSTREAM_BROKER_DATA_DIR]",
    ),
]
BootstrapOpt = Annotated[
    str | None,
    typer.Option(
        "--bootstrap-servers",
        "-b",
        help="Kafka brokers [default: 127.0.0.1:9092, or LOANSTREAM_KAFKA_BOOTSTRAP_SERVERS]",
    ),
]
SpecOpt = Annotated[Path | None, typer.Option("--spec", help="feature spec (default: loan)")]


def _broker(port: int | None, data_dir: Path | None) -> LocalBroker:
    overrides: dict[str, object] = {}
    if port is not None:
        overrides["port"] = port
    if data_dir is not None:
        overrides["data_dir"] = data_dir
    return LocalBroker(BrokerSettings(**overrides))  # type: ignore[arg-type]


@kafka_app.command("start")
def kafka_start(port: PortOpt = None, data_dir: DataDirOpt = None) -> None:
    """Fetch Kafka (first time only), format KRaft storage, start the broker, wait until ready."""
    broker = _broker(port, data_dir)
    began = time.monotonic()
    with console.status(
        f"Starting Kafka {broker.version} on 127.0.0.1:{broker.settings.port} "
        "(the first start fetches the jars from Maven Central)..."
    ):
        info, started = broker.start()
    if not started:
        console.print(
            f"A broker is already running on 127.0.0.1:{info.port} "
            f"(pid {info.pid}, log {info.log}); nothing to do."
        )
        return
    console.print(
        f"Kafka {info.version} ready on [bold]{info.bootstrap_servers}[/] "
        f"(pid {info.pid}) in {time.monotonic() - began:.1f} s\n"
        f"  log:  {info.log}\n  data: {info.data_dir}"
    )


@kafka_app.command("stop")
def kafka_stop(port: PortOpt = None, data_dir: DataDirOpt = None) -> None:
    """Stop exactly the broker that ``start`` recorded for this port and data dir."""
    broker = _broker(port, data_dir)
    began = time.monotonic()
    info = broker.stop()
    if info is None:
        console.print(
            f"No LoanStream broker is running on port {broker.settings.port} "
            f"(data dir {broker.settings.data_dir}); nothing to stop."
        )
        return
    console.print(
        f"Stopped the broker on port {info.port} (pid {info.pid}) "
        f"in {time.monotonic() - began:.1f} s."
    )


@kafka_app.command("status")
def kafka_status(port: PortOpt = None, data_dir: DataDirOpt = None) -> None:
    """Say whether the local broker runs and a broker answers on its port (exit 1 if not)."""
    broker = _broker(port, data_dir)
    info = broker.info()
    address = f"127.0.0.1:{broker.settings.port}"
    reachable = is_reachable(address)
    if info is not None:
        console.print(
            f"LoanStream broker: running, pid {info.pid}, Kafka {info.version}, "
            f"up {time.time() - info.started_at:.0f} s, log {info.log}"
        )
    else:
        console.print(
            f"LoanStream broker: not running for port {broker.settings.port} "
            f"(data dir {broker.settings.data_dir})"
        )
    console.print(f"{address}: {'reachable' if reachable else 'not reachable'}")
    if not reachable:
        raise typer.Exit(1)


@topics_app.command("create")
def topics_create(bootstrap_servers: BootstrapOpt = None) -> None:
    """Create every declared topic that is missing (idempotent)."""
    settings = kafka_settings(bootstrap_servers)
    created = create_topics(settings)
    console.print(
        f"Created {len(created)} topics"
        + (f": {', '.join(created)}" if created else " (all existed)")
    )


@topics_app.command("describe")
def topics_describe(bootstrap_servers: BootstrapOpt = None) -> None:
    """Print the declared topics as the broker has them."""
    _print_topics(kafka_settings(bootstrap_servers))


def _print_topics(settings: KafkaSettings) -> None:
    table = Table(title=f"Topics on {settings.bootstrap_servers}")
    table.add_column("topic", no_wrap=True)
    for column in ("partitions", "replicas", "cleanup", "retention", "carries"):
        table.add_column(column)
    for s in describe_topics(settings):
        retention = s.config.get("retention.ms", "")
        size = int(s.config.get("retention.bytes", "-1") or -1)
        if retention and retention != "-1":
            retention = f"{int(retention) / 86_400_000:g} d"
        elif size > 0:
            retention = f"{size / 1024**3:g} GiB/partition"
        elif retention == "-1":
            retention = "forever"
        table.add_row(
            s.name,
            str(s.partitions) if s.exists else "[red]missing[/]",
            str(s.replication or ""),
            s.config.get("cleanup.policy", ""),
            retention,
            s.description,
        )
    console.print(table)


@app.command("schema")
def schema(
    out: Annotated[Path, typer.Option("--out", help="directory for the .schema.json files")],
    spec: SpecOpt = None,
) -> None:
    """Write a JSON Schema per event contract, for clients not written in Python."""
    feature_spec = load_spec(spec)
    out.mkdir(parents=True, exist_ok=True)
    models: dict[str, type[BaseModel]] = {
        **CONTRACTS,
        "LoanApplication": ApplicationValidator(feature_spec).model,  # features as the spec says
    }
    for name, model in models.items():
        path = out / f"{name}.schema.json"
        path.write_text(json.dumps(model.model_json_schema(), indent=2) + "\n")
        console.print(f"wrote {path}")


@spec_app.command("check")
def spec_check(path: Annotated[Path, typer.Argument(help="a feature spec YAML file")]) -> None:
    """Validate a feature spec and summarise it."""
    feature_spec = load_spec(path)
    console.print(
        f"{path}: valid spec '{feature_spec.name}' with {len(feature_spec.features)} "
        f"features (id {feature_spec.id_column}, time {feature_spec.event_time_column}, "
        f"target {feature_spec.target_column}); fingerprint {feature_spec.fingerprint[:12]}"
    )


@app.command("settings")
def settings(
    out: Annotated[
        Path | None, typer.Option("--out", help="write it to this file instead of stdout")
    ] = None,
    check: Annotated[
        bool, typer.Option("--check", help="exit 1 if --out differs from the settings classes")
    ] = False,
) -> None:
    """Every setting of every service, as a Markdown table (the source of docs/settings.md).

    Examples:

    \b
      loanstream settings | less
      loanstream settings --out docs/settings.md
      loanstream settings --out docs/settings.md --check   # in CI
    """
    from loanstream.settingsdoc import markdown

    text = markdown()
    if out is None:
        console.out(text, highlight=False)
    elif check:
        if not out.exists() or out.read_text() != text:
            err_console.print(f"{out} is stale: run `loanstream settings --out {out}`")
            raise typer.Exit(1)
        console.print(f"{out} is up to date")
    else:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
        console.print(f"wrote {out}")


def package_version() -> str:
    """The installed distribution's version (pyproject.toml's, once installed)."""
    try:
        return version("loanstream")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


def _show_version(value: bool) -> None:
    if value:
        console.print(f"loanstream {package_version()}")
        raise typer.Exit()


@app.callback()
def root(
    show_version: Annotated[
        bool,
        typer.Option(
            "--version",
            callback=_show_version,
            is_eager=True,
            help="print the version and exit",
        ),
    ] = False,
) -> None:
    """LoanStream: real-time credit scoring with drift monitoring."""


_registered = False


def get_app() -> typer.Typer:
    """The CLI with every installed service's commands (entry points ``loanstream.commands``)."""
    global _registered
    if not _registered:
        for entry in sorted(entry_points(group="loanstream.commands"), key=lambda e: e.name):
            entry.load()(app)
        _registered = True
    return app


def main() -> None:
    configure_logging()  # LOANSTREAM_LOG_LEVEL and LOANSTREAM_LOG_FORMAT
    try:
        get_app()()
    except LoanStreamError as err:
        err_console.print(f"[red]error:[/] {err}")
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
