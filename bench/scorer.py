"""The Faust scorer beside a plain confluent-kafka consume -> score -> produce loop, with the same
model (calibrated hist-gradient-boosting) and batch size, in the same run: throughput at full
speed, and end-to-end latency (event time -> prediction read back) at fixed rates, each with and
without reason codes. Three more rows run the same Faust scorer with Faust's own parts, one more
at each step, to show what each of ours gains: ``faust-fetch`` fetches as Faust does (1 byte or
1,500 ms, ``LOANSTREAM_SCORER_FETCH_MIN_BYTES=1``, see loanstream.delivery), ``faust-take`` also
takes its batches with Faust's ``noack_take`` (``LOANSTREAM_SCORER_BULK_TAKE=false``, see
loanstream.bulk), and ``faust-stock`` also hands fetched messages over Faust's way
(``LOANSTREAM_KAFKA_FAUST_PROMPT_DELIVERY=false``).

    .venv/bin/python -m bench.scorer [--messages 50000] [--rates 500,2000,10000] [--seconds 8]

Prints a table, writes out/bench-scorer.json and out/bench-scorer.png.

``--shadow`` measures instead what shadow scoring costs: the Faust scorer's throughput at full
speed (reasons on) with the champion alone (``LOANSTREAM_SCORER_SHADOW=false``) and with a
challenger in shadow (a second calibrated HGB, the registry's ``challenger``), alternating
A B A B on the same applications, and prints both and their ratio
(out/bench-scorer-shadow.json).

    .venv/bin/python -m bench.scorer --shadow [--messages 50000] [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import orjson
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
from rich.console import Console
from rich.table import Table

from loanstream.config import BrokerSettings, KafkaSettings
from loanstream.frames import application_messages
from loanstream.kafka.broker import LocalBroker, free_port, kafka_version
from loanstream.spec import load_spec
from loanstream.topics import APPLICATIONS, PREDICTIONS, create_topics
from loanstream.validation import ApplicationValidator
from producer.generator import Generator
from producer.rate import TokenBucket
from producer.scenarios import load_scenario
from producer.world import load_world
from scorer.core import score_batch, typical_values
from scorer.watcher import load_compiled
from tests.trainer_data import history
from trainer.data import labelled_frame
from trainer.pipeline import options_from, publish, training_round
from trainer.registry import Registry
from trainer.settings import TrainerSettings

console = Console()
BATCH = 500
WARM_UP = 200  # applications scored before a latency run is timed
KINDS = ("plain", "faust", "faust-fetch", "faust-take", "faust-stock")
LATENCY_KINDS = KINDS[:4]


def payloads(n: int) -> list[bytes]:
    spec = load_spec()
    rows = Generator(spec, load_world(None, spec), load_scenario("stable"), seed=3).rows(0, n)
    return [value for _, value, _ in application_messages(rows, spec)]


def stamped(value: bytes, index: int) -> bytes:
    """The application with a fresh id (``b<index>``) and event time = now, for latency."""
    document = orjson.loads(value)
    document["application_id"] = f"b{index}"
    document["event_time"] = datetime.now(UTC).isoformat()
    return orjson.dumps(document)


def send(kafka: KafkaSettings, values: list[bytes], rate: float | None) -> None:
    producer = Producer({"bootstrap.servers": kafka.bootstrap_servers, "linger.ms": 2})
    bucket = TokenBucket(rate) if rate else None
    i = 0
    while i < len(values):
        n = bucket.take(len(values) - i) if bucket else len(values) - i
        for value in values[i : i + n]:
            while True:
                try:
                    producer.produce(
                        kafka.topic(APPLICATIONS),
                        stamped(value, i) if rate else value,
                        str(i).encode(),
                    )
                    break
                except BufferError:
                    producer.poll(0.01)
            i += 1
        producer.poll(0)
    producer.flush()


def collect(
    kafka: KafkaSettings, expected: int, timeout_s: float, stamped_only: bool = False
) -> tuple[list[float], float]:
    """(latencies in s, seconds from first to last prediction) read from loan.predictions;
    with ``stamped_only``, of the applications ``stamped`` made alone."""
    consumer = Consumer(
        {
            "bootstrap.servers": kafka.bootstrap_servers,
            "group.id": uuid.uuid4().hex,
            "auto.offset.reset": "earliest",
        }
    )
    topic = kafka.topic(PREDICTIONS)
    partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])  # no join
    latencies, first, last, seen = [], 0.0, 0.0, 0
    deadline = time.monotonic() + timeout_s
    while seen < expected and time.monotonic() < deadline:
        for message in consumer.consume(1000, 0.005):  # short: the wait would count as latency
            if message.error():
                continue
            now = time.time()
            prediction = orjson.loads(message.value())
            if stamped_only and not prediction["application_id"].startswith("b"):
                continue
            first, last = first or now, now
            seen += 1
            latencies.append(now - datetime.fromisoformat(prediction["event_time"]).timestamp())
    consumer.close()
    return latencies, last - first


def plain_loop(kafka: KafkaSettings, tracking_uri: str, reasons: bool, stop_file: str) -> None:
    """The baseline: one confluent-kafka consumer and producer around the same score_batch."""
    model = load_compiled(  # the same load path as the Faust scorer's
        "models:/loan-repayment@champion", tracking_uri, None, "loan-repayment", "bench"
    )
    typical = typical_values(model.reference)
    validator = ApplicationValidator(load_spec())
    consumer = Consumer(
        {
            "bootstrap.servers": kafka.bootstrap_servers,
            "group.id": "plain",
            "auto.offset.reset": "earliest",
            "enable.auto.offset.store": False,
        }
    )
    producer = Producer(
        {
            "bootstrap.servers": kafka.bootstrap_servers,
            "linger.ms": 2,
            "enable.idempotence": True,
            "acks": "all",
        }
    )
    consumer.subscribe([kafka.topic(APPLICATIONS)])
    while not os.path.exists(stop_file):
        messages = [m for m in consumer.consume(BATCH, 0.02) if m.error() is None]
        if not messages:
            continue
        now = datetime.now(UTC)
        apps = [validator.parse(m.value()) for m in messages]
        for p in score_batch(model, apps, now, now, reasons, typical):
            producer.produce(kafka.topic(PREDICTIONS), p.to_json(), p.application_id.encode())
        producer.flush()
        for m in messages:
            consumer.store_offsets(message=m)
    consumer.close()


class Scorer:
    """Start either implementation in its own process."""

    def __init__(
        self,
        kind: str,
        kafka: KafkaSettings,
        tracking_uri: str,
        reasons: bool,
        tmp: Path,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        self.kind, self.stop_file = kind, str(tmp / f"stop-{uuid.uuid4().hex}")
        if kind.startswith("faust"):
            env = {
                **os.environ,
                "LOANSTREAM_KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
                "LOANSTREAM_KAFKA_TOPIC_PREFIX": kafka.topic_prefix,
                "LOANSTREAM_SCORER_TRACKING_URI": tracking_uri,
                "LOANSTREAM_SCORER_REASONS": str(reasons).lower(),
                "LOANSTREAM_SCORER_BATCH_MAX": str(BATCH),
                "LOANSTREAM_SCORER_APP_ID": f"bench-{uuid.uuid4().hex[:8]}",
                "LOANSTREAM_SCORER_BULK_TAKE": str(kind in ("faust", "faust-fetch")).lower(),
                "LOANSTREAM_KAFKA_FAUST_PROMPT_DELIVERY": str(kind != "faust-stock").lower(),
                **(extra_env or {}),
            }
            if kind != "faust":  # Faust's own fetch sizes
                env |= {
                    "LOANSTREAM_SCORER_FETCH_MIN_BYTES": "1",
                    "LOANSTREAM_SCORER_FETCH_MAX_WAIT_MS": "1500",
                }
            self.process: Any = subprocess.Popen(
                [sys.executable, "-m", "loanstream.cli", "scorer", "--no-api"],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        else:
            context = multiprocessing.get_context("spawn")
            self.process = context.Process(
                target=plain_loop, args=(kafka, tracking_uri, reasons, self.stop_file)
            )
            self.process.start()

    def stop(self) -> None:
        Path(self.stop_file).touch()
        if self.kind.startswith("faust"):
            self.process.terminate()
            self.process.wait(30)
        else:
            self.process.join(30)


def run(
    kind: str,
    reasons: bool,
    rate: float | None,
    values: list[bytes],
    broker: str,
    tracking_uri: str,
    tmp: Path,
    extra_env: dict[str, str] | None = None,
) -> dict[str, float]:
    kafka = KafkaSettings(
        bootstrap_servers=broker, topic_prefix=f"b{uuid.uuid4().hex[:8]}.", partitions=3
    )
    create_topics(kafka)
    if kind.startswith("faust"):
        publish(kafka, Registry(TrainerSettings(tracking_uri=tracking_uri)).champion().update())  # type: ignore[union-attr]
    scorer = Scorer(kind, kafka, tracking_uri, reasons, tmp, extra_env)
    try:
        if rate is None:  # throughput: a backlog, drained at full speed
            send(kafka, values, None)
            latencies, seconds = collect(kafka, len(values), 300)
            return {
                "throughput": len(values) / seconds if seconds else 0.0,
                "received": float(len(latencies)),
            }
        # Timing starts once the scorer answers: a fixed sleep timed the Faust scorer's start
        # (model load, group join) as well, when it came later than the sleep.
        send(kafka, values[:WARM_UP], None)
        if len(collect(kafka, WARM_UP, 180)[0]) < WARM_UP:
            raise RuntimeError(f"the {kind} scorer did not answer its warm-up in 180 s")
        collected: list[list[float]] = []
        reader = threading.Thread(  # reads while the load runs: latency is read time - event time
            target=lambda: collected.append(collect(kafka, len(values), 120, True)[0])
        )
        reader.start()
        send(kafka, values, rate)
        reader.join()
        ms = np.array(collected[0]) * 1000
        return {
            "p50_ms": float(np.percentile(ms, 50)),
            "p95_ms": float(np.percentile(ms, 95)),
            "p99_ms": float(np.percentile(ms, 99)),
            "received": float(len(ms)),
        }
    finally:
        scorer.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=50_000)
    parser.add_argument("--rates", default="500,2000,10000")
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--out", type=Path, default=Path("out/bench-scorer"))
    parser.add_argument("--shadow", action="store_true", help="one model vs champion + challenger")
    parser.add_argument("--repeats", type=int, default=2, help="A B pairs with --shadow")
    args = parser.parse_args()
    if args.shadow:
        shadow_cost(args.messages, args.repeats, Path(f"{args.out}-shadow.json"))
        return
    rates = [float(r) for r in args.rates.split(",")]
    defaults = BrokerSettings()
    jars = defaults.jars_dir or defaults.data_dir / "kafka" / kafka_version()
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        console.print("training the calibrated HGB model for the benchmark...")
        settings = TrainerSettings(data_dir=tmp, candidates=("hgb",), search_candidates=2)
        frame, spec = history(30_000, seed=6)
        training_round(
            labelled_frame(frame, spec)[0],
            spec,
            settings,
            Registry(settings),
            options_from(settings),
            None,
        )
        tracking_uri = settings.resolved_tracking_uri()
        broker = LocalBroker(
            BrokerSettings(port=free_port(), data_dir=tmp / "kafka", jars_dir=jars)
        )
        info, _ = broker.start()
        values = payloads(max(args.messages, int(max(rates) * args.seconds)))
        try:
            plan = [(kind, reasons, None) for reasons in (False, True) for kind in KINDS]
            plan += [
                (kind, reasons, rate)
                for rate in rates
                for reasons in (False, True)
                for kind in LATENCY_KINDS
            ]
            for i, (kind, reasons, rate) in enumerate(plan, 1):
                count = args.messages if rate is None else int(rate * args.seconds)
                console.print(
                    f"[{i}/{len(plan)}] {kind}, reasons {'on' if reasons else 'off'}, "
                    f"{'full speed' if rate is None else f'{rate:,.0f}/s'}"
                )
                measured = run(
                    kind, reasons, rate, values[:count], info.bootstrap_servers, tracking_uri, tmp
                )
                results.append({"kind": kind, "reasons": reasons, "rate": rate, **measured})
        finally:
            broker.stop()
    report(results, args.out)


def shadow_cost(messages: int, repeats: int, out: Path) -> None:
    """The Faust scorer's full-speed throughput with one model and with a challenger in shadow,
    alternating, on the same applications and broker."""
    defaults = BrokerSettings()
    jars = defaults.jars_dir or defaults.data_dir / "kafka" / kafka_version()
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        console.print("training two calibrated HGB models (champion and challenger)...")
        settings = TrainerSettings(
            data_dir=tmp, candidates=("hgb",), search_candidates=2, promotion_margin=1.0
        )
        registry = Registry(settings)
        for seed in (6, 7):
            frame, spec = history(30_000, seed=seed)
            training_round(
                labelled_frame(frame, spec)[0],
                spec,
                settings,
                registry,
                options_from(settings, seed=seed),
                None,
            )
        registry.shadow("2")  # v1 champion (the margin of 1.0 kept it), v2 in shadow
        tracking_uri = settings.resolved_tracking_uri()
        broker = LocalBroker(
            BrokerSettings(port=free_port(), data_dir=tmp / "kafka", jars_dir=jars)
        )
        info, _ = broker.start()
        values = payloads(messages)
        try:
            for i in range(repeats):
                for shadow in (False, True):
                    console.print(
                        f"[{i + 1}/{repeats}] {'champion + challenger' if shadow else 'one model'}"
                    )
                    measured = run(
                        "faust",
                        True,
                        None,
                        values,
                        info.bootstrap_servers,
                        tracking_uri,
                        tmp,
                        {"LOANSTREAM_SCORER_SHADOW": str(shadow).lower()},
                    )
                    results.append({"shadow": shadow, "round": i + 1, **measured})
        finally:
            broker.stop()
    table = Table(title=f"Shadow scoring's cost (Faust scorer, HGB, reasons on, {messages:,})")
    for column in ("round", "models", "apps/s"):
        table.add_column(column)
    for r in results:
        table.add_row(
            str(r["round"]),
            "champion + challenger" if r["shadow"] else "one model",
            f"{r['throughput']:,.0f}",
        )
    console.print(table)
    one = float(np.mean([r["throughput"] for r in results if not r["shadow"]]))
    two = float(np.mean([r["throughput"] for r in results if r["shadow"]]))
    console.print(
        f"one model {one:,.0f}/s, champion + challenger {two:,.0f}/s: shadow scoring keeps "
        f"{two / one:.2f}x of the throughput"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    console.print(f"wrote {out}")


def report(results: list[dict[str, Any]], out: Path) -> None:
    table = Table(title="Faust scorer vs plain confluent-kafka loop (calibrated HGB, batch 500)")
    for column in ("scorer", "reasons", "load", "apps/s", "p50 ms", "p95 ms", "p99 ms"):
        table.add_column(column)
    for r in results:
        table.add_row(
            r["kind"],
            "on" if r["reasons"] else "off",
            "full speed" if r["rate"] is None else f"{r['rate']:,.0f}/s",
            f"{r.get('throughput', 0):,.0f}" if r["rate"] is None else "",
            *(f"{r[k]:.1f}" if k in r else "" for k in ("p50_ms", "p95_ms", "p99_ms")),
        )
    console.print(table)
    for reasons in (False, True):
        full = {
            r["kind"]: r["throughput"]
            for r in results
            if r["rate"] is None and r["reasons"] == reasons
        }
        console.print(
            f"reasons {'on' if reasons else 'off'}: Faust reaches "
            f"{full['faust'] / full['plain']:.2f}x the plain loop's throughput "
            f"({full['faust-fetch'] / full['plain']:.2f}x with Faust's fetch sizes, "
            f"{full['faust-take'] / full['plain']:.2f}x with its noack_take as well, "
            f"{full['faust-stock'] / full['plain']:.2f}x with its hand-over as well)"
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    Path(f"{out}.json").write_text(json.dumps(results, indent=2))
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    labels = [
        f"{r['kind']}\nreasons {'on' if r['reasons'] else 'off'}"
        for r in results
        if r["rate"] is None
    ]
    left.bar(labels, [r["throughput"] for r in results if r["rate"] is None])
    left.set(title="throughput at full speed", ylabel="applications / s")
    for kind in LATENCY_KINDS:
        for reasons in (False, True):
            points = [
                (r["rate"], r["p99_ms"])
                for r in results
                if r["rate"] and r["kind"] == kind and r["reasons"] == reasons
            ]
            right.plot(
                *zip(*points, strict=True),
                marker="o",
                label=f"{kind}, reasons {'on' if reasons else 'off'}",
            )
    right.set(
        title="p99 end-to-end latency",
        xlabel="applications / s",
        ylabel="ms",
        xscale="log",
        yscale="log",
    )
    right.legend()
    figure.tight_layout()
    figure.savefig(f"{out}.png", dpi=100)
    console.print(f"wrote {out}.json and {out}.png")


if __name__ == "__main__":
    main()
