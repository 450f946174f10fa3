"""The Faust scorer as a real process against the real broker and a real MLflow store."""

from __future__ import annotations

import bisect
import itertools
import json
import random
import signal
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from confluent_kafka import ConsumerGroupState, KafkaException, Producer
from confluent_kafka.admin import AdminClient
from prometheus_client import CollectorRegistry

from loanstream.config import KafkaSettings
from loanstream.contracts import DeadLetter, Prediction
from loanstream.kafka.broker import free_port
from loanstream.spec import load_spec
from loanstream.topics import APPLICATIONS, DEAD_LETTER, PREDICTIONS, create_topics
from producer.generator import Generator
from producer.live import produce_live
from producer.metrics import ProducerMetrics
from producer.scenarios import load_scenario
from producer.world import load_world
from tests.helpers import application_json
from tests.integration.consume import read_all
from tests.integration.processes import Service, wait_for
from tests.trainer_data import history
from trainer.data import labelled_frame
from trainer.pipeline import options_from, publish, training_round
from trainer.registry import Registry
from trainer.settings import TrainerSettings

SPEC = load_spec()


@dataclass
class Models:
    settings: TrainerSettings
    registry: Registry


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Models:
    """Two registered versions of a small model: v1 champion, v2 challenger."""
    settings = TrainerSettings(
        data_dir=tmp_path_factory.mktemp("mlflow"), candidates=("logistic",), search_candidates=2
    )
    registry = Registry(settings)
    frame, spec = history(6000, seed=4)
    good, _ = labelled_frame(frame, spec)
    for _ in range(2):
        training_round(good, spec, settings, registry, options_from(settings), None)
    return Models(settings, registry)


class Worker(Service):
    """`loanstream scorer` in its own process."""

    def __init__(
        self,
        kafka: KafkaSettings,
        models: Models,
        app_id: str,
        log: Path,
        api_port: int | None = None,
    ) -> None:
        env = {
            "LOANSTREAM_KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
            "LOANSTREAM_KAFKA_TOPIC_PREFIX": kafka.topic_prefix,
            "LOANSTREAM_SCORER_TRACKING_URI": models.settings.resolved_tracking_uri(),
            "LOANSTREAM_SCORER_APP_ID": app_id,
        }
        options = ["--no-api"] if api_port is None else ["--api-port", str(api_port)]
        super().__init__(["scorer", *options], env, log)


@pytest.fixture
def workers(kafka: KafkaSettings, models: Models, tmp_path: Path) -> Iterator[list[Worker]]:
    create_topics(kafka)
    publish(kafka, models.registry.version("1").update())
    started: list[Worker] = []
    yield started
    for worker in started:
        worker.stop()


def start(
    workers: list[Worker],
    kafka: KafkaSettings,
    models: Models,
    tmp_path: Path,
    app_id: str,
    api_port: int | None = None,
) -> Worker:
    worker = Worker(kafka, models, app_id, tmp_path / f"worker-{len(workers)}.log", api_port)
    workers.append(worker)
    return worker


def hostile(i: int) -> bytes:
    good = json.loads(application_json(SPEC, i, random.Random(i)))
    kind = (i // 100) % 6
    if kind == 0:
        return b'{"application_id": "h' + str(i).encode() + b'", "features": {'
    if kind == 1:
        del good["features"]["income"]
    elif kind == 2:
        good["features"]["income"] = "NAN-HERE"
        return json.dumps(good).replace('"NAN-HERE"', "NaN").encode()
    elif kind == 3:
        good["features"]["credit_score"] = 9999
    elif kind == 4:
        good["features"]["padding"] = "x" * 70_000
    else:
        good["features"]["age"] = "forty"
    return json.dumps(good).encode()


def test_a_hundred_thousand_applications_with_one_percent_hostile(
    kafka: KafkaSettings, models: Models, workers: list[Worker], tmp_path: Path
) -> None:
    worker = start(workers, kafka, models, tmp_path, f"scorer-{uuid.uuid4().hex[:8]}")
    producer = Producer(
        {
            "bootstrap.servers": kafka.bootstrap_servers,
            "linger.ms": 5,
            "message.max.bytes": 1_000_000,
        }
    )
    rng = random.Random(5)
    valid: set[str] = set()
    for i in range(100_000):
        if i % 100 == 37:
            value = hostile(i)
        else:
            value = application_json(SPEC, i, rng)
            valid.add(f"app-{i:07d}")
        while True:
            try:
                producer.produce(kafka.topic(APPLICATIONS), value, f"k{i}".encode())
                break
            except BufferError:
                producer.poll(0.05)
    assert producer.flush(60) == 0
    predictions = read_all(kafka, kafka.topic(PREDICTIONS), 99_000, timeout_s=180)
    letters = [
        DeadLetter.from_json(m.value())
        for m in read_all(kafka, kafka.topic(DEAD_LETTER), 1000, timeout_s=60)
    ]
    ids = [json.loads(m.value())["application_id"] for m in predictions]
    assert len(ids) == len(set(ids)) == 99_000 and set(ids) == valid
    assert len(letters) == 1000
    assert {d.reason for d in letters} == {
        "malformed_json",
        "missing_field",
        "non_finite",
        "out_of_range",
        "oversize",
        "wrong_type",
    }
    assert all(d.source_topic == kafka.topic(APPLICATIONS) and d.offset >= 0 for d in letters)
    assert worker.process.poll() is None, worker.log.read_text()[-2000:]
    assert "crash" not in worker.log.read_text().lower()


def test_hot_swap_under_two_thousand_per_second(
    kafka: KafkaSettings, models: Models, workers: list[Worker], tmp_path: Path
) -> None:
    port, group = free_port(), f"scorer-{uuid.uuid4().hex[:8]}"
    start(workers, kafka, models, tmp_path, group, port)
    generator = Generator(SPEC, load_world(None, SPEC), load_scenario("stable"), seed=8)
    wait_for_model(port, "1")
    # The stream starts once the worker owns its partitions: measured from before that, the
    # swap would land in the catch-up on what queued while the group formed (seconds of it).
    wait_for_assignment(kafka, group)
    # Published 8 s into a 20 s stream, so the swap comes in the steady stream and not in its
    # first seconds, when the broker's JIT and the scorer's first batches make pauses of their
    # own; the load takes ~1 s. The update is read from MLflow now, not on the timer's thread,
    # which would hold the GIL of this process, and so its stream, while the swap happens.
    update = models.registry.version("2").update()

    def promote_and_publish() -> None:  # as the trainer does: the registry decides, then a prompt
        models.registry.promote("2", "hot swap test")
        publish(kafka, update)

    swap = threading.Timer(8.0, promote_and_publish)
    swap.start()
    sent: list[tuple[int, float]] = [(0, time.time())]  # (applications sent so far, when)
    produce_live(
        kafka,
        generator,
        2000,
        ProducerMetrics(CollectorRegistry()),
        count=40_000,
        wait_for_outcomes=False,
        on_sent=lambda n: sent.append((sent[-1][0] + n, time.time())),
    )
    predictions = [
        Prediction.from_json(m.value())
        for m in read_all(kafka, kafka.topic(PREDICTIONS), 40_000, timeout_s=120)
    ]
    assert len({p.application_id for p in predictions}) == 40_000
    by_partition: dict[int, list[str]] = defaultdict(list)
    for message in read_all(kafka, kafka.topic(PREDICTIONS), 40_000):
        by_partition[message.partition()].append(
            Prediction.from_json(message.value()).model_version
        )
    for versions in by_partition.values():  # per partition: 1s, then 2s, never back
        assert versions == sorted(versions)
    ordered = sorted(predictions, key=lambda p: p.scored_at)
    versions = [p.model_version for p in ordered]
    assert sum(a != b for a, b in itertools.pairwise(versions)) == 1  # once, from 1 to 2
    assert versions[0] == "1" and versions[-1] == "2"
    swapped_at = next(p.scored_at.timestamp() for p in ordered if p.model_version == "2")
    every_pause = scoring_pauses(predictions, sent)
    # Near the swap from every batch (a quick load can swap within the first second); the
    # largest of all once the worker has warmed up.
    around = max(pause for pause, t in every_pause if abs(t - swapped_at) <= 1.0)
    pauses = every_pause[len(every_pause) // 20 :]
    times = sorted({p.scored_at.timestamp() for p in predictions})
    gaps = [(b - a, b) for a, b in itertools.pairwise(times)]
    largest_gap = max(gap for gap, _ in gaps[len(gaps) // 20 :])
    gap_around = max(gap for gap, t in gaps if abs(t - swapped_at) <= 1.0)
    largest, at = max(pauses)
    print(
        f"hot swap: longest scoring pause {largest * 1000:.0f} ms ({at - swapped_at:+.1f} s from "
        f"the swap), within 1 s of the swap {around * 1000:.0f} ms; largest gap between "
        f"predictions {largest_gap * 1000:.0f} ms, {gap_around * 1000:.0f} ms within 1 s of the "
        f"swap; median pause "
        f"{sorted(p for p, _ in pauses)[len(pauses) // 2] * 1000:.0f} ms"
    )
    # Under 100 ms, as the issue asks. On this 2-core machine the broker, this test's producer
    # and the scorer share the cores; pauses of 115-245 ms came from the cores running out
    # (the scorer's ~170 fetches/s of a dozen records each), not from the swap. With fetches
    # that gather 32 KiB or 10 ms (loanstream.delivery), in six runs: within 1 s of the swap
    # 36-43 ms, the longest pause anywhere 41-75 ms, the largest gap 46-79 ms.
    assert around < 0.1
    assert gap_around < 0.1  # nor between predictions, whether or not applications were sent


def scoring_pauses(
    predictions: list[Prediction], sent: list[tuple[int, float]]
) -> list[tuple[float, float]]:
    """(pause, when) per scored batch: how long an application waited while nothing was scored.

    Between two batches scored at ``a`` and ``b``, the first application of the second was
    sent at ``s``; it waited ``b - max(a, s)`` with no prediction coming out. A gap in which
    nothing was sent (this test's producer pausing to generate its next rows) is no pause.
    """
    counts = [n for n, _ in sent]

    def sent_at(position: int) -> float:
        return sent[bisect.bisect_right(counts, position)][1]

    first_sent: dict[float, float] = {}
    for p in predictions:
        t = p.scored_at.timestamp()
        s = sent_at(int(p.application_id.rsplit("-", 1)[1]))
        first_sent[t] = min(first_sent.get(t, s), s)
    times = sorted(first_sent)
    return [(b - max(a, first_sent[b]), b) for a, b in itertools.pairwise(times)]


def test_sigkill_of_one_of_two_workers_loses_no_application(
    kafka: KafkaSettings, models: Models, workers: list[Worker], tmp_path: Path
) -> None:
    app_id = f"scorer-{uuid.uuid4().hex[:8]}"
    first = start(workers, kafka, models, tmp_path, app_id)
    second = start(workers, kafka, models, tmp_path, app_id)
    generator = Generator(SPEC, load_world(None, SPEC), load_scenario("stable"), seed=9)
    killer = threading.Timer(8.0, lambda: second.stop(signal.SIGKILL))
    time.sleep(4)
    killer.start()
    restart = threading.Timer(11.0, lambda: start(workers, kafka, models, tmp_path, app_id))
    restart.start()
    produce_live(
        kafka,
        generator,
        2000,
        ProducerMetrics(CollectorRegistry()),
        count=30_000,
        wait_for_outcomes=False,
    )
    predictions = read_all(kafka, kafka.topic(PREDICTIONS), 30_000, timeout_s=180, settle_s=5.0)
    ids = [json.loads(m.value())["application_id"] for m in predictions]
    assert set(ids) == {f"app-9-{i:09d}" for i in range(30_000)}
    duplicates = len(ids) - len(set(ids))
    print(f"SIGKILL of one of two workers: {duplicates} duplicate predictions")
    assert first.process.poll() is None


def test_graceful_rebalances_lose_no_application(
    kafka: KafkaSettings, models: Models, workers: list[Worker], tmp_path: Path
) -> None:
    """A second worker joins mid-stream (partitions move to it), then leaves with SIGTERM
    (they move back): two rebalances under load, every application still scored.

    The stream starts once the first worker owns every partition and lasts ~40 s, so the
    second worker (10-23 s to start on this machine) joins while there is work left: with a
    20 s stream begun before either worker was up, the first had often consumed it all by the
    time the second joined, and the second then had nothing to score (half the runs failed,
    on this code and before it; the rebalance itself completed every time)."""
    app_id = f"scorer-{uuid.uuid4().hex[:8]}"
    first = start(workers, kafka, models, tmp_path, app_id)
    wait_for_assignment(kafka, app_id, timeout_s=120)
    port = free_port()
    generator = Generator(SPEC, load_world(None, SPEC), load_scenario("stable"), seed=10)
    joined: list[Worker] = []
    scored_by_joiner: list[float] = []

    def leave() -> None:  # once it has scored: its start-up takes seconds on a busy machine
        wait_for(lambda: scored(port) > 0, timeout_s=90)
        time.sleep(2)
        scored_by_joiner.append(scored(port))
        joined[0].stop(signal.SIGTERM)

    joiner = threading.Timer(
        1.0, lambda: joined.append(start(workers, kafka, models, tmp_path, app_id, port))
    )
    leaver = threading.Timer(2.0, leave)
    joiner.start()
    leaver.start()
    produce_live(
        kafka,
        generator,
        1000,
        ProducerMetrics(CollectorRegistry()),
        count=40_000,
        wait_for_outcomes=False,
    )
    leaver.join()
    predictions = read_all(kafka, kafka.topic(PREDICTIONS), 40_000, timeout_s=180, settle_s=5.0)
    ids = [json.loads(m.value())["application_id"] for m in predictions]
    assert set(ids) == {f"app-10-{i:09d}" for i in range(40_000)}
    print(
        f"two graceful rebalances: the joiner scored {scored_by_joiner[0]:.0f}; "
        f"{len(ids) - len(set(ids))} duplicate predictions"
    )
    assert scored_by_joiner[0] > 0  # partitions really moved to it
    assert first.process.poll() is None
    assert joined[0].process.returncode == 0  # it left cleanly, not by a crash


def wait_for_model(port: int, version: str, timeout_s: float = 90) -> None:
    """Until the worker's REST API says it scores with ``version``."""
    url = f"http://127.0.0.1:{port}/v1/model"
    if not wait_for(lambda: httpx.get(url).json().get("version") == version, timeout_s, 0.3):
        raise AssertionError(f"the worker did not load version {version} in {timeout_s:.0f} s")


def wait_for_assignment(kafka: KafkaSettings, group: str, timeout_s: float = 60) -> None:
    """Until consumer group ``group`` is stable with every partition of loan.applications."""
    admin = AdminClient(kafka.confluent())
    topic = kafka.topic(APPLICATIONS)
    partitions = len(admin.list_topics(topic, timeout=10).topics[topic].partitions)

    def assigned() -> bool:
        try:
            description = admin.describe_consumer_groups([group])[group].result(10)
        except KafkaException:  # e.g. NOT_COORDINATOR while the group's coordinator loads
            return False
        owned = {
            tp.partition
            for member in description.members
            for tp in member.assignment.topic_partitions
            if tp.topic == topic
        }
        return description.state == ConsumerGroupState.STABLE and len(owned) == partitions

    if not wait_for(assigned, timeout_s, 0.3):
        raise AssertionError(f"group {group} did not own every partition in {timeout_s:.0f} s")


def scored(port: int) -> float:
    """The worker's own count of scored applications, from its /metrics."""
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("loanstream_scorer_applications_total{")
    )
