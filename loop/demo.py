"""``loanstream demo``: the whole loop on this machine, as a newcomer's first run.

It starts the local broker (unless one answers already), creates the run's topics, writes a
history, trains and registers the first champion, starts scorer, monitor and trainer, streams
applications with a concept drift, shows live progress, and ends with a summary (drift injected,
detected, retrain requested, new version promoted and served, accuracy before and after) and the
HTML report. Every process it started is stopped at the end, also on Ctrl-C or a failure.

Everything runs as the ``loanstream`` commands a user would type, with the run's settings in
their environment: the shared package never imports a service.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console
from rich.live import Live
from rich.table import Table

from loanstream.config import BrokerSettings, KafkaSettings
from loanstream.contracts import DriftEvent, ModelUpdate, RetrainRequest
from loanstream.errors import LoanStreamError
from loanstream.kafka.broker import LocalBroker, free_port, is_reachable
from loanstream.reading import read_topic
from loanstream.topics import (
    DRIFT_EVENTS,
    LABELLED,
    MODEL_UPDATES,
    PREDICTIONS,
    RETRAIN_REQUESTS,
    create_topics,
)
from loop.story import Labelled, LoopSummary, Scored, phase_rows, position_of, summarize
from loop.supervise import ServiceCommand, Supervisor, describe_dead, tail


@dataclass(frozen=True)
class Plan:
    """How big a demo is: the quick one trades model quality and detail for time."""

    history_rows: int
    rate: float  # applications per second
    count: int  # applications streamed
    onset: int  # the first application of the concept drift
    label_median_days: float  # label delay; 1 event day is 1.44 s at 1,000/s
    candidates: str
    search_candidates: int
    min_rows: int  # labelled rows of the new regime the retrain waits for (train split)
    deadline_s: float  # the stream and its outcomes, end to end


FULL = Plan(30_000, 1000, 140_000, 20_000, 7.0, "logistic,hgb", 2, 2000, 600)
# The stream lasts 100 s: the retrain (detection, labels of the new regime, training, MLflow)
# takes 40-60 s of it on this machine under load, and the scorer keeps up with the stream.
QUICK = Plan(10_000, 1000, 100_000, 10_000, 2.0, "logistic", 2, 1500, 300)
SCENARIO, SEED = "concept-drift", 7
# The concept drift of producer/scenarios.yaml ("concept-drift"), starting where the plan says.
SCENARIO_FILE = """scenarios:
  concept-drift:
    description: >-
      from application {onset:,} on, debt-consolidation loans (about 45% of applications)
      start defaulting, and the credit score matters less
    drifts:
      - kind: concept
        start: {onset}
        categories: {{loan_purpose: {{debt_consolidation: -2.5}}}}
        coefficients: {{credit_score: -0.5}}
"""


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """A /metrics page as {(sample name, sorted labels): value}; empty if it does not answer."""
    try:
        text = httpx.get(url, timeout=2).text
    except httpx.HTTPError:
        return {}
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def total(samples: dict[Any, float], name: str, **labels: str) -> float:
    """The sum of a metric's samples whose labels include ``labels``."""
    want = set(labels.items())
    return sum(v for (n, lab), v in samples.items() if n == name and want <= set(lab))


@dataclass(frozen=True)
class RunRecords:
    """What a run left on its topics, read back after it settled."""

    events: list[DriftEvent]
    requests: list[RetrainRequest]
    updates: list[ModelUpdate]  # in the order they were promoted
    scored: list[Scored]
    labelled: list[Labelled]


class Demo:
    def __init__(
        self, plan: Plan, out: Path, port: int, console: Console, prefix: str = "demo"
    ) -> None:
        self.plan = plan
        self.console = console
        stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
        self.run_dir = out.resolve() / stamp
        self.prefix = prefix
        self.port = port
        self.kafka = KafkaSettings(
            bootstrap_servers=f"127.0.0.1:{port}", topic_prefix=f"{prefix}-{stamp}."
        )
        self.ports = {name: free_port() for name in ("scorer", "monitor", "trainer", "producer")}
        self.supervisor = Supervisor(self.run_dir / "run", self.env(stamp))
        self.broker: LocalBroker | None = None

    def env(self, stamp: str) -> dict[str, str]:
        store = self.run_dir / "mlflow"
        uri = f"sqlite:///{store / 'mlflow.db'}"
        return {
            "LOANSTREAM_KAFKA_BOOTSTRAP_SERVERS": self.kafka.bootstrap_servers,
            "LOANSTREAM_KAFKA_TOPIC_PREFIX": self.kafka.topic_prefix,
            "LOANSTREAM_TRAINER_DATA_DIR": str(store),
            # The run's own store, on purpose over a MLFLOW_TRACKING_URI the shell may export:
            # a demo never registers its models in the team's server.
            "MLFLOW_TRACKING_URI": uri,
            "LOANSTREAM_TRAINER_TRACKING_URI": uri,
            "LOANSTREAM_TRAINER_CANDIDATES": orjson.dumps(self.plan.candidates.split(",")).decode(),
            "LOANSTREAM_TRAINER_SEARCH_CANDIDATES": str(self.plan.search_candidates),
            "LOANSTREAM_TRAINER_MIN_ROWS": str(self.plan.min_rows),
            "LOANSTREAM_SCORER_TRACKING_URI": uri,
            "LOANSTREAM_SCORER_APP_ID": f"{self.prefix}-scorer-{stamp}",
            "LOANSTREAM_MONITOR_TRACKING_URI": uri,
            "LOANSTREAM_MONITOR_APP_ID": f"{self.prefix}-monitor-{stamp}",
            "LOANSTREAM_MONITOR_DATA_DIR": str(self.run_dir / "monitor"),
            "MLFLOW_DISABLE_TELEMETRY": "true",
            # One thread per process: on a small machine running five of them, scikit-learn's
            # OpenMP threads spin against each other (an HGB search took 4 minutes, not 20 s).
            "OMP_NUM_THREADS": "1",
        }

    # -- steps ---------------------------------------------------------------------------
    def start_broker(self, data_dir: Path | None) -> None:
        if is_reachable(self.kafka.bootstrap_servers):
            self.console.print(f"using the broker already on {self.kafka.bootstrap_servers}")
            return
        overrides: dict[str, Any] = {"port": self.port}
        if data_dir is not None:
            overrides["data_dir"] = data_dir
        self.broker = LocalBroker(BrokerSettings(**overrides))
        with self.console.status("starting Apache Kafka (the first run fetches it)"):
            info, _ = self.broker.start()
        self.console.print(f"Kafka {info.version} on {self.kafka.bootstrap_servers}")

    def first_champion_and_services(self) -> None:
        """Generate a history, train the first champion on it, start the services: healthy."""
        history = self.run_dir / "history.parquet"
        rows = self.plan.history_rows
        self.command(
            f"generating a {rows:,}-row history",
            ["generate", "--out", str(history), "--rows", str(rows), "--seed", "1"],
        )
        self.command(
            "training, calibrating and registering the first champion",
            ["train", str(history), "--candidates", self.plan.candidates],
        )
        for service in self.services():
            self.supervisor.start(service)
        with self.console.status("starting scorer, monitor and trainer"):
            self.supervisor.wait_healthy(["scorer", "monitor", "trainer"], 180)

    def command(self, title: str, argv: list[str]) -> None:
        """A one-shot ``loanstream`` command, its output in the run's log folder."""
        log = self.run_dir / "run" / "logs" / f"{argv[0]}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        began = time.monotonic()
        with self.console.status(title), log.open("ab") as out:
            done = subprocess.run(
                [sys.executable, "-m", "loanstream.cli", *argv],
                env={**os.environ, **self.supervisor.env},
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                check=False,
            )
        if done.returncode != 0:
            lines = "\n".join(f"    {line}" for line in tail(log))
            raise LoanStreamError(f"{title} failed (exit {done.returncode}); {log}:\n{lines}")
        self.console.print(f"{title}: done in {time.monotonic() - began:.0f} s")

    def services(self) -> list[ServiceCommand]:
        local = "http://127.0.0.1"
        p = self.ports
        return [
            ServiceCommand(
                "scorer",
                ["scorer", "--api-port", str(p["scorer"])],
                f"{local}:{p['scorer']}/readyz",
            ),
            ServiceCommand(
                "monitor",
                ["monitor", "--metrics-port", str(p["monitor"])],
                f"{local}:{p['monitor']}/metrics",
            ),
            ServiceCommand(
                "trainer",
                ["trainer", "--metrics-port", str(p["trainer"])],
                f"{local}:{p['trainer']}/metrics",
            ),
        ]

    def stream(self) -> ServiceCommand:
        plan = self.plan
        argv = ["produce", "--rate", str(plan.rate), "--count", str(plan.count)]
        scenarios = self.run_dir / "scenarios.yaml"
        scenarios.write_text(SCENARIO_FILE.format(onset=plan.onset))
        argv += ["--scenario", SCENARIO, "--scenario-file", str(scenarios), "--seed", str(SEED)]
        argv += ["--label-median-days", str(plan.label_median_days), "--label-sigma", "0.3"]
        argv += ["--unlabelled-fraction", "0.02"]
        argv += ["--manifest", str(self.run_dir / "manifest.json")]
        argv += ["--metrics-port", str(self.ports["producer"])]
        return ServiceCommand(
            "producer", argv, f"http://127.0.0.1:{self.ports['producer']}/metrics"
        )

    # -- live view -----------------------------------------------------------------------
    def watch(
        self,
        busy: Callable[[Progress], bool] | None = None,
        every_s: float = 1.0,
        held: Callable[[], Collection[str]] = tuple,
    ) -> None:
        """Progress until the stream and its outcomes are through, or the deadline passes.

        ``busy`` (the backtest's) sees each look at the metrics and may keep the watch going;
        ``held`` names the services it holds, which are not scraped (they cannot answer).
        """
        deadline = time.monotonic() + self.plan.deadline_s
        began, last_print = time.monotonic(), 0.0
        view = Progress(self.ports)
        live = Live(console=self.console, auto_refresh=False) if self.console.is_terminal else None
        with live or contextlib.nullcontext():
            while True:
                states = {s.name: s for s in self.supervisor.states()}
                for state in states.values():
                    if state.status == "dead" and not (
                        state.name == "producer" and state.exit_code == 0
                    ):
                        raise LoanStreamError(describe_dead(state))
                view.update(time.monotonic() - began, skip=held())
                working = busy(view) if busy is not None else False
                if live is not None:
                    live.update(view.table(), refresh=True)
                elif time.monotonic() - last_print >= 5:
                    self.console.print(view.line())
                    last_print = time.monotonic()
                if states["producer"].status == "dead" and view.settled() and not working:
                    return
                if time.monotonic() > deadline:
                    self.console.print("[yellow]the deadline passed; summarising what came[/]")
                    return
                time.sleep(every_s)

    # -- the story -----------------------------------------------------------------------
    def read_back(self, position: Callable[[str], int | None] = position_of) -> RunRecords:
        """The run's records from its topics; ``position`` places an application id."""
        k = self.kafka
        with self.console.status("reading the run back from its topics"):
            events = read_topic(
                k, k.topic(DRIFT_EVENTS), parse=lambda _, v: DriftEvent.from_json(v)
            )
            requests = read_topic(
                k, k.topic(RETRAIN_REQUESTS), parse=lambda _, v: RetrainRequest.from_json(v)
            )
            updates = read_topic(
                k, k.topic(MODEL_UPDATES), parse=lambda _, v: ModelUpdate.from_json(v)
            )
            scored = read_topic(
                k, k.topic(PREDICTIONS), parse=scored_parser(position), timeout_s=120
            )
            labelled = read_topic(
                k, k.topic(LABELLED), parse=labelled_parser(position), timeout_s=120
            )
        updates.sort(key=lambda u: u.promoted_at)
        return RunRecords(events, requests, updates, scored, labelled)

    def summary(self) -> LoopSummary:
        manifest = orjson.loads((self.run_dir / "manifest.json").read_bytes())
        r = self.read_back()
        result = summarize(manifest, r.events, r.requests, r.updates, r.scored, r.labelled)
        (self.run_dir / "summary.json").write_bytes(
            orjson.dumps(result.as_dict(), option=orjson.OPT_INDENT_2)
        )
        return result

    def stop(self) -> None:
        for state in self.supervisor.stop_all():
            self.console.print(f"stopped {state.name}")
        if self.broker is not None:
            self.broker.stop()
            self.console.print("stopped the broker")


class Progress:
    """What the services report on /metrics, turned into the demo's live numbers."""

    def __init__(self, ports: dict[str, int]) -> None:
        self.urls = {name: f"http://127.0.0.1:{port}/metrics" for name, port in ports.items()}
        self.samples: dict[str, dict[Any, float]] = {}
        self.history: list[tuple[float, float, float]] = []  # (seconds, scored, labelled)

    def update(self, seconds: float, skip: Collection[str] = ()) -> None:
        """Scrape every service but ``skip`` (held ones, which cannot answer)."""
        for name in self.urls:  # a service that ended keeps its last figures
            if name not in skip:
                self.refresh(name)
        kept = [h for h in self.history if h[0] >= seconds - 10]
        self.history = [*kept, (seconds, self.scored(), self.labelled())]

    def refresh(self, name: str) -> None:
        """Scrape one service again (its figures between looks)."""
        self.samples[name] = scrape(self.urls[name]) or self.samples.get(name, {})

    def value(self, service: str, name: str, **labels: str) -> float:
        return total(self.samples.get(service, {}), name, **labels)

    def scored(self) -> float:
        return self.value("scorer", "loanstream_scorer_applications_total")

    def labelled(self) -> float:
        return self.value("monitor", "loanstream_monitor_join", state="joined")

    def rate(self) -> float:
        if len(self.history) < 2:
            return 0.0
        (t0, s0, _), (t1, s1, _) = self.history[0], self.history[-1]
        return (s1 - s0) / max(t1 - t0, 1e-9)

    def settled(self, quiet_s: float = 5.0) -> bool:
        """Nothing new scored or labelled over the last ``quiet_s`` seconds of looks."""
        if not self.history or self.history[-1][0] - self.history[0][0] < quiet_s:
            return False
        since = self.history[-1][0] - quiet_s
        first = max(i for i, (t, _, _) in enumerate(self.history) if t <= since)
        return len({(s, lab) for _, s, lab in self.history[first:]}) == 1

    def version(self) -> str:
        """The newest version that has scored (the scorer's counter is labelled by version)."""
        versions = [
            dict(labels)["model_version"]
            for (name, labels), value in self.samples.get("scorer", {}).items()
            if name == "loanstream_scorer_applications_total" and value
        ]
        return max(versions, key=lambda v: (len(v), v), default="-")

    def rows(self) -> list[tuple[str, str]]:
        realized = {
            name: self.value(
                "monitor",
                "loanstream_monitor_window_metric",
                scope="all",
                metric=name,
                source="realized",
            )
            for name in ("auc", "gini", "ks")
        }
        drift = {
            dict(labels)["signal"]: int(v)
            for (name, labels), v in self.samples.get("monitor", {}).items()
            if name == "loanstream_monitor_drift_events_total" and v
        }
        retrains = {
            dict(labels)["result"]: int(v)
            for (name, labels), v in self.samples.get("trainer", {}).items()
            if name == "loanstream_trainer_retrains_total" and v
        }
        missing = self.value("trainer", "loanstream_trainer_rows_missing")
        rounds = self.value("trainer", "loanstream_trainer_retrain_seconds_count")
        asked = self.value("trainer", "loanstream_trainer_requests_total", outcome="trained")
        if missing:
            training = f"waiting for {missing:,.0f} more labelled rows of the new regime"
        elif asked > rounds:
            training = "training a challenger"
        else:
            training = "none yet"
        sent = self.value("producer", "loanstream_producer_messages_total", kind="application")
        return [
            ("applications sent", f"{sent:,.0f}"),
            ("scored", f"{self.scored():,.0f}  ({self.rate():,.0f}/s)"),
            ("model version serving", self.version()),
            ("labelled (outcome joined)", f"{self.labelled():,.0f}"),
            ("windowed AUC / Gini / KS (realized)", ranked(realized)),
            ("drift events", ", ".join(f"{k} {v}" for k, v in drift.items()) or "none yet"),
            ("retrains", ", ".join(f"{k} {v}" for k, v in retrains.items()) or training),
        ]

    def table(self) -> Table:
        table = Table("", "", show_header=False, title="LoanStream demo: live")
        for name, value in self.rows():
            table.add_row(name, value)
        return table

    def line(self) -> str:
        return " | ".join(f"{name}: {value}" for name, value in self.rows())


Parser = Callable[[bytes | None, bytes], Any]


def scored_parser(position: Callable[[str], int | None] = position_of) -> Parser:
    """A loan.predictions record as a Scored row, placed by ``position`` (None: not ours)."""

    def parse(_: bytes | None, value: bytes) -> Scored | None:
        r = orjson.loads(value)
        at = position(str(r.get("application_id", "")))
        if at is None:
            return None
        scored_at = datetime.fromisoformat(r["scored_at"]).timestamp()
        return Scored(at, str(r["model_version"]), scored_at)

    return parse


def labelled_parser(position: Callable[[str], int | None] = position_of) -> Parser:
    """A loan.labelled record as a Labelled row, placed by ``position`` (None: not ours)."""

    def parse(_: bytes | None, value: bytes) -> Labelled | None:
        r = orjson.loads(value)
        at = position(str(r.get("application_id", "")))
        if at is None:
            return None
        return Labelled(at, str(r["model_version"]), float(r["probability"]), int(r["label"]))

    return parse


def ranked(metrics: dict[str, float]) -> str:
    """``0.812 / 0.624 / 0.471``: AUC, Gini and KS, "-" until a window has closed."""
    if not metrics.get("auc"):
        return "-"
    return " / ".join(f"{metrics.get(k, 0.0):.3f}" for k in ("auc", "gini", "ks"))


def print_summary(console: Console, s: LoopSummary, run_dir: Path) -> None:
    def at(position: int | None, wall: str | None) -> str:
        if position is None:
            return "no"
        after = f", {position - s.drift_position:,} after the onset" if s.drift_position else ""
        clock = f" ({wall[11:19]} UTC)" if wall else ""
        return f"at application {position:,}{after}{clock}"

    table = Table("what", "when / how much", title="What the loop did")
    table.add_row("drift injected", f"at application {s.drift_position or 0:,} ({SCENARIO})")
    detected = at(s.detected_position, s.detected_at)
    if s.detected_by:
        detected += f" by {s.detected_signal}/{s.detected_by}"
    table.add_row("drift detected", detected)
    table.add_row("retrain requested", at(s.retrain_requested_position, s.retrain_requested_at))
    promoted = at(s.promoted_position, s.promoted_at)
    table.add_row(f"version {s.promoted_version or '-'} promoted", promoted)
    table.add_row("... and serving", at(s.first_served_position, None))
    table.add_row("scored by the stale model after the drift", f"{s.stale_scored or 0:,}")
    by_version = ", ".join(f"v{k}: {v:,}" for k, v in sorted(s.scored_by_version.items()))
    table.add_row("applications scored", f"{s.scored:,} ({by_version})")
    for name, value in phase_rows(s.phases):
        table.add_row(name, value)
    console.print(table)
    console.print(f"summary: {run_dir / 'summary.json'}")


def run_demo(
    plan: Plan,
    out: Path,
    port: int,
    data_dir: Path | None,
    console: Console,
    on_summary: Callable[[LoopSummary], None] = lambda s: None,
) -> LoopSummary:
    began = time.monotonic()
    demo = Demo(plan, out, port, console)
    console.print(f"demo run in {demo.run_dir} (topics prefixed {demo.kafka.topic_prefix})")
    try:
        demo.start_broker(data_dir)
        create_topics(demo.kafka)
        demo.first_champion_and_services()
        console.print(
            f"streaming {plan.count:,} applications at {plan.rate:,.0f}/s; "
            f"from application {plan.onset:,} on, the repayment behaviour changes ({SCENARIO})"
        )
        demo.supervisor.start(demo.stream())
        demo.watch()
        result = demo.summary()
        on_summary(result)
        print_summary(console, result, demo.run_dir)
        report = ["report", "--out", str(demo.run_dir), "--labels", "all"]  # no selective labels
        demo.command("writing the HTML report", report)
        console.print(f"report: {demo.run_dir / 'report.html'}")
        return result
    finally:
        demo.stop()
        console.print(f"the demo took {(time.monotonic() - began) / 60:.1f} min")
