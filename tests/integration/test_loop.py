"""The README's main command and the local supervisor, run as a user runs them."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from loanstream.config import KafkaSettings
from loanstream.kafka.broker import free_port
from loanstream.topics import create_topics
from loop.demo import QUICK
from tests.integration.processes import service_env
from trainer.pipeline import publish
from trainer.registry import Registry
from trainer.settings import TrainerSettings


def loanstream(
    *args: str, env: dict[str, str], timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "loanstream.cli", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_up_ps_down_report_each_service_and_a_dead_one_with_its_log(
    kafka: KafkaSettings,
    mlflow_settings: TrainerSettings,
    tmp_path: Path,
) -> None:
    create_topics(kafka)
    publish(kafka, Registry(mlflow_settings).version("1").update())
    variables = service_env(kafka, mlflow_settings)
    run = ["--run-dir", str(tmp_path / "run")]
    ports = ["--scorer-port", str(free_port()), "--monitor-port", str(free_port())]
    ports += ["--trainer-port", str(free_port())]
    try:
        up = loanstream("up", *run, *ports, env=variables)
        assert up.returncode == 0, up.stdout + up.stderr
        assert up.stdout.count("healthy") == 3, up.stdout
        ps = loanstream("ps", *run, env=variables)
        assert ps.returncode == 0 and ps.stdout.count("healthy") == 3, ps.stdout
        monitor = json.loads((tmp_path / "run" / "monitor.json").read_text())
        os.kill(monitor["pid"], signal.SIGKILL)
        ps = loanstream("ps", *run, env=variables)
        assert ps.returncode == 1, ps.stdout
        assert "monitor" in ps.stdout and "dead" in ps.stdout
        assert f"monitor (pid {monitor['pid']}) died" in ps.stdout
        assert ps.stdout.count("healthy") == 2
    finally:
        down = loanstream("down", *run, env=variables)
    assert down.returncode == 0, down.stdout + down.stderr
    assert sorted(line.split()[1] for line in down.stdout.splitlines()) == [
        "monitor",
        "scorer",
        "trainer",
    ]
    assert "nothing was started" in loanstream("ps", *run, env=variables).stdout


def test_the_quick_demo_closes_the_loop(jars_dir: Path, tmp_path: Path) -> None:
    """`loanstream demo --quick` on its own broker: a drift detected, a new model serving."""
    port = free_port()
    demo = loanstream(
        "demo",
        "--quick",
        "--port",
        str(port),
        "--data-dir",
        str(tmp_path / "kafka"),
        "--out",
        str(tmp_path / "demo"),
        env={"LOANSTREAM_BROKER_JARS_DIR": str(jars_dir)},
        timeout=600,
    )
    print(demo.stdout[-3000:])
    assert demo.returncode == 0, demo.stdout[-3000:] + demo.stderr[-3000:]
    (run,) = (tmp_path / "demo").iterdir()
    summary = json.loads((run / "summary.json").read_text())
    assert summary["drift_position"] == 10_000
    assert summary["detected_position"] > 10_000
    assert summary["promoted_version"] == "2"
    assert summary["first_served_position"] > summary["detected_position"]
    assert summary["scored"] == QUICK.count
    before, stale, _ = (p["accuracy"] for p in summary["phases"])
    assert stale < before - 0.05  # the drift hurt the old model
    assert "<html" in (run / "report.html").read_text()[:500].lower()
    assert (run / "performance.png").stat().st_size > 10_000
    assert "stopped the broker" in demo.stdout
    logs = sorted((run / "run" / "logs").glob("*.log"))
    assert {log.stem for log in logs} >= {"scorer", "monitor", "trainer", "producer"}
    for log in logs:  # a clean run leaves no traceback and no ERROR line in any service's log
        text = log.read_text()
        assert "Traceback" not in text, f"{log.name}: {text[-3000:]}"
        errors = [line for line in text.splitlines() if "ERROR" in line]
        assert not errors, f"{log.name}: " + "\n".join(errors[:20])
