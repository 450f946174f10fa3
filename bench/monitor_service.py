"""The monitor as a Faust service on a real broker, beside its own core on the same events.

    .venv/bin/python -m bench.monitor_service [--events 30000]

Fills loan.predictions and loan.outcomes of a private broker with ``events`` scored applications
and their outcomes (the model is registered in a private MLflow store, so the monitor watches it
with every detector), starts ``loanstream monitor`` and times how fast loan.labelled fills, from
its first record to the last. The baseline, in the same run: the service core
(``MonitorCore``: parse, join, detectors, metrics, JSON out) on the same bytes, in-process, with
no Kafka. The difference is what Faust and the broker round trips cost. The service runs twice,
on topics of its own each time: with Faust's own hand-over of fetched messages to the streams,
and with the prompt hand-over (loanstream.delivery). Prints a table, writes
out/bench-monitor-service.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, TopicPartition
from rich.console import Console
from rich.table import Table

from bench.monitor_speed import build_events, run_service, service_core
from loanstream.config import BrokerSettings, KafkaSettings
from loanstream.kafka.broker import LocalBroker, free_port
from loanstream.kafka.clients import IdempotentProducer
from loanstream.models import download_and_load
from loanstream.topics import LABELLED, OUTCOMES, PREDICTIONS, create_topics
from monitor.pipeline import DetectionPipeline
from tests.trainer_data import history
from trainer.data import labelled_frame
from trainer.pipeline import options_from, publish, training_round
from trainer.registry import Registry
from trainer.settings import TrainerSettings

console = Console()


def labelled_count(kafka: KafkaSettings) -> int:
    topic = kafka.topic(LABELLED)
    consumer = Consumer({**kafka.confluent(), "group.id": f"count-{uuid.uuid4().hex}"})
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        return sum(
            consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in partitions
        )
    finally:
        consumer.close()


def service_rate(kafka: KafkaSettings, env: dict[str, str], expected: int, log: Path) -> float:
    """Labelled records/s the monitor service writes, from its first record to the last."""
    command = [sys.executable, "-m", "loanstream.cli", "monitor", "--metrics-port"]
    with log.open("wb") as out:
        process = subprocess.Popen(
            [*command, str(free_port())], env={**os.environ, **env}, stdout=out, stderr=out
        )
    try:
        first: tuple[float, int] | None = None
        deadline = time.monotonic() + 900
        done = 0
        while done < expected and time.monotonic() < deadline:
            done = labelled_count(kafka)
            if done and first is None:
                first = (time.monotonic(), done)
            console.print(f"  labelled {done:,} of {expected:,}", end="\r")
            time.sleep(0.5)
        console.print()
        if first is None or done < expected:
            raise SystemExit(f"the monitor labelled {done:,} of {expected:,}; see {log}")
        return (done - first[1]) / (time.monotonic() - first[0])
    finally:
        process.terminate()
        process.wait(60)


def fill(kafka: KafkaSettings, events: Any, update: Any) -> None:
    """Topics of their own for one run: the model update, the predictions and the outcomes."""
    create_topics(kafka)
    publish(kafka, update)
    with (
        console.status("filling loan.predictions and loan.outcomes"),
        IdempotentProducer(kafka) as producer,
    ):
        for prediction, raw in zip(events.predictions, events.prediction_bytes, strict=True):
            producer.produce(kafka.topic(PREDICTIONS), prediction.application_id.encode(), raw)
        for outcome, raw in zip(events.outcomes, events.outcome_bytes, strict=True):
            producer.produce(kafka.topic(OUTCOMES), outcome.application_id.encode(), raw)


# (row name, LOANSTREAM_KAFKA_FAUST_PROMPT_DELIVERY): the service with each hand-over
SERVICES = (
    ("Faust service, Faust's own hand-over", "false"),
    ("Faust service, prompt hand-over (default)", "true"),
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=30_000)
    parser.add_argument("--out", type=Path, default=Path("out/bench-monitor-service.json"))
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-monitor-service-"))
    broker = LocalBroker(BrokerSettings(port=free_port(), data_dir=root / "kafka"))
    info, _ = broker.start()
    rates: dict[str, float] = {}
    try:
        settings = TrainerSettings(
            data_dir=root / "mlflow", candidates=("logistic",), search_candidates=2
        )
        frame, spec = history(8000, seed=4)
        with console.status("training and registering the model the monitor watches"):
            registry = Registry(settings)
            training_round(
                labelled_frame(frame, spec)[0],
                spec,
                settings,
                registry,
                options_from(settings),
                None,
            )
            update = registry.version("1").update()
            uri = settings.resolved_tracking_uri()
            model = download_and_load(update.model_uri, uri, update.sha256, "loan-repayment", "1")
        with console.status(f"scoring {args.events:,} applications"):
            events = build_events(model, spec, args.events)
        core = service_core(model, spec, DetectionPipeline(model.name, "1", model.reference, spec))
        began = time.perf_counter()
        run_service(events, 5000, core)
        core_rate = len(events.outcomes) / (time.perf_counter() - began)
        for i, (name, prompt) in enumerate(SERVICES):
            kafka = KafkaSettings(bootstrap_servers=info.bootstrap_servers, topic_prefix=f"b{i}.")
            fill(kafka, events, update)
            env = {
                "LOANSTREAM_KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
                "LOANSTREAM_KAFKA_TOPIC_PREFIX": kafka.topic_prefix,
                "LOANSTREAM_KAFKA_FAUST_PROMPT_DELIVERY": prompt,
                "LOANSTREAM_MONITOR_TRACKING_URI": uri,
                "LOANSTREAM_MONITOR_APP_ID": f"bench-{uuid.uuid4().hex[:8]}",
                "LOANSTREAM_MONITOR_DATA_DIR": str(root / f"monitor-{i}"),
            }
            console.print(f"[{i + 1}/{len(SERVICES)}] {name} reads them all")
            log = root / f"monitor-{i}.log"
            rates[name] = service_rate(kafka, env, len(events.outcomes), log)
    finally:
        broker.stop()
    table = Table(
        "monitor", "labelled events/s", "/ core", title=f"{args.events:,} labelled events"
    )
    table.add_row("service core, in-process (baseline)", f"{core_rate:,.0f}", "1.00x")
    for name, rate in rates.items():
        table.add_row(name, f"{rate:,.0f}", f"{rate / core_rate:.2f}x")
    console.print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    document = {"events": args.events, "core_per_s": core_rate, "service_per_s": rates}
    args.out.write_text(json.dumps(document, indent=2) + "\n")
    console.print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
