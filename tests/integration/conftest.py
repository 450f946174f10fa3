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
