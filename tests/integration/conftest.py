"""One real Kafka broker per test session, started by the same code as `loanstream kafka start`.

It listens on a free port with its own data dir and shares the jars cache of the default data
dir (LOANSTREAM_BROKER_JARS_DIR overrides it). If it cannot start, every integration test errors:
they never skip.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from loanstream.config import BrokerSettings, KafkaSettings
from loanstream.kafka.broker import BrokerInfo, LocalBroker, free_port, kafka_version
from tests.trainer_data import history
from trainer.data import labelled_frame
from trainer.pipeline import options_from, training_round
from trainer.registry import Registry
from trainer.settings import TrainerSettings


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/integration/" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def jars_dir() -> Path:
    defaults = BrokerSettings()
    return defaults.jars_dir or defaults.data_dir / "kafka" / kafka_version()


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory, jars_dir: Path) -> Iterator[BrokerInfo]:
    local = LocalBroker(
        BrokerSettings(
            port=free_port(), data_dir=tmp_path_factory.mktemp("kafka"), jars_dir=jars_dir
        )
    )
    info, _ = local.start()
    yield info
    local.stop()


@pytest.fixture
def kafka(broker: BrokerInfo) -> KafkaSettings:
    """Settings for one test: its own topic prefix, so tests never share topics."""
    return KafkaSettings(
        bootstrap_servers=broker.bootstrap_servers,
        topic_prefix=f"t{uuid.uuid4().hex[:10]}.",
        partitions=3,
    )


def champion_store(tmp_path_factory: pytest.TempPathFactory, rows: int) -> TrainerSettings:
    """An MLflow store whose first champion (v1, logistic) learnt from ``rows`` of history."""
    settings = TrainerSettings(
        data_dir=tmp_path_factory.mktemp("mlflow"), candidates=("logistic",), search_candidates=2
    )
    frame, spec = history(rows, seed=4)
    training_round(
        labelled_frame(frame, spec)[0],
        spec,
        settings,
        Registry(settings),
        options_from(settings),
        None,
    )
    return settings


@pytest.fixture(scope="module")
def mlflow_settings(tmp_path_factory: pytest.TempPathFactory) -> TrainerSettings:
    """An MLflow store with a first champion (v1, logistic), shared by a module's tests."""
    return champion_store(tmp_path_factory, 8000)
