"""Local broker cold start (jars cached) and a 10k-application round trip through the helpers,
beside a plain confluent-kafka produce/consume loop in the same run.

    .venv/bin/python -m bench.broker [--starts 3] [--messages 10000] [--out out/bench-broker.json]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from confluent_kafka import Consumer, Producer
from rich.console import Console
from rich.progress import track
from rich.table import Table

from loanstream.config import BrokerSettings, KafkaSettings
from loanstream.kafka.broker import LocalBroker, free_port, kafka_version
from loanstream.kafka.clients import CommittingConsumer, IdempotentProducer
from loanstream.spec import load_spec
from loanstream.topics import APPLICATIONS, create_topics
from tests.helpers import application_json

console = Console()


def cold_starts(n: int, jars: Path) -> list[float]:
    seconds = []
    for _ in track(range(n), description="cold starts"):
        with tempfile.TemporaryDirectory() as data:
            broker = LocalBroker(
                BrokerSettings(port=free_port(), data_dir=Path(data), jars_dir=jars)
            )
            began = time.perf_counter()
            broker.start()
            seconds.append(time.perf_counter() - began)
            broker.stop()
    return seconds


def helpers_round_trip(kafka: KafkaSettings, payloads: list[bytes]) -> float:
    topic = kafka.topic(APPLICATIONS)
    began = time.perf_counter()
    with IdempotentProducer(kafka) as producer:
        for i, value in enumerate(payloads):
            producer.produce(topic, f"app-{i:07d}".encode(), value)
    seen = 0
    with CommittingConsumer(kafka, f"bench-{uuid.uuid4().hex}", [topic]) as consumer:
        for batch in consumer.batches(max_messages=5000, timeout=0.5):
            seen += len(batch)
            if seen >= len(payloads):
                consumer.mark_processed(batch)
                break
    return time.perf_counter() - began


def plain_round_trip(kafka: KafkaSettings, payloads: list[bytes]) -> float:
    topic = kafka.topic(APPLICATIONS)
    began = time.perf_counter()
    producer = Producer({"bootstrap.servers": kafka.bootstrap_servers, "linger.ms": 5})
    for i, value in enumerate(payloads):
        while True:
            try:
                producer.produce(topic, value, f"app-{i:07d}".encode())
                break
            except BufferError:
                producer.poll(0.05)
    producer.flush()
    consumer = Consumer(
        {
            "bootstrap.servers": kafka.bootstrap_servers,
            "group.id": f"bench-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
        }
    )
    consumer.subscribe([topic])
    seen = 0
    while seen < len(payloads):
        seen += len([m for m in consumer.consume(5000, 0.5) if m.error() is None])
    consumer.close()
    return time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--starts", type=int, default=3)
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("out/bench-broker.json"))
    args = parser.parse_args()
    defaults = BrokerSettings()
    jars = defaults.jars_dir or defaults.data_dir / "kafka" / kafka_version()
    LocalBroker(BrokerSettings(jars_dir=jars)).ensure_jars()

    starts = cold_starts(args.starts, jars)
    spec, rng = load_spec(), random.Random(1)
    payloads = [application_json(spec, i, rng) for i in range(args.messages)]
    results: dict[str, list[float]] = {"helpers": [], "plain": []}
    with tempfile.TemporaryDirectory() as data:
        broker = LocalBroker(BrokerSettings(port=free_port(), data_dir=Path(data), jars_dir=jars))
        info, _ = broker.start()
        try:
            runs: list[tuple[str, Callable[[KafkaSettings, list[bytes]], float]]] = [
                ("helpers", helpers_round_trip),
                ("plain", plain_round_trip),
            ]
            for repeat in track(range(args.repeats + 1), description="round trips"):
                for name, run in runs:  # interleaved, so machine noise hits both alike
                    kafka = KafkaSettings(
                        bootstrap_servers=info.bootstrap_servers,
                        topic_prefix=f"b{uuid.uuid4().hex[:8]}.",
                    )
                    create_topics(kafka)
                    seconds = run(kafka, payloads)
                    if repeat:  # the first round warms the group coordinator up
                        results[name].append(seconds)
        finally:
            broker.stop()

    table = Table(title=f"Kafka {kafka_version()} local broker, {args.messages} applications")
    for column in ("measure", "median s", "min s", "msgs/s (median)"):
        table.add_column(column)
    table.add_row(
        "cold start (jars cached)", f"{statistics.median(starts):.2f}", f"{min(starts):.2f}", ""
    )
    for name, seconds in results.items():
        label = "round trip, LoanStream helpers" if name == "helpers" else "round trip, plain loop"
        median = statistics.median(seconds)
        table.add_row(
            label, f"{median:.3f}", f"{min(seconds):.3f}", f"{args.messages / median:,.0f}"
        )
    console.print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "kafka": kafka_version(),
                "messages": args.messages,
                "cold_start_s": starts,
                "round_trip_s": results,
            },
            indent=2,
        )
    )
    console.print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
