"""Event-time backtest speed: rows/s of the engine through scoring, join and detection (training
reported apart), beside each part of it timed alone on the same history in the same process
(batched scoring; the monitor core, join and pipeline), and the peak RSS of the whole backtest.

Each size runs in a fresh process (so its peak RSS is its own), on a generated history with an
abrupt concept drift half-way and labels ~7 days late:

    .venv/bin/python -m bench.backtest [--rows 200000 1000000] [--out out/bench-backtest]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pandas as pd
from rich.console import Console
from rich.table import Table

console = Console()
BATCH = 1000


def make_history(rows: int, path: Path) -> Path:
    from loanstream.spec import load_spec
    from producer.generator import Generator
    from producer.live import write_history
    from producer.manifest import manifest, write_manifest
    from producer.outcomes import LabelPolicy
    from producer.scenarios import Drift, Scenario
    from producer.world import load_world

    spec = load_spec()
    drift = Drift(
        kind="concept",
        start=rows // 2,
        categories={"loan_purpose": {"debt_consolidation": -2.5}},
        coefficients={"credit_score": -0.5},
    )
    generator = Generator(
        spec,
        load_world(None, spec),
        Scenario(name="bench", drifts=[drift]),
        seed=7,
        labels=LabelPolicy(median_days=7, sigma=0.5, unlabelled_fraction=0.1),
    )
    write_history(generator, rows, path)
    write_manifest(path.with_name(path.name + ".manifest.json"), manifest(generator, rows))
    return path


def child(history_path: Path, workdir: Path) -> None:
    """One backtest in this process; prints its figures as JSON on the last line."""
    import logging

    from loanstream.spec import load_spec
    from loop.backtest import BacktestOptions, run_backtest

    logging.disable(logging.WARNING)
    history = pd.read_parquet(history_path)
    truth = history_path.with_name(history_path.name + ".manifest.json")
    manifest = orjson.loads(truth.read_bytes())
    began = time.perf_counter()
    last = [0.0]

    def progress(done: int, total: int, ms: int) -> None:
        if time.perf_counter() - last[0] > 10:
            last[0] = time.perf_counter()
            reached = datetime.fromtimestamp(ms / 1000, UTC).date()
            print(f"  {done:,}/{total:,} applications, event time {reached}", flush=True)

    options = BacktestOptions(candidates=("logistic", "hgb"))
    result = run_backtest(history, load_spec(), options, manifest, workdir, progress)
    total_s = time.perf_counter() - began
    t = result.timings
    loop_s = t["engine"] - t["training_and_loading"] - t["calibration"]
    replayed = result.summary()["rows"]["replayed"]
    figures = {
        "rows": len(history),
        "replayed": replayed,
        "engine_rows_per_s": replayed / loop_s,
        "engine_s": t["engine"],
        "training_and_loading_s": t["training_and_loading"],
        "calibration_s": t["calibration"],
        "backtest_total_s": total_s,
        "retrains": len(result.summary()["retraining"]["attempts"]),
        "peak_rss_mib_backtest": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    split = parts(history_path, workdir)
    monitor = ("join: predictions", "pipeline: predictions", "join: outcomes", "pipeline: labels")
    figures["scoring_rows_per_s"] = split["rows"] / split["scoring"]
    figures["monitor_core_rows_per_s"] = split["rows"] / sum(split[k] for k in monitor)
    figures["parts_s"] = split
    print(json.dumps(figures))


def parts(history_path: Path, workdir: Path) -> dict[str, float]:
    """Seconds per part of the engine's data path over the replayed rows, each timed alone in
    the engine's own order and batches: validation, scoring, the join, the pipelines."""
    from datetime import timedelta as td

    from loanstream.spec import load_spec
    from loop.engine import moment
    from loop.models import ModelStore
    from loop.timeline import LabelSource, build_timeline
    from monitor.join import Joiner
    from monitor.pipeline import DetectionPipeline
    from monitor.settings import MonitorSettings
    from scorer.core import score_batch, typical_values
    from trainer.settings import TrainerSettings

    spec = load_spec()
    timeline = build_timeline(pd.read_parquet(history_path), spec, 0.2, LabelSource())
    settings = TrainerSettings(tracking_uri=f"sqlite:///{workdir / 'mlflow.db'}", data_dir=workdir)
    model = ModelStore(settings, spec, workdir).load("1")
    typical = typical_values(model.reference)
    config = MonitorSettings(data_dir=workdir).pipeline()
    pipeline = DetectionPipeline(settings.model_name, "1", model.reference, spec, config)
    joiner = Joiner({}, {}, label_ttl=td(days=400), orphan_ttl=td(days=1), parsed_size=200_000)
    seconds: dict[str, float] = {}

    @contextmanager
    def timed(name: str) -> Iterator[None]:
        began = time.perf_counter()
        yield
        seconds[name] = seconds.get(name, 0.0) + time.perf_counter() - began

    n, at = len(timeline.app_ms), moment(int(timeline.app_ms[0]))
    for start in range(0, n, BATCH):
        with timed("validating applications"):
            apps = timeline.applications(start, min(start + BATCH, n), spec)
        with timed("scoring"):
            scored = score_batch(model, apps, at, at, False, typical)
        with timed("join: predictions"):
            for p in scored:
                joiner.on_prediction(p)
        with timed("pipeline: predictions"):
            pipeline.on_prediction_batch(scored)
    m = len(timeline.outcome_ms)
    for start in range(0, m, BATCH):
        with timed("building outcomes"):
            outcomes = timeline.outcomes(start, min(start + BATCH, m), spec)
        with timed("join: outcomes"):
            examples = [e for o in outcomes if (e := joiner.on_outcome(o, o.outcome_time))]
        with timed("pipeline: labels"):
            pipeline.on_labelled_batch(examples)
    return {**seconds, "rows": n}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, nargs="+", default=[200_000, 1_000_000])
    parser.add_argument("--out", type=Path, default=Path("out/bench-backtest"))
    parser.add_argument("--child", nargs=2, type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.rows:
            path = Path(tmp) / f"history-{n}.parquet"
            with console.status(f"generating {n:,} rows"):
                make_history(n, path)
            console.print(f"backtest of {n:,} rows in a fresh process ...")
            done = subprocess.run(
                [sys.executable, "-m", "bench.backtest", "--child", str(path), f"{tmp}/w{n}"],
                stdout=subprocess.PIPE,
                text=True,
                check=True,
            )
            lines = done.stdout.strip().splitlines()
            for line in lines[:-1]:
                console.print(line)
            rows.append(json.loads(lines[-1]))
    table = Table(title=f"Event-time backtest, {datetime.now(UTC):%Y-%m-%d}, this machine")
    columns = [
        ("rows", "rows", "{:,}"),
        ("engine_rows_per_s", "engine rows/s", "{:,.0f}"),
        ("scoring_rows_per_s", "scoring alone rows/s", "{:,.0f}"),
        ("monitor_core_rows_per_s", "monitor core alone rows/s", "{:,.0f}"),
        ("training_and_loading_s", "training+loading s", "{:.1f}"),
        ("calibration_s", "detector calibration s", "{:.1f}"),
        ("retrains", "retrains", "{}"),
        ("backtest_total_s", "backtest s", "{:.1f}"),
        ("peak_rss_mib_backtest", "peak RSS MiB", "{:,.0f}"),
    ]
    for _, title, _ in columns:
        table.add_column(title)
    for r in rows:
        table.add_row(*(fmt.format(r[key]) for key, _, fmt in columns))
    console.print(table)
    for r in rows:
        split = r["parts_s"]
        console.print(
            f"{r['rows']:,} rows, the engine's parts alone over {split['rows']:,} applications: "
            + ", ".join(f"{k} {v:.1f} s" for k, v in split.items() if k != "rows")
        )
    (args.out / "results.json").write_text(json.dumps(rows, indent=2) + "\n")
    plot(rows, args.out / "backtest_speed.png")
    console.print(f"wrote {args.out / 'results.json'} and {args.out / 'backtest_speed.png'}")


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = ["engine", "scoring alone", "monitor core alone"]
    keys = ["engine_rows_per_s", "scoring_rows_per_s", "monitor_core_rows_per_s"]
    fig, ax = plt.subplots(figsize=(8, 4))
    width = 0.8 / len(rows)
    for i, r in enumerate(rows):
        xs = [x + i * width for x in range(3)]
        ax.bar(xs, [r[k] for k in keys], width, label=f"{r['rows']:,} rows")
    ax.set_xticks([x + width * (len(rows) - 1) / 2 for x in range(3)], names)
    ax.set_ylabel("rows/s")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


__all__ = ["main"]

if __name__ == "__main__":
    main()
