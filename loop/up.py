"""``loanstream up`` / ``down`` / ``ps``: the services as local processes, with their logs, pids
and health (see loop.supervise)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from loanstream.config import default_data_dir
from loop.supervise import ServiceCommand, ServiceState, Supervisor, describe_dead

console = Console(soft_wrap=True)

RunDirOpt = Annotated[
    Path | None, typer.Option("--run-dir", help="pids, logs [default: <data dir>/run]")
]


def local_services(
    scorer_port: int = 8080,
    monitor_port: int = 8002,
    trainer_port: int = 8003,
    notifier_port: int = 8004,
) -> dict[str, ServiceCommand]:
    """The long-running services, each with the URL that says it is up (the notifier runs
    only with a webhook URL: see :func:`default_services`)."""
    local = "http://127.0.0.1"
    return {
        "scorer": ServiceCommand(
            "scorer", ["scorer", "--api-port", str(scorer_port)], f"{local}:{scorer_port}/readyz"
        ),
        "monitor": ServiceCommand(
            "monitor",
            ["monitor", "--metrics-port", str(monitor_port)],
            f"{local}:{monitor_port}/metrics",
        ),
        "trainer": ServiceCommand(
            "trainer",
            ["trainer", "--metrics-port", str(trainer_port)],
            f"{local}:{trainer_port}/metrics",
        ),
        "notifier": ServiceCommand(
            "notifier",
            ["notify", "--metrics-port", str(notifier_port)],
            f"{local}:{notifier_port}/metrics",
        ),
    }


def default_services() -> str:
    """scorer, monitor and trainer, and the notifier when LOANSTREAM_NOTIFY_WEBHOOK_URL is set."""
    from loop.notify import notifier_configured

    return "scorer,monitor,trainer" + (",notifier" if notifier_configured() else "")


def print_states(states: list[ServiceState]) -> None:
    table = Table("service", "pid", "status", "since", "log")
    colour = {"healthy": "green", "running": "green", "starting": "yellow", "dead": "red"}
    for s in states:
        table.add_row(
            s.name, str(s.pid), f"[{colour[s.status]}]{s.status}[/]", s.started_at, str(s.log)
        )
    console.print(table)
    for s in states:
        if s.status == "dead":
            console.print(f"[red]{describe_dead(s)}[/]")


def register(app: typer.Typer) -> None:
    @app.command("up")
    def up(
        services: Annotated[
            str | None,
            typer.Option(
                "--services",
                help="comma-separated [default: scorer,monitor,trainer, and notifier when "
                "LOANSTREAM_NOTIFY_WEBHOOK_URL is set]",
            ),
        ] = None,
        run_dir: RunDirOpt = None,
        wait_s: Annotated[float, typer.Option("--wait-s", help="for health")] = 120.0,
        scorer_port: Annotated[int, typer.Option(help="REST and /metrics")] = 8080,
        monitor_port: Annotated[int, typer.Option(help="/metrics")] = 8002,
        trainer_port: Annotated[int, typer.Option(help="/metrics")] = 8003,
        notifier_port: Annotated[int, typer.Option(help="/metrics")] = 8004,
    ) -> None:
        """Start the services in the background, wait until each is healthy, show them.

        They read their settings from the environment (LOANSTREAM_*) as when run by hand.

        Examples:

        \b
          loanstream up && loanstream ps
          loanstream up --services scorer,monitor --scorer-port 8081
          loanstream down
        """
        known = local_services(scorer_port, monitor_port, trainer_port, notifier_port)
        services = services or default_services()
        names = [n.strip() for n in services.split(",") if n.strip()]
        unknown = sorted(set(names) - set(known))
        if unknown:
            raise typer.BadParameter(f"unknown services {unknown}; known: {sorted(known)}")
        supervisor = Supervisor(run_dir or default_data_dir() / "run", env={})
        for name in names:
            supervisor.start(known[name])
            console.print(f"started {name}")
        try:
            supervisor.wait_healthy(names, wait_s)
        finally:
            print_states(supervisor.states())

    @app.command("down")
    def down(run_dir: RunDirOpt = None) -> None:
        """Stop every service `up` started (SIGTERM, then SIGKILL after 30 s)."""
        stopped = Supervisor(run_dir or default_data_dir() / "run", env={}).stop_all()
        for s in stopped:
            console.print(f"stopped {s.name} (pid {s.pid}, was {s.status})")
        if not stopped:
            console.print("nothing was running")

    @app.command("ps")
    def ps(run_dir: RunDirOpt = None) -> None:
        """The services `up` started, with their health; exit 1 if one of them died."""
        states = Supervisor(run_dir or default_data_dir() / "run", env={}).states()
        if not states:
            console.print("nothing was started")
            return
        print_states(states)
        if any(s.status == "dead" for s in states):
            raise typer.Exit(1)
