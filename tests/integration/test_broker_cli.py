"""`loanstream kafka start|stop|status` as a user runs them, against a second, private broker."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from loanstream.config import BrokerSettings
from loanstream.errors import BrokerError
from loanstream.kafka.broker import BrokerInfo, LocalBroker, free_port


class Run:
    def __init__(self, done: subprocess.CompletedProcess[str]) -> None:
        self.returncode, self.stdout, self.stderr = done.returncode, done.stdout, done.stderr

    def __repr__(self) -> str:  # shown by pytest when an assertion fails
        return f"exit {self.returncode}\nstdout: {self.stdout}\nstderr: {self.stderr}"


def loanstream(*args: str, jars: Path) -> Run:
    env = {**os.environ, "LOANSTREAM_BROKER_JARS_DIR": str(jars), "COLUMNS": "200"}
    return Run(
        subprocess.run(
            [sys.executable, "-m", "loanstream.cli", *args],
            capture_output=True,
            text=True,
            timeout=180,
            env=env,
            check=False,
        )
    )


def test_start_status_stop_as_a_user_would(
    tmp_path: Path, jars_dir: Path, broker: BrokerInfo
) -> None:
    port = str(free_port())
    where = ["--port", port, "--data-dir", str(tmp_path)]
    started = loanstream("kafka", "start", *where, jars=jars_dir)
    assert started.returncode == 0, started
    assert f"ready on 127.0.0.1:{port}" in started.stdout, started
    pid = json.loads((tmp_path / "brokers" / port / "broker.json").read_text())["pid"]

    again = loanstream("kafka", "start", *where, jars=jars_dir)
    assert again.returncode == 0, again
    assert f"already running on 127.0.0.1:{port} (pid {pid}" in again.stdout, again

    status = loanstream("kafka", "status", *where, jars=jars_dir)
    assert status.returncode == 0, status
    assert f"running, pid {pid}" in status.stdout and "reachable" in status.stdout, status

    taken = loanstream(
        "kafka", "start", "--port", str(broker.port), "--data-dir", str(tmp_path), jars=jars_dir
    )
    assert taken.returncode == 1, taken
    assert f"port {broker.port} is already in use by another process" in taken.stderr, taken

    stopped = loanstream("kafka", "stop", *where, jars=jars_dir)
    assert stopped.returncode == 0 and f"(pid {pid})" in stopped.stdout, stopped
    assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text()

    twice = loanstream("kafka", "stop", *where, jars=jars_dir)
    assert twice.returncode == 0 and "nothing to stop" in twice.stdout, twice
    down = loanstream("kafka", "status", *where, jars=jars_dir)
    assert down.returncode == 1 and "not reachable" in down.stdout, down


def test_a_broker_that_cannot_start_says_why_instead_of_hanging(
    tmp_path: Path, jars_dir: Path
) -> None:
    settings = BrokerSettings(
        port=free_port(), data_dir=tmp_path, jars_dir=jars_dir, start_timeout_s=60
    )
    local = LocalBroker(settings)
    local.start()
    local.stop()
    meta = local.home / "data" / "meta.properties"
    meta.write_text(meta.read_text().replace("node.id=1", "node.id=7"))  # storage of another node
    with pytest.raises(BrokerError) as caught:
        LocalBroker(settings).start()
    assert str(caught.value).startswith(f"formatting KRaft storage in {local.home} failed:\n")
    assert "Stored node id 7 doesn't match previous node id 1" in str(caught.value)
    assert local.info() is None


def test_a_cluster_id_that_starts_with_a_dash_is_not_read_as_a_flag(
    tmp_path: Path, jars_dir: Path
) -> None:
    local = LocalBroker(BrokerSettings(port=free_port(), data_dir=tmp_path, jars_dir=jars_dir))
    local.home.mkdir(parents=True)
    (local.home / "cluster.id").write_text("-AbCdEfGhIjKlMnOpQrStUw")  # 1 in 64 random ids
    info, started = local.start()
    assert started and local.info() == info
    local.stop()
