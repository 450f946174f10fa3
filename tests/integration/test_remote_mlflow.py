"""MLflow as a team runs it: a tracking server of its own, named by MLFLOW_TRACKING_URI alone.

A real ``mlflow server`` process (SQLite backend, its own artifact store) stands for the team's
server. The trainer registers a champion through it with nothing but MLFLOW_TRACKING_URI set;
the model file must land in the server's artifact store, not on the trainer's disk. A
``loanstream scorer`` process with its own empty data dir (another host, as far as it can tell)
then loads that champion through the server, verified against the registry's sha256, and scores
over REST; the monitor's reference watcher loads it the same way.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from loanstream.config import KafkaSettings
from loanstream.kafka.broker import free_port
from loanstream.models import MODEL_FILE, ModelRejected, download_and_load, sha256_of
from loanstream.spec import load_spec
from loanstream.topics import create_topics
from monitor.references import ReferenceWatcher
from monitor.settings import MonitorSettings
from scorer.settings import ScorerSettings
from tests.helpers import application_json
from tests.integration.processes import Service, wait_for
from tests.trainer_data import history
from trainer.data import labelled_frame
from trainer.pipeline import options_from, training_round
from trainer.registry import Registry
from trainer.settings import TrainerSettings

SERVER_START_S = 240.0  # imports, database migrations: slow on a busy 2-core machine
COMPOSE = Path(__file__).resolve().parents[2] / "docker-compose.yml"


def compose_allowed_hosts() -> str:
    """The Host headers docker-compose.yml's MLflow server answers: this one answers the same."""
    command = yaml.safe_load(COMPOSE.read_text())["services"]["mlflow"]["command"]
    return str(command[command.index("--allowed-hosts") + 1])


def progress(text: str) -> None:
    """A line on the terminal even under pytest's capture: the server takes a while."""
    print(f"[remote-mlflow] {text}", file=sys.__stderr__, flush=True)


def tail(path: Path, lines: int = 30) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


class MlflowServer:
    """``mlflow server`` from this environment, on a free port, with its own stores."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.artifacts = root / "artifacts"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = root / "mlflow-server.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        command = [
            str(Path(sys.executable).parent / "mlflow"),
            "server",
            "--backend-store-uri",
            f"sqlite:///{self.root / 'db' / 'mlflow.db'}",
            "--artifacts-destination",
            str(self.artifacts),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--workers",
            "1",
            "--allowed-hosts",
            compose_allowed_hosts(),
        ]
        (self.root / "db").mkdir(parents=True)
        self.process = subprocess.Popen(
            command,
            env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"},
            stdout=self.log.open("ab"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        began = time.monotonic()
        last_said = began
        while time.monotonic() - began < SERVER_START_S:
            if self.process.poll() is not None:
                raise AssertionError(f"mlflow server exited:\n{tail(self.log)}")
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    progress(f"mlflow server up on {self.url} in {time.monotonic() - began:.0f} s")
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() - last_said >= 10:
                last_said = time.monotonic()
                progress(f"waiting for mlflow server on {self.url}: {last_said - began:.0f} s")
            time.sleep(0.5)
        waited = f"{SERVER_START_S:.0f} s"
        raise AssertionError(f"mlflow server not healthy in {waited}:\n{tail(self.log)}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, 15)  # uvicorn's worker is in its group
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, 9)
                self.process.wait(10)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    """The server (one for the module: it is slow to start), named to every service by
    MLFLOW_TRACKING_URI and nothing else."""
    running = MlflowServer(tmp_path_factory.mktemp("mlflow-server"))
    with pytest.MonkeyPatch.context() as patch:
        for service in ("SCORER", "MONITOR", "TRAINER"):
            patch.delenv(f"LOANSTREAM_{service}_TRACKING_URI", raising=False)
        try:
            running.start()
            patch.setenv("MLFLOW_TRACKING_URI", running.url)
            yield running
        finally:
            running.stop()


def test_the_server_answers_the_compose_services_host_and_no_other(server: MlflowServer) -> None:
    """MLflow refuses a Host header it does not allow (DNS rebinding), while /health answers
    any: a compose file without the services' host would look healthy and refuse them all."""
    search = f"{server.url}/api/2.0/mlflow/experiments/search?max_results=1"
    assert httpx.get(search, headers={"Host": "mlflow:5000"}, timeout=10).status_code == 200
    assert httpx.get(search, headers={"Host": "attacker.example"}, timeout=10).status_code == 403


def files_named(root: Path, name: str) -> list[Path]:
    return sorted(root.rglob(name)) if root.exists() else []


def test_a_scorer_elsewhere_serves_the_champion_the_trainer_put_on_the_server(
    server: MlflowServer, kafka: KafkaSettings, tmp_path: Path
) -> None:
    began = time.monotonic()
    trainer_dir = tmp_path / "trainer"
    settings = TrainerSettings(data_dir=trainer_dir, candidates=("logistic",), search_candidates=2)
    assert settings.resolved_tracking_uri() == server.url
    registry = Registry(settings)
    frame, spec = history(6000, seed=4)
    training_round(
        labelled_frame(frame, spec)[0], spec, settings, registry, options_from(settings), None
    )
    champion = registry.champion()
    assert champion is not None and champion.version == "1"
    progress(f"trained and registered v1 through the server in {time.monotonic() - began:.0f} s")

    # The experiment keeps its artifacts on the server; the model file is in its store only.
    experiment = registry.client.get_experiment_by_name(settings.experiment)
    assert experiment.artifact_location.startswith("mlflow-artifacts:/")
    stored = files_named(server.artifacts, MODEL_FILE)
    assert [sha256_of(path) for path in stored] == [champion.sha256]
    assert files_named(trainer_dir, MODEL_FILE) == []
    assert not (trainer_dir / "mlartifacts").exists() and not (trainer_dir / "mlflow.db").exists()

    # The registry's sha256 is checked on what the server sends.
    with pytest.raises(ModelRejected, match="sha256"):
        download_and_load(champion.uri, server.url, "0" * 64, champion.name, "1")

    # The monitor's reference comes through the server too.
    monitor = MonitorSettings(data_dir=tmp_path / "monitor")
    assert monitor.resolved_tracking_uri() == server.url
    references = ReferenceWatcher(kafka, monitor.model_name, monitor.resolved_tracking_uri())
    references.look()
    assert references.current == "1" and references.references["1"]

    # A scorer with nothing of the trainer's on its disk: only MLFLOW_TRACKING_URI.
    scorer_dir = tmp_path / "scorer"
    assert ScorerSettings(data_dir=scorer_dir).resolved_tracking_uri() == server.url
    create_topics(kafka)
    port = free_port()
    scorer = Service(
        ["scorer", "--api-port", str(port)],
        {
            "LOANSTREAM_KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
            "LOANSTREAM_KAFKA_TOPIC_PREFIX": kafka.topic_prefix,
            "LOANSTREAM_KAFKA_PARTITIONS": str(kafka.partitions),
            "LOANSTREAM_SCORER_APP_ID": f"scorer-{uuid.uuid4().hex[:8]}",
            "LOANSTREAM_SCORER_DATA_DIR": str(scorer_dir),
        },
        tmp_path / "scorer.log",
    )
    try:
        url = f"http://127.0.0.1:{port}"
        ready = wait_for(lambda: httpx.get(f"{url}/readyz", timeout=5).status_code == 200, 120)
        assert ready, f"the scorer loaded no model:\n{tail(scorer.log)}"
        model = httpx.get(f"{url}/v1/model", timeout=5).json()
        assert (model["version"], model["sha256"]) == ("1", champion.sha256)
        answer = httpx.post(
            f"{url}/v1/score", content=application_json(load_spec(), 1, random.Random(1))
        )
        assert answer.status_code == 200, answer.text
        scored = answer.json()
        assert scored["model_version"] == "1" and 0.0 <= scored["probability"] <= 1.0
        assert scored["decision"] in ("approve", "review", "decline")
    finally:
        scorer.stop()
    assert files_named(scorer_dir, MODEL_FILE) == []  # downloaded to a temporary folder only
    progress(f"served over REST from the server's store {time.monotonic() - began:.0f} s in")
