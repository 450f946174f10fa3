"""Faults against the real system: services SIGKILLed mid-stream, the broker stopped, and hostile
bytes from a third-party client. Every service runs as its own process, as an operator runs it.
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pandas as pd
import pytest
from confluent_kafka import Message
from mlflow import MlflowClient
from prometheus_client import CollectorRegistry
from pydantic import ValidationError

from loanstream.config import BrokerSettings, KafkaSettings
from loanstream.contracts import (
    Contract,
    DeadLetter,
    Decision,
    DriftEvent,
    DriftSignal,
    Outcome,
    Prediction,
    RetrainRequest,
)
from loanstream.errors import InvalidRecord
from loanstream.kafka.broker import LocalBroker, free_port
from loanstream.kafka.clients import IdempotentProducer
from loanstream.reading import read_topic
from loanstream.spec import load_spec
from loanstream.topics import (
    APPLICATIONS,
    DEAD_LETTER,
    DRIFT_EVENTS,
    LABELLED,
    MONITOR_STATE,
    OUTCOMES,
    PREDICTIONS,
    RETRAIN_REQUESTS,
    create_topics,
)
from loanstream.validation import ApplicationValidator
from producer.generator import Generator
from producer.live import produce_live
from producer.metrics import ProducerMetrics
from producer.outcomes import OUTCOME_TIME, LabelPolicy
from producer.scenarios import load_scenario
from producer.world import load_world
from scorer.settings import ScorerSettings
from tests.helpers import T0, sample_features
from tests.integration.consume import read_all
from tests.integration.faults import (
    Kill,
    Stack,
    answered,
    await_,
    duplicates,
    group_stable,
    hostile_corpus,
    kcat_produce,
    produce_holding_labels,
    replay_pending,
    send_outcomes,
    size,
    snapshot_positions,
)
from tests.integration.processes import service_env
from trainer.pipeline import publish
from trainer.registry import Registry
from trainer.settings import TrainerSettings

SPEC = load_spec()
TRAINER_GROUP = "loanstream-trainer"  # the trainer's fixed consumer group
LABEL_SIGNALS = (DriftSignal.CONCEPT, DriftSignal.PERFORMANCE)  # detected on labelled examples


def env(kafka: KafkaSettings, settings: TrainerSettings) -> dict[str, str]:
    """Every service of the stack, the trainer too, on this test's topics and MLflow store."""
    return service_env(
        kafka,
        settings,
        LOANSTREAM_MONITOR_STATE_EVERY_S="1",
        LOANSTREAM_TRAINER_DATA_DIR=str(settings.data_dir),
        LOANSTREAM_TRAINER_CANDIDATES='["logistic"]',
        LOANSTREAM_TRAINER_SEARCH_CANDIDATES="2",
    )


@pytest.fixture
def stack(
    kafka: KafkaSettings, mlflow_settings: TrainerSettings, tmp_path: Path
) -> Iterator[Stack]:
    create_topics(kafka)
    publish(kafka, Registry(mlflow_settings).version("1").update())
    services = Stack(env(kafka, mlflow_settings), tmp_path)
    yield services
    services.stop()


def drift_events(kafka: KafkaSettings) -> list[DriftEvent]:
    return [
        DriftEvent.from_json(v)
        for v in read_topic(kafka, kafka.topic(DRIFT_EVENTS), parse=lambda k, v: v)
    ]


def trained_for(settings: TrainerSettings, request_id: str) -> list[str]:
    """Versions in the registry whose training round covered ``request_id`` (its run tags)."""
    client = MlflowClient(settings.resolved_tracking_uri())
    return [
        v.version
        for v in client.search_model_versions(f"name='{settings.model_name}'")
        if request_id in client.get_run(v.run_id).data.tags.get("requests", "").split(",")
    ]


def trainer_busy(stack: Stack) -> bool:
    """Whether the trainer holds a request: waiting for its rows, or in a round not yet done."""
    trained = stack.metric("trainer", "loanstream_trainer_requests_total", 'outcome="trained"')
    done = stack.metric("trainer", "loanstream_trainer_retrains_total")
    return stack.metric("trainer", "loanstream_trainer_rows_missing") > 0 or trained > done


def subject(event: DriftEvent) -> str:
    return f"v{event.model_version}/{event.signal.value}/{event.feature or event.detector}"


ONSET = 20_000  # where the scenario's drifts begin
HOLD_FROM = 15_000  # the outcomes of applications from here on are held back


@pytest.mark.timeout(600)
def test_sigkill_of_each_service_in_turn_loses_nothing(
    kafka: KafkaSettings, mlflow_settings: TrainerSettings, stack: Stack
) -> None:
    """30,000 applications at 1,000/s with their outcomes ~1 day (~1.4 s) later, covariate
    shift and concept change from application 20,000, while the scorer, then the monitor, then
    the trainer is SIGKILLed and at once started again. Labels come late (here, on cue): the
    outcomes of applications 15,000 on are held back.

    The kill points make each fault bite. The scorer dies with applications still arriving. The
    monitor dies once it has confirmed the data drift (seen in predictions) and snapshotted its
    detectors past it, while the held labels of applications 15,000-19,999 trickle in and its
    newest snapshot has counted records Faust has not committed: the restarted monitor reads
    them again, and must neither count them twice nor confirm the data drift again. The labels of
    the drifted applications are sent only after the kill, so the concept change they reveal is
    in progress at the kill, and must be confirmed once, after the restart. The trainer dies
    while it holds a retrain request (waiting for rows, or training): the restarted trainer must
    serve it.
    """
    count = 30_000
    topic = {name: kafka.topic(name) for name in (PREDICTIONS, LABELLED, MONITOR_STATE)}
    monitor_group = stack.env["LOANSTREAM_MONITOR_APP_ID"]
    for name in ("scorer", "monitor", "trainer"):
        stack.start(name)
    for group in (stack.env["LOANSTREAM_SCORER_APP_ID"], stack.env["LOANSTREAM_MONITOR_APP_ID"]):
        await_(f"group {group} to be stable", lambda g=group: group_stable(kafka, g), 180, 0.5)
    await_("the trainer's group", lambda: group_stable(kafka, TRAINER_GROUP), 180, 0.5)
    generator = Generator(
        SPEC,
        load_world(None, SPEC),
        load_scenario("covariate-shift+concept-drift"),
        seed=41,
        labels=LabelPolicy(median_days=1.0, sigma=0.3, unlabelled_fraction=0.05),
    )
    request = RetrainRequest(
        request_id=f"fault-{uuid.uuid4().hex[:8]}",
        model_name=mlflow_settings.model_name,
        reason="fault test: retrain on what is labelled so far",
        requested_by="test",
    )
    kills: dict[str, Kill] = {}
    before: list[DriftEvent] = []
    watchers: list[threading.Thread] = []
    failures: list[BaseException] = []
    monitor_killed, held_ready = threading.Event(), threading.Event()
    threads: dict[str, threading.Thread] = {}
    held = pd.DataFrame()
    drifted = np.zeros(0, dtype=bool)
    t0 = time.monotonic()

    def log(text: str) -> None:
        print(f"  {time.monotonic() - t0:5.1f} s: {text}")

    def grows(name: str) -> Callable[[], bool]:
        before = size(kafka, topic[name])
        return lambda: size(kafka, topic[name]) > before

    def conductor() -> None:
        try:
            # 1. the scorer, with applications still arriving
            await_("predictions", lambda: size(kafka, topic[PREDICTIONS]) >= 2000, 180)
            kills["scorer"] = kill = stack.kill_and_restart("scorer")
            log("scorer killed and restarted")
            watchers.append(kill.watch(grows(PREDICTIONS), 180))
            # 2. the monitor, after the data drift and a snapshot past it (what a restart
            # restores), before the labels of the drifted applications
            assert held_ready.wait(300), "the stream did not end"
            await_(
                "a data drift event",
                lambda: any(e.signal == DriftSignal.DATA for e in drift_events(kafka)),
                300,
            )
            snapshots = size(kafka, topic[MONITOR_STATE])
            await_(
                "a detector snapshot after the data drift",
                lambda: size(kafka, topic[MONITOR_STATE]) >= snapshots + 2,
                60,
            )
            # the labels of the last applications before the drift, at 1,000/s: the monitor
            # dies busy, with records its snapshot counted and Faust has not committed yet
            trickle = threading.Thread(
                target=send_outcomes, args=(kafka, held[~drifted], SPEC, 1000), name="trickle"
            )
            trickle.start()
            threads["trickle"] = trickle
            await_(
                "records the restarted monitor will read again",
                lambda: replay_pending(kafka, monitor_group, kafka.topic(OUTCOMES)),
                60,
                0.05,
            )
            before.extend(drift_events(kafka))
            kills["monitor"] = kill = stack.kill_and_restart("monitor")
            monitor_killed.set()
            log("monitor killed and restarted after " + ", ".join(map(subject, before)))
            watchers.append(kill.watch(grows(LABELLED), 240))
            # 3. the trainer, while it holds a retrain request
            with IdempotentProducer(kafka) as producer:
                producer.produce(
                    kafka.topic(RETRAIN_REQUESTS), request.model_name.encode(), request.to_json()
                )
            await_("the trainer to take the request", lambda: trainer_busy(stack), 120, 0.1)
            kills["trainer"] = kill = stack.kill_and_restart("trainer")
            log("trainer killed and restarted")
            watchers.append(
                kill.watch(lambda: bool(trained_for(mlflow_settings, request.request_id)), 240)
            )
        except BaseException as err:  # the test thread reports it
            failures.append(err)
            monitor_killed.set()

    thread = threading.Thread(target=conductor, name="conductor")
    thread.start()
    summary, held = produce_holding_labels(kafka, generator, count, 1000, HOLD_FROM)
    drifted = (held[SPEC.event_time_column] >= generator.event_time(ONSET)).to_numpy()
    held_ready.set()
    log(f"sent {summary.applications} applications, {summary.outcomes} outcomes")
    monitor_killed.wait(400)
    if "trickle" in threads:
        threads["trickle"].join(120)
    released = send_outcomes(kafka, held[drifted], SPEC)
    log(f"sent the {released} held outcomes of the drifted applications")
    thread.join(300)
    assert not failures, failures
    for watcher in watchers:
        watcher.join(300)

    rows = generator.rows(0, count)
    with_outcome = set(rows.loc[rows[OUTCOME_TIME].notna(), "application_id"])
    assert summary.outcomes + int((~drifted).sum()) + released == len(with_outcome)
    predicted = [
        orjson.loads(m.value())["application_id"]
        for m in read_all(kafka, topic[PREDICTIONS], count, timeout_s=180, settle_s=3)
    ]
    joined = [
        orjson.loads(m.value())["application_id"]
        for m in read_all(kafka, topic[LABELLED], len(with_outcome), timeout_s=180, settle_s=3)
    ]
    events = drift_events(kafka)
    counted = snapshot_positions(kafka, stack.env["LOANSTREAM_MONITOR_APP_ID"], "1")
    restarted = datetime.fromtimestamp(kills["monitor"].restarted_wall, UTC)
    print(
        f"\nSIGKILL of each service: {len(predicted)} predictions for {count} applications "
        f"({duplicates(predicted)} duplicates, from the scorer's kill), {len(joined)} labelled "
        f"for {len(with_outcome)} outcomes ({duplicates(joined)} duplicates, from the monitor's)"
    )
    for kill in kills.values():
        print(f"  {kill}")
    for e in events:
        when = "before" if e.detected_at < restarted else "after"
        print(f"  drift {subject(e)} at {e.confirmed_position}: {when} the monitor's restart")
    versions = trained_for(mlflow_settings, request.request_id)
    print(f"  the request the killed trainer held: trained into version(s) {versions}")
    print(
        f"  the monitor's detectors counted {counted['predictions']} predictions, "
        f"{counted['labelled']} labelled examples ({len(set(joined)) - counted['labelled']} "
        f"missed); records read again and skipped: {stack.skipped('monitor')}"
    )

    assert set(predicted) == set(rows["application_id"])  # every application scored
    assert with_outcome <= set(joined)  # every prediction whose outcome came, labelled
    # No drift event lost or repeated: each detection once (a replayed one would repeat its id,
    # a re-detection after the restore its subject).
    assert len({e.event_id for e in events}) == len(events)
    assert len({subject(e) for e in events}) == len(events), [subject(e) for e in events]
    assert any(e.signal == DriftSignal.DATA for e in before)
    # the detectors counted each record once, though the restarted monitor read some again
    assert counted["predictions"] <= len(predicted)  # (the scorer's duplicates are records too)
    assert counted["labelled"] <= len(set(joined))  # (a few processed after the last snapshot
    # are joined again by no one: their predictions left the table before the kill)
    assert {e.event_id for e in before} <= {e.event_id for e in events}
    # The change the held labels reveal (in the error stream, or the debt-consolidation
    # segment) was in progress at the kill, and is confirmed after the restart.
    assert not any(e.signal in LABEL_SIGNALS for e in before)
    revealed = [e for e in events if e.signal in LABEL_SIGNALS and e.model_version == "1"]
    assert revealed and all(e.detected_at > restarted for e in revealed), revealed
    assert versions  # the request the killed trainer held, served by the restarted one
    assert all(kill.recovered_at is not None for kill in kills.values()), kills
    assert stack.alive() == {"scorer": True, "monitor": True, "trainer": True}


@pytest.fixture
def own_broker(tmp_path: Path, jars_dir: Path) -> Iterator[LocalBroker]:
    """A broker of the test's own, to stop and start again (same ports, same data dir)."""
    local = LocalBroker(
        BrokerSettings(
            port=free_port(),
            controller_port=free_port(),  # the KRaft quorum keeps its address across restarts
            data_dir=tmp_path / "kafka",
            jars_dir=jars_dir,
        )
    )
    local.start()
    yield local
    local.stop()


@pytest.mark.timeout(400)
def test_the_broker_stopped_mid_stream_loses_nothing(
    own_broker: LocalBroker, mlflow_settings: TrainerSettings, tmp_path: Path
) -> None:
    """The only broker stops for ~10 s while applications and outcomes stream in, and starts
    again on the same port and data dir. The producer's deliveries wait or are retried (and
    counted); the scorer and the monitor ride it out and catch up."""
    kafka = KafkaSettings(
        bootstrap_servers=f"127.0.0.1:{own_broker.settings.port}",
        topic_prefix=f"t{uuid.uuid4().hex[:10]}.",
        partitions=3,
    )
    create_topics(kafka)
    publish(kafka, Registry(mlflow_settings).version("1").update())
    stack = Stack(env(kafka, mlflow_settings), tmp_path)
    try:
        run_through_a_broker_outage(kafka, own_broker, stack)
    finally:
        stack.stop()


def run_through_a_broker_outage(kafka: KafkaSettings, broker: LocalBroker, stack: Stack) -> None:
    count, downtime_s = 15_000, 10.0
    predictions, labelled = kafka.topic(PREDICTIONS), kafka.topic(LABELLED)
    for name in ("scorer", "monitor"):
        stack.start(name)
    for group in (stack.env["LOANSTREAM_SCORER_APP_ID"], stack.env["LOANSTREAM_MONITOR_APP_ID"]):
        await_(f"group {group} to be stable", lambda g=group: group_stable(kafka, g), 180, 0.5)
    generator = Generator(
        SPEC,
        load_world(None, SPEC),
        load_scenario("stable"),
        seed=42,
        labels=LabelPolicy(median_days=1.0, sigma=0.3, unlabelled_fraction=0.05),
    )
    outage: dict[str, float] = {}
    failures: list[BaseException] = []

    def stop_and_start() -> None:
        try:
            await_("predictions", lambda: size(kafka, predictions) >= 3000, 180)
            outage["stopping"] = time.monotonic()
            broker.stop()
            outage["stopped"] = time.monotonic()
            time.sleep(downtime_s)  # the deliberate downtime
            broker.start()
            outage["ready"] = time.monotonic()
            before = answered("the predictions", lambda: size(kafka, predictions), 60)
            outage["predicting"] = await_(
                "predictions after the restart", lambda: size(kafka, predictions) > before, 180, 0.1
            )
        except BaseException as err:  # the test thread reports it
            failures.append(err)

    thread = threading.Thread(target=stop_and_start, name="broker-outage")
    thread.start()
    summary, _ = produce_live(
        kafka, generator, 1500, ProducerMetrics(CollectorRegistry()), count=count
    )
    thread.join(300)
    assert not failures, failures
    rows = generator.rows(0, count)
    with_outcome = set(rows.loc[rows[OUTCOME_TIME].notna(), "application_id"])
    predicted = [
        orjson.loads(m.value())["application_id"]
        for m in read_all(kafka, predictions, count, timeout_s=180, settle_s=3)
    ]
    joined = [
        orjson.loads(m.value())["application_id"]
        for m in read_all(kafka, labelled, len(with_outcome), timeout_s=180, settle_s=3)
    ]
    print(
        f"\nbroker outage: stopped in {outage['stopped'] - outage['stopping']:.1f} s, down "
        f"{outage['ready'] - outage['stopping']:.1f} s in all (restart "
        f"{outage['ready'] - outage['stopped'] - downtime_s:.1f} s); predictions again "
        f"{outage['predicting'] - outage['ready']:.1f} s after it answered; producer: "
        f"{summary.retried} deliveries retried, {summary.failed} failed; {len(predicted)} "
        f"predictions ({duplicates(predicted)} duplicates), {len(joined)} labelled "
        f"({duplicates(joined)} duplicates); log lines: scorer {stack.log_lines('scorer')}, "
        f"monitor {stack.log_lines('monitor')}"
    )
    assert summary.applications == count and summary.failed == 0
    assert summary.outcomes == len(with_outcome)
    assert set(predicted) == set(rows["application_id"])
    assert with_outcome <= set(joined)
    assert stack.alive() == {"scorer": True, "monitor": True}, stack.log_tail("scorer")


HOSTILE = 10_000
VALID_EVERY = 10  # a valid application after every tenth hostile one
OTHER_HOSTILE = 400  # to each of loan.outcomes, loan.predictions and loan.retrain-requests


def base_application(i: int) -> dict[str, Any]:
    return {
        "application_id": f"fz-{i:05d}",
        "event_time": (T0 + timedelta(seconds=i)).isoformat(),
        "features": sample_features(SPEC, random.Random(i)),
    }


def base_outcome(i: int) -> dict[str, Any]:
    return Outcome(application_id=f"fo-{i:05d}", label=i % 2, outcome_time=T0).model_dump(
        mode="json"
    )


def base_prediction(i: int) -> dict[str, Any]:
    return Prediction(
        application_id=f"fp-{i:05d}",
        event_time=T0,
        probability=0.7,
        decision=Decision.APPROVE,
        model_name="loan-repayment",
        model_version="1",
        features=sample_features(SPEC, random.Random(i)),
        received_at=T0,
        scored_at=T0,
    ).model_dump(mode="json")


def base_request(i: int) -> dict[str, Any]:
    return RetrainRequest(
        request_id=f"fz-{i}", model_name="loan-repayment", reason="fuzz", requested_by="fuzz"
    ).model_dump(mode="json")


def refused(contract: type[Contract], value: bytes | None) -> bool:
    """Whether the service reading ``contract`` from its topic must dead-letter ``value``."""
    try:
        contract.from_json(value or b"")
    except (ValidationError, ValueError):
        return True
    return False


def parsed_prediction(message: Message) -> Prediction | None:
    """The message as a Prediction; None for one of the hostile ones the test wrote there."""
    return None if refused(Prediction, message.value()) else Prediction.from_json(message.value())


@pytest.mark.timeout(400)
def test_hostile_messages_from_kcat_are_scored_or_dead_lettered(
    kafka: KafkaSettings, stack: Stack, tmp_path: Path
) -> None:
    """10,000 hostile applications (from a deterministic hypothesis corpus: bytes, wrong JSON
    types, huge numbers, NaN/Infinity literals, unicode and invalid UTF-8, deep nesting, missing
    and unknown fields, truncation, empty and NULL values, over 64 KiB) with 1,000 valid ones
    among them, sent by kcat, plus hostile outcomes and predictions (the monitor reads them) and
    retrain requests (the trainer). Every process stays up; every application message has a
    prediction (if it is valid) or a dead letter at its own offset with the validator's reason;
    every refused outcome, prediction and request has its dead letter too."""
    for name in ("scorer", "monitor", "trainer"):
        stack.start(name)
    began = time.monotonic()
    mutations = hostile_corpus(HOSTILE + 3 * OTHER_HOSTILE)  # while the services start
    print(f"\nhostile corpus of {len(mutations)} drawn in {time.monotonic() - began:.1f} s")
    applications: list[tuple[bytes, bytes]] = []
    for i, mutation in enumerate(mutations[:HOSTILE]):
        value = mutation.apply(base_application(i))
        applications.append((value[:64] if i % 13 == 0 else f"h{i}".encode(), value))
        if i % VALID_EVERY == 0:
            valid = orjson.dumps(base_application(100_000 + i))
            applications.append((f"v{i}".encode(), valid))
    others = {
        OUTCOMES: (Outcome, base_outcome),
        PREDICTIONS: (Prediction, base_prediction),
        RETRAIN_REQUESTS: (RetrainRequest, base_request),
    }
    sent: dict[str, list[tuple[bytes, bytes]]] = {}
    for k, (name, (contract, base)) in enumerate(others.items()):
        chunk = mutations[HOSTILE + k * OTHER_HOSTILE : HOSTILE + (k + 1) * OTHER_HOSTILE]
        values = [m.apply(base(i)) for i, m in enumerate(chunk)]
        if name == RETRAIN_REQUESTS:  # a valid request would start a training round
            values = [v for v in values if refused(contract, v)]
        sent[name] = [(f"h{i}".encode(), v) for i, v in enumerate(values)]
    for name, messages in [(APPLICATIONS, applications), *sent.items()]:
        kcat_produce(kafka.bootstrap_servers, kafka.topic(name), messages, tmp_path / "in.bin")
        kcat_produce(  # and NULL values (tombstones)
            kafka.bootstrap_servers,
            kafka.topic(name),
            [(b"", b"")] * 2,
            tmp_path / "null.bin",
            null_empty=True,
        )

    expected_ids: Counter[str] = Counter()
    expected_letters: dict[tuple[str, int, int], str] = {}
    # the scorer's, with its 64 KiB limit and its window of plausible event times
    validator = ApplicationValidator(SPEC, times=ScorerSettings().time_window())
    for m in read_all(kafka, kafka.topic(APPLICATIONS), len(applications) + 2, settle_s=2):
        try:
            expected_ids[validator.parse(m.value() or b"").application_id] += 1
        except InvalidRecord as err:
            expected_letters[(m.topic(), m.partition(), m.offset())] = err.reason
    reasons = {OUTCOMES: "invalid_outcome", PREDICTIONS: "invalid_prediction"}
    for name, (contract, _) in others.items():
        for m in read_all(kafka, kafka.topic(name), len(sent[name]) + 2, settle_s=2):
            if refused(contract, m.value()):
                where = (m.topic(), m.partition(), m.offset())
                too_long = len(m.value() or b"") > TrainerSettings().max_request_bytes
                oversize = name == RETRAIN_REQUESTS and too_long  # refused unread
                expected_letters[where] = "oversize" if oversize else reasons.get(name, "invalid")
    letters = {
        (d.source_topic, d.partition, d.offset): d
        for d in (
            DeadLetter.from_json(m.value())
            for m in read_all(
                kafka, kafka.topic(DEAD_LETTER), len(expected_letters), timeout_s=180, settle_s=3
            )
        )
    }
    scored = read_all(
        kafka,
        kafka.topic(PREDICTIONS),
        expected_ids.total() + len(sent[PREDICTIONS]),  # the scorer's, and the hostile ones
        timeout_s=120,
        settle_s=2,
    )
    predicted = Counter(p.application_id for p in map(parsed_prediction, scored) if p)
    by_reason = Counter(
        (d.source_topic.removeprefix(kafka.topic_prefix), d.reason) for d in letters.values()
    )
    print(
        f"hostile: {len(applications)} application messages ({expected_ids.total()} valid), "
        f"{sum(map(len, sent.values()))} others; dead letters by reason:"
    )
    for (topic, reason), n in sorted(by_reason.items()):
        print(f"  {topic:24} {reason:20} {n}")

    assert stack.alive() == {"scorer": True, "monitor": True, "trainer": True}
    missing = [where for where in expected_letters if where not in letters]
    assert not missing, missing[:10]
    wrong = [
        (w, r, letters[w].reason) for w, r in expected_letters.items() if letters[w].reason != r
    ]
    assert not wrong, wrong[:10]
    assert all(d.error for d in letters.values())
    # and no record a service failed on (a bug), whatever it was
    assert not [d for d in letters.values() if d.reason in ("internal", "scoring_failed")]
    assert all(predicted[i] >= n for i, n in expected_ids.items())
    assert expected_ids.total() >= len(applications) // (VALID_EVERY + 1)
