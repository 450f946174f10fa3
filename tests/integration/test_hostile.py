"""Attacks on every input, against the real broker, MLflow store and service processes.

Each attack is refused or dead-lettered with its reason; no process dies; no valid application,
labelled example or drift event is lost. The registry, not a message, decides what serves.
"""

from __future__ import annotations

import base64
import os
import pickle
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
import zlib
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import orjson
import pytest
import yaml

from loanstream.config import KafkaSettings
from loanstream.contracts import DeadLetter, ModelUpdate, Outcome
from loanstream.kafka.broker import free_port
from loanstream.kafka.clients import IdempotentProducer
from loanstream.models import CHAMPION_ALIAS, MODEL_FILE, PROMOTED_BY_TAG, sha256_of
from loanstream.spec import load_spec
from loanstream.topics import (
    APPLICATIONS,
    DEAD_LETTER,
    LABELLED,
    MONITOR_STATE,
    OUTCOMES,
    PREDICTIONS,
    create_topics,
)
from monitor.reading import read_state
from tests.helpers import application_json
from tests.integration.consume import read_all
from tests.integration.faults import metric
from tests.integration.processes import Service, service_env, wait_for
from trainer.pipeline import publish
from trainer.registry import Registry
from trainer.settings import TrainerSettings

SPEC = load_spec()
KEY = "hostile-test-key"


class Store:
    """The test's MLflow registry, where a test plays the trainer (or an attacker with access)."""

    def __init__(self, settings: TrainerSettings) -> None:
        self.settings = settings
        self.registry = Registry(settings)
        self.client = self.registry.client
        self.name = settings.model_name

    def copy_of_v1(self, bands: dict[str, float] | None = None) -> str:
        """A new version holding v1's model file (its bands replaced when given)."""
        import mlflow

        with tempfile.TemporaryDirectory() as tmp:
            local = Path(
                mlflow.artifacts.download_artifacts(f"models:/{self.name}/1", dst_path=tmp)
            )
            if bands is not None:
                mlmodel = yaml.safe_load((local / "MLmodel").read_text())
                mlmodel["metadata"]["bands"].update(bands)
                (local / "MLmodel").write_text(yaml.safe_dump(mlmodel))
            with mlflow.start_run() as run:
                mlflow.log_artifacts(str(local), artifact_path="model")
            found = self.client.create_model_version(
                self.name, f"runs:/{run.info.run_id}/model", run.info.run_id
            )
            self.client.set_model_version_tag(
                self.name, found.version, "sha256", sha256_of(local / MODEL_FILE)
            )
        return str(found.version)

    def champion(self, version: str, rollback: bool = False) -> None:
        if rollback:
            self.client.set_model_version_tag(self.name, version, PROMOTED_BY_TAG, "rollback")
        self.client.set_registered_model_alias(self.name, CHAMPION_ALIAS, version)


@pytest.fixture
def store(mlflow_settings: TrainerSettings) -> Store:
    store = Store(mlflow_settings)
    store.champion("1")
    return store


@pytest.fixture
def services() -> Iterator[list[Service]]:
    started: list[Service] = []
    yield started
    for service in started:
        service.stop()
        log = service.log.read_text()
        assert "Traceback" not in log, log[-3000:]


def produce(kafka: KafkaSettings, topic: str, records: list[tuple[bytes | None, bytes]]) -> None:
    producer = IdempotentProducer(kafka)
    for key, value in records:
        producer.produce(kafka.topic(topic), key, value)
    producer.flush()


def applications(first: int, n: int, when: datetime) -> list[tuple[bytes, bytes]]:
    out = []
    for i in range(first, first + n):
        record = orjson.loads(application_json(SPEC, i, random.Random(i)))
        record["event_time"] = (when + timedelta(seconds=i)).isoformat()
        out.append((record["application_id"].encode(), orjson.dumps(record)))
    return out


def letters(kafka: KafkaSettings, expected: int) -> list[DeadLetter]:
    found = read_all(kafka, kafka.topic(DEAD_LETTER), expected, timeout_s=60, settle_s=2)
    return [DeadLetter.from_json(m.value()) for m in found]


def test_the_scorer_serves_what_the_registry_says_and_refuses_what_it_should(
    kafka: KafkaSettings, store: Store, services: list[Service], tmp_path: Path
) -> None:
    create_topics(kafka)
    port = free_port()
    env = service_env(
        kafka,
        store.settings,
        LOANSTREAM_SCORER_API_KEY=KEY,
        LOANSTREAM_SCORER_REGISTRY_POLL_S="1",
    )
    scorer = Service(["scorer", "--api-port", str(port)], env, tmp_path / "scorer.log")
    services.append(scorer)
    headers = {"X-API-Key": KEY}

    def serving() -> str:
        """The version that scores now: a REST call takes a loaded model up, as a batch does."""
        body = application_json(SPEC, 7, random.Random(7))
        httpx.post(f"http://127.0.0.1:{port}/v1/score", content=body, headers=headers)
        return str(
            httpx.get(f"http://127.0.0.1:{port}/v1/model", headers=headers).json().get("version")
        )

    def loads(result: str) -> float:
        return metric(port, "loanstream_scorer_model_loads_total", f'result="{result}"')

    assert wait_for(lambda: serving() == "1", 120), scorer.log.read_text()[-3000:]
    now = datetime.now(UTC)
    produce(kafka, APPLICATIONS, applications(0, 200, now))

    # A ModelUpdate naming any URI: only a prompt to look in the registry, which says v1.
    forged = ModelUpdate(
        model_name=store.name,
        version="99",
        run_id="x",
        model_uri="file:///etc",
        sha256="0" * 64,
    )
    publish(kafka, forged)
    time.sleep(3)
    assert serving() == "1" and loads("loaded") == 1
    assert "/etc" not in scorer.log.read_text()

    # Bands that approve everyone, registered and made champion: refused at load.
    bad = store.copy_of_v1({"approve_from": 0.0})
    store.champion(bad)
    assert wait_for(lambda: loads("failed") >= 1, 30)
    assert "decision bands must satisfy" in scorer.log.read_text()
    assert serving() == "1"

    # A newer good version serves; the alias moved back without a rollback does not.
    good = store.copy_of_v1()
    store.champion(good)
    assert wait_for(lambda: serving() == good, 30)
    store.champion("1")
    publish(kafka, store.registry.version("1").update())  # a replayed old update, too
    assert wait_for(lambda: loads("refused_downgrade") == 1, 30)
    assert serving() == good
    store.champion("1", rollback=True)  # `loanstream model rollback`
    assert wait_for(lambda: serving() == "1", 30)

    # REST: no key, an empty key, a 50 MB chunked body.
    url = f"http://127.0.0.1:{port}/v1/score"
    body = application_json(SPEC, 7, random.Random(7))
    assert httpx.post(url, content=body).status_code == 401
    assert httpx.post(url, content=body, headers={"X-API-Key": ""}).status_code == 401

    def fifty_megabytes() -> Iterator[bytes]:
        for _ in range(800):
            yield b" " * 65536

    try:
        status = httpx.post(url, content=fifty_megabytes(), headers=headers, timeout=30)
        assert status.status_code == 413
    except httpx.TransportError:
        pass  # the server answered 413 and closed while the client was still sending
    assert httpx.post(url, content=body, headers=headers).status_code == 200

    produce(kafka, APPLICATIONS, applications(200, 200, now))
    predictions = read_all(kafka, kafka.topic(PREDICTIONS), 400, timeout_s=120)
    ids = {orjson.loads(m.value())["application_id"] for m in predictions}
    assert len(ids) == 400  # no valid application lost through any of it
    assert scorer.process.poll() is None

    # An empty key is refused at start, with the setting named.
    empty = subprocess.run(
        [sys.executable, "-m", "loanstream.cli", "scorer", "--api-port", str(free_port())],
        env={**os.environ, **env, "LOANSTREAM_SCORER_API_KEY": ""},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert empty.returncode == 1
    assert "LOANSTREAM_SCORER_API_KEY" in empty.stdout + empty.stderr


class Payload:
    """What an attacker would put in a pickle: creates ``path`` when unpickled."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[object, tuple[object, ...]]:
        return (shutil.copyfile, (__file__, str(self.path)))


def test_the_monitor_runs_no_code_from_its_state_and_loses_no_label_to_a_wild_time(
    kafka: KafkaSettings, store: Store, services: list[Service], tmp_path: Path
) -> None:
    create_topics(kafka)
    port = free_port()
    env = service_env(
        kafka,
        store.settings,
        LOANSTREAM_MONITOR_REGISTRY_POLL_S="1",
        LOANSTREAM_SCORER_REGISTRY_POLL_S="1",
    )
    app_id = env["LOANSTREAM_MONITOR_APP_ID"]
    pwned = tmp_path / f"pwned-{uuid.uuid4().hex}"
    blob = base64.b64encode(pickle.dumps(Payload(pwned))).decode()
    old_format = zlib.compress(orjson.dumps({"format": 1, "pipelines": {"1": {"pickles": [blob]}}}))
    produce(kafka, MONITOR_STATE, [(app_id.encode(), old_format)])

    scorer = Service(["scorer", "--no-api"], env, tmp_path / "scorer.log")
    monitor = Service(["monitor", "--metrics-port", str(port)], env, tmp_path / "monitor.log")
    services += [scorer, monitor]
    now = datetime.now(UTC) - timedelta(days=30)
    produce(kafka, APPLICATIONS, applications(0, 300, now))
    assert wait_for(lambda: metric(port, "loanstream_monitor_join", 'state="pending"') == 300, 180)
    assert metric(port, "loanstream_monitor_state_unreadable_total") == 1
    assert not pwned.exists()

    # One outcome dated "no date": dead-lettered; the pending predictions keep waiting.
    no_date = Outcome(
        application_id="app-0000005", label=1, outcome_time=datetime(9999, 12, 31, tzinfo=UTC)
    )
    produce(kafka, OUTCOMES, [(b"app-0000005", no_date.to_json())])
    (letter,) = letters(kafka, 1)
    assert letter.reason == "time_out_of_bounds" and letter.value() is None
    # A promotion mid-stream: the monitor's state then holds two versions.
    store.champion(store.copy_of_v1())
    publish(kafka, store.registry.version("1").update())
    time.sleep(4)
    produce(kafka, APPLICATIONS, applications(300, 300, now))
    outcomes = [
        (
            f"app-{i:07d}".encode(),
            Outcome(
                application_id=f"app-{i:07d}",
                label=i % 2,
                outcome_time=now + timedelta(days=1, seconds=i),
            ).to_json(),
        )
        for i in range(600)
    ]
    produce(kafka, OUTCOMES, outcomes)
    labelled = read_all(kafka, kafka.topic(LABELLED), 600, timeout_s=180)
    assert len({m.key() for m in labelled}) == 600  # every valid outcome labelled
    versions = Counter(orjson.loads(m.value())["model_version"] for m in labelled)
    assert len(versions) == 2, versions

    # A restart after the promotion restores the detectors' state exactly.
    monitor.stop()
    assert monitor.process.returncode == 0
    before = read_state(kafka, app_id)
    assert sorted(before.versions) == sorted(versions) and before.unreadable == {}
    restarted = Service(["monitor", "--metrics-port", str(port)], env, tmp_path / "monitor2.log")
    services.append(restarted)
    assert wait_for(lambda: "detector state restored" in restarted.log.read_text(), 180)
    assert wait_for(lambda: metric(port, "loanstream_monitor_join", 'state="joined"') >= 0, 60)
    time.sleep(6)  # a few snapshots with nothing new to count
    assert metric(port, "loanstream_monitor_state_unreadable_total") == 0
    restarted.process.send_signal(signal.SIGTERM)
    restarted.process.wait(60)
    after = read_state(kafka, app_id)
    assert orjson.dumps(after.pipelines) == orjson.dumps(before.pipelines)
    assert not pwned.exists()
    assert scorer.process.poll() is None


def test_the_trainer_dead_letters_hostile_requests_and_records_and_trains_on(
    kafka: KafkaSettings, tmp_path: Path
) -> None:
    from loanstream.contracts import RetrainRequest
    from loanstream.topics import RETRAIN_REQUESTS
    from producer.outcomes import OUTCOME_TIME
    from tests.integration.test_trainer import running, send_labelled, value
    from tests.trainer_data import history

    create_topics(kafka)
    frame, spec = history(8000, seed=9)
    send_labelled(kafka, frame[frame[OUTCOME_TIME].notna()], spec)
    when = datetime(2025, 6, 1, tzinfo=UTC)
    produce(kafka, LABELLED, [(b"empty", b"{}"), (b"x", b'{"label": 7}')])
    settings = TrainerSettings(
        data_dir=tmp_path, candidates=("logistic",), search_candidates=2, recent_window_days=3650
    )

    def request(**fields: object) -> bytes:
        base = {
            "request_id": uuid.uuid4().hex,
            "model_name": settings.model_name,
            "reason": "test",
            "requested_by": "hostile",
        }
        return RetrainRequest.model_validate({**base, **fields}).to_json()

    century = request(window_start=when - timedelta(days=36500), window_end=when)
    inverted = request(window_start=when, window_end=when - timedelta(days=1))
    other = request(model_name="someone-elses-model")
    huge = b'{"request_id": "' + b"x" * 750_000 + b'"}'
    with running(kafka, spec, settings, Registry(settings)) as (worker, metrics):
        produce(
            kafka,
            RETRAIN_REQUESTS,
            [(b"m", century), (b"m", inverted), (b"m", other), (b"m", huge), (b"m", request())],
        )
        deadline = time.monotonic() + 300
        while value(metrics, "loanstream_trainer_requests_total", {"outcome": "trained"}) < 1:
            assert worker.is_alive() and time.monotonic() < deadline
            time.sleep(0.5)
        assert worker.is_alive()
    found = letters(kafka, 6)
    reasons = Counter((d.source_topic.removeprefix(kafka.topic_prefix), d.reason) for d in found)
    assert reasons == Counter(
        {
            (RETRAIN_REQUESTS, "window_too_long"): 1,
            (RETRAIN_REQUESTS, "inverted_window"): 1,
            (RETRAIN_REQUESTS, "other_model"): 1,
            (RETRAIN_REQUESTS, "oversize"): 1,
            (LABELLED, "missing_field"): 2,
        }
    ), reasons
    assert all(len(d.to_json()) < 64 * 1024 and d.value() is None for d in found)
