"""A `loanstream` service in its own process, as an operator runs it, and a wait on what it
reports over HTTP."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import httpx

from loanstream.config import KafkaSettings
from trainer.settings import TrainerSettings


class Service:
    def __init__(self, command: list[str], env: dict[str, str], log: Path) -> None:
        self.log = log
        self.process = subprocess.Popen(
            [sys.executable, "-m", "loanstream.cli", *command],
            env={**os.environ, **env},
            stdout=log.open("ab"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


def wait_for(check: Callable[[], bool], timeout_s: float = 60.0, every_s: float = 0.5) -> bool:
    """Whether ``check()`` came true within ``timeout_s``; a service not answering yet is no."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.TransportError):
            if check():
                return True
        time.sleep(every_s)
    return False


def service_env(kafka: KafkaSettings, settings: TrainerSettings, **extra: str) -> dict[str, str]:
    """The environment of a service process: this test's topics and MLflow store, fresh app ids."""
    uri = settings.resolved_tracking_uri()
    return {
        "LOANSTREAM_KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
        "LOANSTREAM_KAFKA_TOPIC_PREFIX": kafka.topic_prefix,
        "LOANSTREAM_KAFKA_PARTITIONS": str(kafka.partitions),
        "LOANSTREAM_SCORER_TRACKING_URI": uri,
        "LOANSTREAM_SCORER_APP_ID": f"scorer-{uuid.uuid4().hex[:8]}",
        "LOANSTREAM_MONITOR_TRACKING_URI": uri,
        "LOANSTREAM_MONITOR_APP_ID": f"monitor-{uuid.uuid4().hex[:8]}",
        **extra,
    }
