"""Run LoanStream's services as local processes: started with their logs, pids and health
checks recorded in a run directory, so a later command can report or stop them.

Each service is ``python -m loanstream.cli <command>`` in its own session, its output in
``<run_dir>/logs/<name>.log``, and a record ``<run_dir>/<name>.json`` (pid, command, log, health
URL). A record whose process is gone is reported as dead with the end of its log: a service
never goes silently missing.

Example::

    supervisor = Supervisor(Path("run"), env={})
    supervisor.start(ServiceCommand("monitor", ["monitor", "--metrics-port", "8002"],
                                    "http://127.0.0.1:8002/metrics"))
    for state in supervisor.states():
        print(state.name, state.status)
    supervisor.stop_all()
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx

from loanstream.errors import LoanStreamError


@dataclass(frozen=True)
class ServiceCommand:
    name: str
    argv: list[str]  # after ``loanstream``, e.g. ["monitor", "--metrics-port", "8002"]
    health_url: str | None = None  # answers 200 when the service is up


@dataclass(frozen=True)
class ServiceState:
    name: str
    pid: int
    status: str  # "healthy", "starting" (alive, health not answering yet), "running" or "dead"
    log: Path
    started_at: str
    exit_code: int | None = None  # known only for processes this supervisor started
    last_lines: tuple[str, ...] = ()  # the end of the log of a dead service

    @property
    def alive(self) -> bool:
        return self.status != "dead"


def tail(path: Path, lines: int = 12) -> tuple[str, ...]:
    """The last lines of a log, for a service that died."""
    try:
        with path.open("rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - 16_384))
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return ()
    return tuple(text.splitlines()[-lines:])


def _alive(pid: int) -> bool:
    """True if ``pid`` runs a LoanStream command (not a zombie, not a recycled pid)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    state = stat.rsplit(")", 1)[1].split()[0]
    return b"loanstream.cli" in cmdline and state not in ("Z", "X")


def _signal(pid: int, sig: int) -> None:
    """Signal the service's whole session (its loader child too); it may have just ended."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, sig)


def stop_children_on_sigterm() -> None:
    """Make SIGTERM end this process as Ctrl-C does, through its ``finally`` blocks.

    By default SIGTERM ends Python at once, and a command that started services (the demo, a
    backtest, the soak) leaves them running: a soak stopped with ``kill`` left its scorer and
    monitor spinning against a broker that was gone, at half a core, for the next hour.
    """
    signal.signal(signal.SIGTERM, lambda signum, _: sys.exit(128 + signum))


def healthy(url: str, timeout_s: float = 2.0) -> bool:
    try:
        return httpx.get(url, timeout=timeout_s).status_code == 200
    except httpx.HTTPError:
        return False


class Supervisor:
    """Start, watch and stop services whose records live in ``run_dir``."""

    def __init__(self, run_dir: Path, env: Mapping[str, str]) -> None:
        self.run_dir = run_dir
        self.env = dict(env)
        self._children: dict[str, subprocess.Popen[bytes]] = {}

    def _record(self, name: str) -> Path:
        return self.run_dir / f"{name}.json"

    def start(self, command: ServiceCommand) -> None:
        """Start a service, unless the run dir records it as alive already (an error)."""
        current = self.state(command.name)
        if current is not None and current.alive:
            raise LoanStreamError(
                f"{command.name} is already running (pid {current.pid}); "
                f"stop it first: loanstream down --run-dir {self.run_dir}"
            )
        log = self.run_dir / "logs" / f"{command.name}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("ab") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "loanstream.cli", *command.argv],
                env={**os.environ, **self.env},
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # a Ctrl-C in the terminal reaches us, not the services
            )
        self._children[command.name] = process
        record = {
            "name": command.name,
            "pid": process.pid,
            "argv": command.argv,
            "health_url": command.health_url,
            "log": str(log),
            "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        self._record(command.name).write_text(json.dumps(record, indent=2) + "\n")

    def names(self) -> list[str]:
        return sorted(p.stem for p in self.run_dir.glob("*.json"))

    def state(self, name: str) -> ServiceState | None:
        try:
            record = json.loads(self._record(name).read_text())
        except (OSError, ValueError):
            return None
        pid, log = int(record["pid"]), Path(record["log"])
        child = self._children.get(name)
        exit_code = child.poll() if child is not None else None
        # Our own children are judged by poll() alone: /proc of a process still exec'ing
        # can read empty, and a healthy service was once reported dead at start.
        gone = exit_code is not None if child is not None else not _alive(pid)
        if gone:
            status = "dead"
        elif record.get("health_url"):
            status = "healthy" if healthy(record["health_url"]) else "starting"
        else:
            status = "running"
        return ServiceState(
            name=name,
            pid=pid,
            status=status,
            log=log,
            started_at=record.get("started_at", ""),
            exit_code=exit_code,
            last_lines=tail(log) if status == "dead" else (),
        )

    def states(self) -> list[ServiceState]:
        return [s for s in (self.state(n) for n in self.names()) if s is not None]

    def wait_healthy(self, names: list[str], timeout_s: float = 120.0) -> list[ServiceState]:
        """Wait until each named service is healthy (or running, without a health URL).

        Raises as soon as one of them dies, with its log's last lines, or when time is up.
        """
        deadline = time.monotonic() + timeout_s
        while True:
            states = [s for s in self.states() if s.name in names]
            dead = [s for s in states if s.status == "dead"]
            if dead:
                raise LoanStreamError(describe_dead(dead[0]))
            if all(s.status in ("healthy", "running") for s in states):
                return states
            if time.monotonic() > deadline:
                waiting = [s.name for s in states if s.status == "starting"]
                raise LoanStreamError(f"not healthy after {timeout_s:.0f} s: {waiting}")
            time.sleep(0.5)

    def stop(self, name: str, timeout_s: float = 30.0) -> ServiceState | None:
        """SIGTERM, then SIGKILL after ``timeout_s``; the record is removed."""
        state = self.state(name)
        if state is None:
            return None
        if state.alive:
            _signal(state.pid, signal.SIGTERM)
            deadline = time.monotonic() + timeout_s
            while _alive(state.pid) and time.monotonic() < deadline:
                self._reap(name)
                time.sleep(0.2)
            if _alive(state.pid):
                _signal(state.pid, signal.SIGKILL)
        self._reap(name, wait_s=10)
        self._record(name).unlink(missing_ok=True)
        return state

    def stop_all(self, timeout_s: float = 30.0) -> list[ServiceState]:
        """Stop every recorded service, the last started first."""
        order = sorted(self.states(), key=lambda s: s.started_at, reverse=True)
        return [s for s in (self.stop(s.name, timeout_s) for s in order) if s is not None]

    def _reap(self, name: str, wait_s: float = 0.0) -> None:
        child = self._children.get(name)
        if child is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(wait_s)


def describe_dead(state: ServiceState) -> str:
    code = f" with exit code {state.exit_code}" if state.exit_code is not None else ""
    lines = "\n".join(f"    {line}" for line in state.last_lines)
    return f"{state.name} (pid {state.pid}) died{code}; the end of {state.log}:\n{lines}"
