"""Replay throughput (rows/s into Kafka: read, order check, validation, JSON, produce) beside a
plain confluent-kafka loop producing the same messages, pre-built, in the same run.

    .venv/bin/python -m bench.replay [--rows 200000] [--repeats 3] [--out out/bench-replay]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from confluent_kafka import Producer
from prometheus_client import CollectorRegistry
from rich.console import Console
from rich.progress import track
from rich.table import Table

from loanstream.config import BrokerSettings, KafkaSettings
from loanstream.frames import application_messages
from loanstream.kafka.broker import LocalBroker, free_port, kafka_version
from loanstream.kafka.clients import PRODUCER_DEFAULTS
from loanstream.spec import load_spec
from loanstream.topics import APPLICATIONS, OUTCOMES, create_topics
from producer.emitter import BULK_PRODUCER, Pacing, outcome_messages
from producer.generator import Generator
from producer.live import write_history
from producer.metrics import ProducerMetrics
from producer.outcomes import OUTCOME_TIME
from producer.replay import ReplayOptions, replay
from producer.scenarios import load_scenario
from producer.world import load_world

console = Console()


def plain_loop(kafka: KafkaSettings, apps: list, outcomes: list) -> float:  # type: ignore[type-arg]
    """Seconds to produce the pre-built messages and flush, with replay's producer settings."""
    producer = Producer({**kafka.confluent(), **PRODUCER_DEFAULTS, **BULK_PRODUCER})
    began = time.perf_counter()
    for topic, messages in ((kafka.topic(APPLICATIONS), apps), (kafka.topic(OUTCOMES), outcomes)):
        for key, value, ts in messages:
            while True:
                try:
                    producer.produce(topic, value, key, timestamp=ts)
                    break
                except BufferError:
                    producer.poll(0.05)
    producer.flush()
    return time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("out/bench-replay"))
    args = parser.parse_args()
    spec = load_spec()
    generator = Generator(spec, load_world(None, spec), load_scenario("stable"), seed=1)
    defaults = BrokerSettings()
    jars = defaults.jars_dir or defaults.data_dir / "kafka" / kafka_version()
    results: dict[str, list[float]] = {"replay": [], "plain": []}
    with tempfile.TemporaryDirectory() as tmp:
        history = write_history(generator, args.rows, Path(tmp) / "history.parquet")
        rows = generator.rows(0, args.rows)
        apps = application_messages(rows, spec)
        outcomes, _ = outcome_messages(rows, spec, OUTCOME_TIME)
        broker = LocalBroker(
            BrokerSettings(port=free_port(), data_dir=Path(tmp) / "kafka", jars_dir=jars)
        )
        info, _ = broker.start()
        try:
            for repeat in track(range(args.repeats + 1), description="replay vs plain loop"):
                for name in ("replay", "plain"):  # interleaved: machine noise hits both alike
                    kafka = KafkaSettings(
                        bootstrap_servers=info.bootstrap_servers,
                        topic_prefix=f"b{uuid.uuid4().hex[:8]}.",
                    )
                    create_topics(kafka)
                    if name == "plain":
                        seconds = plain_loop(kafka, apps, outcomes)
                    else:
                        began = time.perf_counter()
                        replay(
                            history,
                            spec,
                            kafka,
                            ReplayOptions(pacing=Pacing()),
                            ProducerMetrics(CollectorRegistry()),
                            Path(tmp) / "rej.csv",
                        )
                        seconds = time.perf_counter() - began
                    if repeat:  # the first round warms the broker up
                        results[name].append(seconds)
        finally:
            broker.stop()

    table = Table(
        title=f"{args.rows:,} rows ({len(outcomes):,} outcomes) into Kafka "
        f"{kafka_version()}, median of {args.repeats}"
    )
    for column in ("path", "median s", "rows/s", "messages/s"):
        table.add_column(column)
    rates = {}
    for name, seconds in results.items():
        median = statistics.median(seconds)
        rates[name] = args.rows / median
        label = (
            "loanstream replay (read+check+JSON+produce)"
            if name == "replay"
            else "plain confluent-kafka loop (pre-built messages)"
        )
        table.add_row(
            label,
            f"{median:.2f}",
            f"{rates[name]:,.0f}",
            f"{(args.rows + len(outcomes)) / median:,.0f}",
        )
    console.print(table)
    console.print(f"replay reaches {rates['replay'] / rates['plain']:.2f}x the plain loop")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    Path(f"{args.out}.json").write_text(
        json.dumps(
            {"rows": args.rows, "outcomes": len(outcomes), "seconds": results, "rows_per_s": rates},
            indent=2,
        )
    )
    figure, axis = plt.subplots(figsize=(6, 3))
    axis.barh(["plain loop", "replay"], [rates["plain"], rates["replay"]], color=["grey", "C0"])
    axis.set_xlabel("rows per second (higher is better)")
    axis.set_title(f"Replay of {args.rows:,} rows")
    figure.tight_layout()
    figure.savefig(f"{args.out}.png", dpi=100)
    console.print(f"wrote {args.out}.json and {args.out}.png")


if __name__ == "__main__":
    main()
