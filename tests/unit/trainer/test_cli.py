"""`loanstream train` needs no broker: the registry decides, a ModelUpdate only prompts."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from loanstream.config import KafkaSettings
from tests.trainer_data import history
from trainer.cli import register
from trainer.pipeline import broker_reachable
from trainer.registry import Registry
from trainer.settings import TrainerSettings

NOWHERE = "127.0.0.1:1"  # nothing listens on port 1


def test_no_broker_is_known_in_seconds_without_librdkafka_noise(
    capfd: pytest.CaptureFixture[str],
) -> None:
    began = time.monotonic()
    assert not broker_reachable(KafkaSettings(bootstrap_servers=NOWHERE), timeout_s=1.0)
    assert time.monotonic() - began < 5
    assert "rdkafka" not in capfd.readouterr().err


def test_train_without_a_broker_promotes_says_so_and_succeeds(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    frame, _ = history(1500, seed=8)
    data = tmp_path / "history.parquet"
    frame.to_parquet(data)
    app = typer.Typer()
    register(app)
    result = CliRunner().invoke(
        app,
        ["train", str(data), "--candidates", "logistic", "-b", NOWHERE],
        env={
            "LOANSTREAM_TRAINER_DATA_DIR": str(tmp_path / "data"),
            "LOANSTREAM_TRAINER_MIN_ROWS": "300",
            "LOANSTREAM_TRAINER_SEARCH_CANDIDATES": "2",
            "LOANSTREAM_TRAINER_BROKER_CHECK_S": "2",
            "COLUMNS": "400",  # one line per message
        },
    )
    assert result.exit_code == 0, result.output
    assert "Promoted to champion: no champion yet (no Kafka broker answered at 127.0.0.1:1" in (
        result.output
    )
    assert (
        "no ModelUpdate was published: the scorers will take the new champion from the "
        "registry when they next look)" in result.output
    )
    assert "rdkafka" not in capfd.readouterr().err
    champion = Registry(TrainerSettings(data_dir=tmp_path / "data")).champion()
    assert champion is not None and champion.version == "1"
