"""`loanstream train` needs no broker: the registry decides, a ModelUpdate only prompts."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from loanstream.config import KafkaSettings
from loanstream.spec import load_spec
from tests.trainer_data import history
from trainer.cli import register
from trainer.pipeline import broker_reachable, options_from, training_round
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


def test_model_shadow_refuses_the_champion_and_clears_by_hand(tmp_path: Path) -> None:
    frame, _ = history(1500, seed=8)
    settings = TrainerSettings(data_dir=tmp_path / "data", min_rows=300, search_candidates=2)
    registry = Registry(settings)
    options = options_from(settings, candidates=("logistic",))
    for _ in range(2):  # v1 champion; v2 a challenger that may or may not win
        training_round(frame, load_spec(), settings, registry, options, None)
    app = typer.Typer()
    register(app)
    env = {"LOANSTREAM_TRAINER_DATA_DIR": str(tmp_path / "data"), "COLUMNS": "400"}
    champion = registry.champion()
    assert champion is not None
    other = "2" if champion.version == "1" else "1"

    refused = CliRunner().invoke(app, ["model", "shadow", champion.version], env=env)
    said = refused.output + str(refused.exception)  # main() prints a LoanStreamError's text
    assert refused.exit_code != 0 and "is the champion: it cannot shadow itself" in said
    assert registry.challenger() is None

    shadowed = CliRunner().invoke(app, ["model", "shadow", other], env=env)
    assert shadowed.exit_code == 0, shadowed.output
    assert f"v{other} is the challenger in shadow since" in shadowed.output
    shadowing = registry.challenger()
    assert shadowing is not None and shadowing.version.version == other

    cleared = CliRunner().invoke(app, ["model", "shadow", "--clear"], env=env)
    assert cleared.exit_code == 0 and f"v{other} left the shadow" in cleared.output
    assert registry.challenger() is None
    again = CliRunner().invoke(app, ["model", "shadow", "--clear"], env=env)
    assert "no challenger was in shadow" in again.output
    both = CliRunner().invoke(app, ["model", "shadow", other, "--clear"], env=env)
    assert both.exit_code != 0
