"""The ecosystem's conventions: --version, python -m, help texts, .env, log settings, --api-host."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path

import pytest

from loanstream.config import KafkaSettings
from loanstream.logs import LogSettings, configure_logging, throttle_library_logs
from loanstream.settingsdoc import settings_classes

ENV = {**os.environ, "COLUMNS": "200"}


def run(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "loanstream", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
        env=env or ENV,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_version_from_the_installed_distribution() -> None:
    expected = f"loanstream {version('loanstream')}"
    assert run("--version").strip() == expected
    script = Path(sys.executable).with_name("loanstream")
    done = subprocess.run([str(script), "--version"], capture_output=True, text=True, env=ENV)
    assert done.stdout.strip() == expected


def test_help_keeps_square_brackets_and_shows_defaults() -> None:
    text = run("kafka", "start", "--help")
    assert "[default: 9092, or LOANSTREAM_BROKER_PORT]" in text
    replay = run("replay", "--help")
    assert "[default: no pacing, as fast as possible]" in replay
    assert "[default: 50000; x>=1000]" in replay  # a default Typer adds itself


@pytest.mark.parametrize(
    "command",
    [
        "demo",
        "backtest",
        "replay",
        "score",
        "alerts",
        "train",
        "model",
        "scorer",
        "monitor",
        "trainer",
        "up",
        "kafka",
        "settings",
    ],
)
def test_main_commands_show_examples(command: str) -> None:
    text = run(command, "--help")
    assert "Examples:" in text
    assert f"loanstream {command}" in text


def test_every_settings_class_reads_dotenv() -> None:
    for cls in [*settings_classes()]:
        assert cls.model_config.get("env_file") == ".env", cls


def test_dotenv_in_the_working_directory_under_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / ".env").write_text(
        "LOANSTREAM_KAFKA_BOOTSTRAP_SERVERS=kafka-a:9092\n"
        "LOANSTREAM_KAFKA_CLIENT_ID=from-dotenv\n"
        "MLFLOW_TRACKING_URI=http://mlflow.example:5000\n"
        "SOMETHING_ELSE=ignored\n"
    )
    for name in ("LOANSTREAM_KAFKA_BOOTSTRAP_SERVERS", "LOANSTREAM_KAFKA_CLIENT_ID"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("LOANSTREAM_TRAINER_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    assert KafkaSettings().bootstrap_servers == "kafka-a:9092"
    monkeypatch.setenv("LOANSTREAM_KAFKA_BOOTSTRAP_SERVERS", "kafka-b:9092")
    settings = KafkaSettings()
    assert (settings.bootstrap_servers, settings.client_id) == ("kafka-b:9092", "from-dotenv")

    from trainer.settings import TrainerSettings

    assert TrainerSettings().resolved_tracking_uri() == "http://mlflow.example:5000"
    monkeypatch.chdir(tmp_path.parent)  # no .env here: the default again
    assert KafkaSettings().client_id == "loanstream"


def test_dotenv_reaches_the_cli(tmp_path: Path) -> None:
    """The real command, started in a directory with a .env, reads it (help shows no settings,
    so the settings reference is asked for its level by logging at DEBUG)."""
    (tmp_path / ".env").write_text("LOANSTREAM_LOG_FORMAT=json\nLOANSTREAM_LOG_LEVEL=DEBUG\n")
    env = {k: v for k, v in ENV.items() if not k.startswith("LOANSTREAM_LOG_")}
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "import logging; from loanstream.logs import configure_logging; "
            "configure_logging(); logging.getLogger('probe').debug('hello')",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=60,
    )
    assert json.loads(done.stderr.strip())["message"] == "hello"


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.mark.usefixtures("restore_logging")
def test_json_logs_one_object_per_line(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging(LogSettings(level="warning", format="json"))  # type: ignore[arg-type]
    log = logging.getLogger("loanstream.test")
    log.info("not at this level")
    log.warning("lag %d on %s", 12, "loan.applications")
    try:
        raise ValueError("broken")
    except ValueError:
        log.exception("failed")
    lines = capsys.readouterr().err.strip().splitlines()
    records = [json.loads(line) for line in lines]
    assert [(r["level"], r["logger"], r["message"]) for r in records] == [
        ("WARNING", "loanstream.test", "lag 12 on loan.applications"),
        ("ERROR", "loanstream.test", "failed"),
    ]
    assert set(records[0]) == {"time", "level", "logger", "message"}
    assert records[0]["time"].endswith("Z")
    assert "ValueError: broken" in records[1]["exception"]


@pytest.mark.usefixtures("restore_logging")
def test_throttle_still_applies_with_json_logs(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging(LogSettings(format="json"))  # type: ignore[arg-type]
    logging.getLogger("aiokafka.conn")  # it exists once imported, as in a service
    throttle = throttle_library_logs(every_s=3600, libraries=("aiokafka",))
    try:
        for _ in range(5):
            logging.getLogger("aiokafka.conn").error("cannot reach %s", "node 1")
        logging.getLogger("aiokafka").error("cannot reach %s", "node 1")
    finally:
        for name in [*logging.Logger.manager.loggerDict, "aiokafka"]:
            if name.split(".")[0] == "aiokafka":
                logging.getLogger(name).removeFilter(throttle)
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 2  # one of the five, and the parent logger's own
    assert all(json.loads(line)["message"] == "cannot reach node 1" for line in lines)


def test_text_log_level_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOANSTREAM_LOG_LEVEL", "debug")
    monkeypatch.setenv("LOANSTREAM_LOG_FORMAT", "text")
    assert (LogSettings().level, LogSettings().format) == ("DEBUG", "text")
    monkeypatch.setenv("LOANSTREAM_LOG_FORMAT", "xml")
    with pytest.raises(ValueError, match="format"):
        LogSettings()


def test_api_host_setting_and_flag(monkeypatch: pytest.MonkeyPatch) -> None:
    from scorer.cli import scorer_settings

    monkeypatch.delenv("LOANSTREAM_SCORER_API_HOST", raising=False)
    assert scorer_settings(None, None, False, False).api_host == "127.0.0.1"
    monkeypatch.setenv("LOANSTREAM_SCORER_API_HOST", "::1")
    assert scorer_settings(None, None, False, False).api_host == "::1"
    assert scorer_settings(None, "localhost", False, False).api_host == "localhost"
    assert "--api-host" in run("scorer", "--help")
