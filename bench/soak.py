"""Soak: the whole system at a steady rate for long; does memory stay flat and lag bounded?

    .venv/bin/python -m bench.soak [--minutes 30] [--rate 1000] [--every 10] [--out out/soak]
        [--scenario stable] [--label-delay-s 5] [--warmup-s ...] [--candidates logistic]

Starts a private broker and, as ``loanstream demo`` does, a history, a first champion, then the
scorer, monitor and trainer (OMP_NUM_THREADS=1); ``loanstream produce`` then streams applications
and their outcomes (due ``--label-delay-s`` later, so the monitor joins them during the run).
Every ``--every`` seconds: the RSS and CPU seconds of each process with its children (from /proc)
and the lag of each consumer group (high watermark - committed offset, over partitions). At the
end, per process, the mean RSS of the first and last fifth of the samples after the warm-up and a
least-squares slope ("flat": growth under 5%), and per group whether the lag stays bounded. Prints
a table, writes soak.json, soak.png and soak.html in --out (the run's logs in a dated folder).
"""

from __future__ import annotations

import argparse
import base64
import os
import shlex
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import jinja2
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import orjson
from confluent_kafka import Consumer, KafkaException, TopicPartition
from rich.console import Console
from rich.table import Table

from loanstream.config import BrokerSettings, KafkaSettings
from loanstream.kafka.broker import LocalBroker, free_port, kafka_version
from loanstream.topics import APPLICATIONS, OUTCOMES, PREDICTIONS, create_topics
from loop.demo import Demo, Plan, Progress
from loop.supervise import ServiceCommand, describe_dead, stop_children_on_sigterm
from monitor.settings import MonitorSettings

INTERVAL_S = 60.0  # event seconds between applications: 1 event day = 1.44 s at 1,000/s
LAG_FLOOR_S = 5.0  # a lag under this many seconds of traffic is bounded (Faust commits every 2.8 s)
MEMORY_TOLERANCE_PCT = 5.0
console = Console(soft_wrap=True)


# -- pure: what the samples say ---------------------------------------------------------------
@dataclass(frozen=True)
class Offsets:
    """One partition as a consumer group sees it; ``committed`` < 0: nothing committed there."""

    low: int
    high: int
    committed: int


def lag(partitions: Iterable[Offsets]) -> int:
    """Messages a group has still to read; an uncommitted partition counts from its start."""
    return sum(max(0, p.high - (p.committed if p.committed >= 0 else p.low)) for p in partitions)


def rss_mib(status: str) -> float:
    """VmRSS of a /proc/<pid>/status text in MiB (0 when the process has none)."""
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def parent_and_ticks(stat: str) -> tuple[int, int]:
    """(parent pid, user + system CPU ticks) of a /proc/<pid>/stat text (the name may hold ')')."""
    fields = stat.rsplit(")", 1)[1].split()
    return int(fields[1]), int(fields[11]) + int(fields[12])


def _after(times_s: Sequence[float], values: Sequence[float], warmup_s: float) -> np.ndarray:
    """(t, value) rows after the warm-up, or all of them if fewer than two come after it."""
    rows = np.column_stack([np.asarray(times_s, float), np.asarray(values, float)])
    kept = rows[rows[:, 0] >= warmup_s]
    return kept if len(kept) >= 2 else rows


def _fifths(values: np.ndarray) -> tuple[float, float]:
    k = max(1, round(len(values) / 5))
    return float(values[:k].mean()), float(values[-k:].mean())


@dataclass(frozen=True)
class MemoryTrend:
    first_mib: float  # mean RSS of the first fifth of the samples after the warm-up
    last_mib: float  # ... and of the last fifth
    growth_pct: float
    slope_mib_per_h: float  # least squares over the samples after the warm-up
    flat: bool  # growth under MEMORY_TOLERANCE_PCT


def memory_trend(
    times_s: Sequence[float], mib: Sequence[float], warmup_s: float
) -> MemoryTrend | None:
    rows = _after(times_s, mib, warmup_s)
    if len(rows) < 2:
        return None
    first, last = _fifths(rows[:, 1])
    growth = (last - first) / first * 100 if first else 0.0
    slope = float(np.polyfit(rows[:, 0], rows[:, 1], 1)[0]) * 3600
    return MemoryTrend(first, last, growth, slope, growth < MEMORY_TOLERANCE_PCT)


@dataclass(frozen=True)
class LagTrend:
    peak: int  # over the whole run, start-up included
    last_mean: float  # mean of the last fifth of the samples after the warm-up
    slope_per_min: float  # messages per minute, least squares after the warm-up
    bounded: bool  # the last fifth under ``floor`` or under half the peak: the group keeps up


def lag_trend(
    times_s: Sequence[float], lags: Sequence[float], warmup_s: float, floor: float
) -> LagTrend | None:
    if not lags:
        return None
    rows = _after(times_s, lags, warmup_s)
    last = _fifths(rows[:, 1])[1]
    slope = float(np.polyfit(rows[:, 0], rows[:, 1], 1)[0]) * 60 if len(rows) >= 2 else 0.0
    peak = int(max(lags))
    return LagTrend(peak, last, slope, last <= floor or last < peak / 2)


@dataclass(frozen=True)
class Sample:
    t: float  # seconds since the stream started
    rss_mib: dict[str, float]  # per process, its children included
    cpu_s: dict[str, float]
    lag: dict[str, int]  # per "service:topic"
    sent: float  # applications, as the producer's and services' /metrics count them
    scored: float
    labelled: float


def series(samples: Sequence[Sample], field: str, name: str) -> tuple[list[float], list[float]]:
    points = [(s.t, getattr(s, field)[name]) for s in samples if name in getattr(s, field)]
    return [t for t, _ in points], [v for _, v in points]


def names(samples: Sequence[Sample], field: str) -> list[str]:
    return list(dict.fromkeys(n for s in samples for n in getattr(s, field)))


# -- plumbing: processes, offsets, the run ------------------------------------------------------
def usage(roots: dict[str, int]) -> tuple[dict[str, float], dict[str, float]]:
    """RSS (MiB) and CPU seconds of each named process with all its descendants."""
    table: dict[int, tuple[int, float, float]] = {}
    tick = os.sysconf("SC_CLK_TCK")
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent, ticks = parent_and_ticks((entry / "stat").read_text())
                rss = rss_mib((entry / "status").read_text())
            except (OSError, IndexError, ValueError):
                continue  # it ended while we looked
            table[int(entry.name)] = (parent, rss, ticks / tick)
    children: dict[int, list[int]] = {}
    for pid, (parent, _, _) in table.items():
        children.setdefault(parent, []).append(pid)
    memory, cpu = {}, {}
    for name, root in roots.items():
        tree, todo = [], [root] if root in table else []
        while todo:
            tree.append(todo.pop())
            todo += children.get(tree[-1], [])
        if tree:
            memory[name] = sum(table[p][1] for p in tree)
            cpu[name] = sum(table[p][2] for p in tree)
    return memory, cpu


class LagReader:
    """The lag of the services' consumer groups, read from outside: it joins no group."""

    def __init__(self, kafka: KafkaSettings, groups: dict[str, tuple[str, tuple[str, ...]]]):
        self.kafka = kafka
        self.groups = groups  # service -> (its group id = its Faust app id, the topics it reads)
        self._consumers: dict[str, Consumer] = {}

    def read(self) -> dict[str, int]:
        lags = {}
        for service, (group, topics) in self.groups.items():
            if group not in self._consumers:
                conf = {**self.kafka.confluent(), "group.id": group, "enable.auto.commit": False}
                self._consumers[group] = Consumer(conf)
            consumer = self._consumers[group]
            for name in topics:
                topic = self.kafka.topic(name)
                try:
                    ids = consumer.list_topics(topic, timeout=10).topics[topic].partitions
                    done = consumer.committed([TopicPartition(topic, p) for p in ids], timeout=10)
                    lags[f"{service}:{name.removeprefix('loan.')}"] = lag(
                        Offsets(*consumer.get_watermark_offsets(tp, timeout=10), tp.offset)
                        for tp in done
                    )
                except KafkaException:
                    continue  # a slow answer costs one sample, not the run
        return lags

    def close(self) -> None:
        for consumer in self._consumers.values():
            consumer.close()


def stream(demo: Demo, args: argparse.Namespace) -> ServiceCommand:
    port = demo.ports["producer"]
    argv = ["produce", "--rate", str(args.rate), "--duration", str(args.minutes * 60)]
    argv += ["--scenario", args.scenario, "--seed", "7", "--interval-s", str(INTERVAL_S)]
    argv += ["--label-median-days", f"{demo.plan.label_median_days:.4f}", "--label-sigma", "0.3"]
    argv += ["--unlabelled-fraction", str(args.unlabelled_fraction)]
    argv += ["--metrics-port", str(port)]
    return ServiceCommand("producer", argv, f"http://127.0.0.1:{port}/metrics")


def progress_line(s: Sample, before: Sample | None) -> str:
    sent = scored = labelled = 0.0
    if before is not None and s.t > before.t:
        dt = s.t - before.t
        sent, scored = (s.sent - before.sent) / dt, (s.scored - before.scored) / dt
        labelled = (s.labelled - before.labelled) / dt
    rss = " ".join(f"{n} {v:,.0f}" for n, v in s.rss_mib.items())
    lags = " ".join(f"{n} {v:,}" for n, v in s.lag.items())
    rates = f"sent {sent:,.0f}/s scored {scored:,.0f}/s labelled {labelled:,.0f}/s"
    return f"{s.t / 60:5.1f} min | {rates} | RSS MiB {rss} | lag {lags}"


def watch(demo: Demo, broker_pid: int, args: argparse.Namespace) -> tuple[list[Sample], str | None]:
    """Sample until the producer is done: (the samples, why the run stopped early if it did)."""
    env = demo.supervisor.env
    lags = LagReader(
        demo.kafka,
        {
            "scorer": (env["LOANSTREAM_SCORER_APP_ID"], (APPLICATIONS,)),
            "monitor": (env["LOANSTREAM_MONITOR_APP_ID"], (PREDICTIONS, OUTCOMES)),
        },
    )
    view, samples = Progress(demo.ports), list[Sample]()
    began, tick = time.monotonic(), 0
    try:
        while True:
            time.sleep(max(0.0, began + tick * args.every - time.monotonic()))
            tick += 1
            states = {s.name: s for s in demo.supervisor.states()}
            for s in states.values():
                if s.status == "dead" and not (s.name == "producer" and s.exit_code == 0):
                    return samples, describe_dead(s)
            now = time.monotonic() - began
            view.update(now)
            pids = {name: s.pid for name, s in states.items() if s.alive}
            rss, cpu = usage({**pids, "kafka": broker_pid})
            sent = view.value("producer", "loanstream_producer_messages_total", kind="application")
            sample = Sample(now, rss, cpu, lags.read(), sent, view.scored(), view.labelled())
            console.print(progress_line(sample, samples[-1] if samples else None))
            samples.append(sample)
            # the producer ends after its last outcomes; a stuck one is cut 3 min late
            if not states["producer"].alive or now > demo.plan.deadline_s:
                return samples, None
    except KeyboardInterrupt:
        return samples, "interrupted with Ctrl-C"
    finally:
        lags.close()


def run(args: argparse.Namespace) -> tuple[list[Sample], str | None]:
    duration_s = args.minutes * 60
    plan = Plan(
        history_rows=10_000,
        rate=args.rate,
        count=int(args.rate * duration_s),
        onset=0,
        label_median_days=args.label_delay_s * args.rate * INTERVAL_S / 86_400,
        candidates=args.candidates,  # the trainer's too, should the monitor ask for a retrain
        search_candidates=2,
        min_rows=2000,
        deadline_s=duration_s + 180,
    )
    demo = Demo(plan, args.out, free_port(), console, prefix="soak")
    console.print(f"soak run in {demo.run_dir} (topics prefixed {demo.kafka.topic_prefix})")
    defaults = BrokerSettings()
    jars = defaults.jars_dir or defaults.data_dir / "kafka" / kafka_version()
    with tempfile.TemporaryDirectory(prefix="soak-kafka-") as kafka_dir:
        settings = BrokerSettings(port=demo.port, data_dir=Path(kafka_dir), jars_dir=jars)
        demo.broker = LocalBroker(settings)
        try:
            with console.status("starting Apache Kafka"):
                info, _ = demo.broker.start()
            create_topics(demo.kafka)
            demo.first_champion_and_services()
            console.print(
                f"streaming at {args.rate:,.0f}/s for {args.minutes:g} min ({args.scenario})"
            )
            demo.supervisor.start(stream(demo, args))
            return watch(demo, info.pid, args)
        finally:
            demo.stop()


# -- the report ---------------------------------------------------------------------------------
MEMORY_TITLE = "Memory: mean RSS (children included) of the first and last fifth after the warm-up"
LAG_TITLE = "Consumer lag: peak, mean of the last fifth, slope"


@dataclass(frozen=True)
class Verdict:
    memory: dict[str, MemoryTrend | None]
    lag: dict[str, LagTrend | None]
    cores: dict[str, float]  # mean CPU cores each process used
    notes: list[str]  # the verdicts in words, then what else the reader should know

    def tables(self) -> dict[str, list[list[str]]]:
        """Title -> rows, the first row the header."""
        memory = [["process", "first MiB", "last MiB", "growth", "MiB/h", "CPU cores", "memory"]]
        for n, m in self.memory.items():
            if m is not None:
                cells = f"{m.first_mib:,.0f} {m.last_mib:,.0f} {m.growth_pct:+.1f}% "
                cells += f"{m.slope_mib_per_h:+,.1f} {self.cores.get(n, 0):.2f}"
                memory.append([n, *cells.split(), "flat" if m.flat else "growing"])
        lag = [["service:topic", "peak", "last fifth", "per minute", "lag"]]
        for n, g in self.lag.items():
            if g is not None:
                cells = f"{g.peak:,} {g.last_mean:,.0f} {g.slope_per_min:+,.0f}"
                lag.append([n, *cells.split(), "bounded" if g.bounded else "growing"])
        return {MEMORY_TITLE: memory, LAG_TITLE: lag}


def judge(
    samples: list[Sample], warmup_s: float, floor: float, notes: list[str], until_s: float
) -> Verdict:
    """The verdicts on the samples taken while the stream ran (``until_s``), not its drain."""
    samples = [s for s in samples if s.t <= until_s]
    memory = {
        n: memory_trend(*series(samples, "rss_mib", n), warmup_s) for n in names(samples, "rss_mib")
    }
    lags = {
        n: lag_trend(*series(samples, "lag", n), warmup_s, floor) for n in names(samples, "lag")
    }
    cores = {}
    for n in names(samples, "cpu_s"):
        t, cpu = series(samples, "cpu_s", n)
        cores[n] = (cpu[-1] - cpu[0]) / (t[-1] - t[0]) if t[-1] > t[0] else 0.0
    grows = ", ".join(
        f"{n} ({m.growth_pct:+.1f}%, {m.slope_mib_per_h:+,.0f} MiB/h)"
        for n, m in memory.items()
        if m and not m.flat
    )
    behind = ", ".join(n for n, g in lags.items() if g and not g.bounded)
    said = [
        f"memory grows in {grows}"
        if grows
        else f"memory stays flat in every process (growth under {MEMORY_TOLERANCE_PCT:g}%)",
        f"lag keeps growing for {behind}" if behind else "every consumer group keeps up",
    ]
    return Verdict(memory, lags, cores, said + notes)


PANELS = (  # (Sample field, y label, title)
    ("rss_mib", "RSS with children (MiB)", "memory of every process"),
    ("lag", "messages", "consumer lag of the services' groups"),
)


def plot(samples: list[Sample], warmup_s: float, end_s: float, path: Path) -> None:
    figure, axes = plt.subplots(2, 1, figsize=(10, 7), sharex=True)
    for ax, (field, ylabel, title) in zip(axes, PANELS, strict=True):
        for n in names(samples, field):
            t, v = series(samples, field, n)
            ax.plot(np.array(t) / 60, v, label=n, marker=".")
        ax.axvspan(0, warmup_s / 60, color="0.92", label="warm-up")
        ax.axvline(end_s / 60, color="0.5", linestyle="--", label="the stream ends")
        ax.set(ylabel=ylabel, title=title)
        ax.legend(fontsize="small", loc="upper left")
    axes[1].set(xlabel="minutes since the stream started")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


HTML = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>LoanStream soak</title>
<style>body{font:14px/1.45 system-ui,sans-serif;margin:2em auto;max-width:1000px;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:.2em .6em}
td{text-align:right}td:first-child{text-align:left}img{max-width:100%}</style></head><body>
<h1>Soak: {{ minutes }} min at {{ rate }} applications/s ({{ scenario }})</h1>
<p><code>{{ command }}</code></p>
<ul>{% for line in notes %}<li>{{ line }}</li>{% endfor %}</ul>
{% for title, table in tables.items() %}<table><caption>{{ title }}</caption>
<tr>{% for h in table[0] %}<th>{{ h }}</th>{% endfor %}</tr>
{% for row in table[1:] %}<tr>{% for c in row %}<td>{{ c }}</td>{% endfor %}</tr>{% endfor %}
</table>{% endfor %}
<img alt="memory and lag over time" src="data:image/png;base64,{{ png }}">
</body></html>
"""


def report(samples: list[Sample], v: Verdict, args: argparse.Namespace, command: str) -> None:
    tables = v.tables()
    for title, table in tables.items():
        shown = Table(*table[0], title=title)
        for row in table[1:]:
            shown.add_row(*row)
        console.print(shown)
    for line in v.notes:
        console.print(f"- {line}")
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    settings = {k: str(x) if isinstance(x, Path) else x for k, x in vars(args).items()}
    document = {"command": command, "settings": settings, "verdict": v, "samples": samples}
    (out / "soak.json").write_bytes(orjson.dumps(document, option=orjson.OPT_INDENT_2))
    plot(samples, args.warmup_s, args.minutes * 60, out / "soak.png")
    png = base64.b64encode((out / "soak.png").read_bytes()).decode()
    page = jinja2.Template(HTML, autoescape=True, undefined=jinja2.StrictUndefined).render(
        minutes=f"{args.minutes:g}",
        rate=f"{args.rate:,.0f}",
        scenario=args.scenario,
        command=command,
        notes=v.notes,
        tables=tables,
        png=png,
    )
    (out / "soak.html").write_text(page)
    console.print(f"wrote {out / 'soak.json'}, {out / 'soak.png'} and {out / 'soak.html'}")


def ttl_wall_s(rate: float) -> float:
    """Wall seconds a prediction waits for its label before the monitor gives up on it."""
    return MonitorSettings().label_ttl_days * 86_400 / (rate * INTERVAL_S)


def ttl_note(rate: float, unlabelled: float, warmup_s: float) -> list[str]:
    """Why the monitor's memory may rise past the warm-up: unlabelled predictions wait a TTL."""
    days = MonitorSettings().label_ttl_days
    wall_s = ttl_wall_s(rate)
    if wall_s <= warmup_s or not unlabelled:
        return []
    return [
        f"the monitor keeps a prediction waiting for its label {days:g} event days "
        f"({wall_s / 60:.1f} min at this rate): the {unlabelled:.0%} that never get one pile up "
        "in its join table that long"
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--rate", type=float, default=1000.0, help="applications per second")
    parser.add_argument("--every", type=float, default=10.0, help="seconds between samples")
    parser.add_argument("--out", type=Path, default=Path("out/soak"))
    parser.add_argument("--scenario", default="stable")
    parser.add_argument("--label-delay-s", type=float, default=5.0, help="median, wall clock")
    parser.add_argument("--unlabelled-fraction", type=float, default=0.1)
    parser.add_argument(
        "--warmup-s",
        type=float,
        help="default: 10%% of the run (>= 2 min or 1/4), or until the monitor's join table is "
        "full (its label TTL) if that comes in the first half",
    )
    parser.add_argument("--candidates", default="logistic", help="of the first champion")
    args = parser.parse_args()
    duration = args.minutes * 60
    if args.warmup_s is None:  # a short trial keeps three quarters of its samples
        args.warmup_s = max(0.1 * duration, min(120.0, 0.25 * duration))
        # until the monitor's join table is full: its first unlabelled predictions expire
        filled = ttl_wall_s(args.rate) + 60
        if filled < duration / 2:
            args.warmup_s = max(args.warmup_s, filled)
    command = shlex.join([".venv/bin/python", "-m", "bench.soak", *sys.argv[1:]])
    stop_children_on_sigterm()
    samples, stopped = run(args)
    notes = [f"the run stopped early: {stopped}"] if stopped else []
    notes += ttl_note(args.rate, args.unlabelled_fraction, args.warmup_s)
    if len(samples) < 2:
        raise SystemExit(f"too few samples to judge ({len(samples)}); {'; '.join(notes)}")
    verdict = judge(samples, args.warmup_s, LAG_FLOOR_S * args.rate, notes, duration)
    report(samples, verdict, args, command)
    if stopped:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
