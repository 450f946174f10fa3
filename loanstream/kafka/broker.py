"""A real single-node Apache Kafka broker (KRaft) on 127.0.0.1, without Docker.

The jars come from Maven Central through the ``pom.xml`` beside this file and are cached under
the data dir, so only the first start needs the network. Each broker lives in
``<data-dir>/brokers/<port>/`` with its properties, KRaft data, ``broker.log`` and a
``broker.json`` state file naming its pid; ``stop`` ends exactly that process.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import uuid
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path

from confluent_kafka.admin import AdminClient

from loanstream.config import BrokerSettings
from loanstream.errors import BrokerError

logger = logging.getLogger(__name__)

_RESOURCES = resources.files("loanstream.kafka")


def kafka_version() -> str:
    """The Kafka version the pom pins (the docker-compose image must match it)."""
    pom = _RESOURCES.joinpath("pom.xml").read_text()
    match = re.search(r"<kafka.version>([^<]+)</kafka.version>", pom)
    if not match:
        raise BrokerError("pom.xml does not declare <kafka.version>")
    return match.group(1)


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """Whether a server could listen on ``port`` now. Bound with SO_REUSEADDR, as the JVM binds:
    without it, the TIME_WAIT of a just-stopped broker's connections kept its port "in use" for
    a minute, though Kafka itself could listen there again."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def explain(output: str, lines: int = 15) -> str:
    """The lines of a JVM's output that say what went wrong, else its last lines."""
    text = output.strip().splitlines()
    causes = [
        line
        for line in text
        if re.search(r"Exception|ERROR|Error", line) and not line.startswith(("\t", " "))
    ]
    return "\n".join(causes[-5:] or text[-lines:])


@dataclass(frozen=True)
class BrokerInfo:
    """What ``start`` recorded about a running broker."""

    pid: int
    port: int
    controller_port: int
    data_dir: str
    log: str
    version: str
    started_at: float

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"


def _pid_alive(pid: int, marker: str) -> bool:
    """True if ``pid`` runs and, where /proc tells, is the broker started with ``marker``."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    proc = Path(f"/proc/{pid}")
    if not proc.exists():
        return True
    try:
        if (proc / "stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
            return False
        return marker in (proc / "cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return False


def is_reachable(bootstrap_servers: str, timeout: float = 2.0) -> bool:
    """True if a Kafka broker at ``bootstrap_servers`` answers a metadata request.

    A port nobody listens on is told by a plain connect first, so that polling a broker that is
    still starting does not fill the terminal with librdkafka's connection errors.
    """
    if not any(_accepts(server, timeout) for server in bootstrap_servers.split(",")):
        return False
    admin = AdminClient({"bootstrap.servers": bootstrap_servers, "socket.timeout.ms": 1000})
    try:
        admin.list_topics(timeout=timeout)
    except Exception:
        return False
    return True


def _accepts(server: str, timeout: float) -> bool:
    host, _, port = server.strip().rpartition(":")
    try:
        with socket.create_connection((host.strip("[]") or "127.0.0.1", int(port)), timeout):
            return True
    except (OSError, ValueError):
        return False


class LocalBroker:
    """Fetch, format, start, check and stop one local broker.

    The jars live in ``settings.jars_dir`` (default ``<data_dir>/kafka/<version>``); tests give
    each session its own ``data_dir`` but share the jars cache.
    """

    def __init__(self, settings: BrokerSettings) -> None:
        self.settings = settings
        self._process: subprocess.Popen[bytes] | None = None

    # -- paths ------------------------------------------------------------------------------
    @property
    def version(self) -> str:
        return kafka_version()

    @property
    def libs(self) -> Path:
        base = self.settings.jars_dir or self.settings.data_dir / "kafka" / self.version
        return base / "libs"

    @property
    def home(self) -> Path:
        return self.settings.data_dir / "brokers" / str(self.settings.port)

    @property
    def state_file(self) -> Path:
        return self.home / "broker.json"

    @property
    def log_file(self) -> Path:
        return self.home / "broker.log"

    @property
    def properties_file(self) -> Path:
        return self.home / "server.properties"

    # -- jars -------------------------------------------------------------------------------
    def ensure_jars(self) -> Path:
        """Download Kafka and its logging backend from Maven Central once; reuse the cache."""
        done = self.libs / ".complete"
        if done.exists():
            return self.libs
        mvn = shutil.which(self.settings.mvn)
        if mvn is None:
            raise BrokerError(
                f"Maven ('{self.settings.mvn}') is not on PATH: it fetches Kafka {self.version} "
                "from Maven Central on the first start (apt-get install maven)"
            )
        work = self.libs.parent
        work.mkdir(parents=True, exist_ok=True)
        pom = work / "pom.xml"
        pom.write_text(_RESOURCES.joinpath("pom.xml").read_text())
        logger.info("fetching Kafka %s from Maven Central into %s", self.version, self.libs)
        result = subprocess.run(
            [
                mvn,
                "-B",
                "-q",
                "-f",
                str(pom),
                "dependency:copy-dependencies",
                "-DincludeScope=runtime",
                f"-DoutputDirectory={self.libs}",
            ],
            capture_output=True,
            text=True,
            check=False,
            timeout=900,
        )
        if result.returncode != 0:
            tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-20:])
            raise BrokerError(f"Maven could not fetch Kafka {self.version}:\n{tail}")
        done.write_text(self.version)
        return self.libs

    # -- state ------------------------------------------------------------------------------
    def info(self) -> BrokerInfo | None:
        """The recorded broker if its process still runs; a stale record is removed."""
        try:
            info = BrokerInfo(**json.loads(self.state_file.read_text()))
        except FileNotFoundError:
            return None
        except (ValueError, TypeError):
            self.state_file.unlink(missing_ok=True)
            return None
        if _pid_alive(info.pid, str(self.properties_file)):
            return info
        self.state_file.unlink(missing_ok=True)
        return None

    def tail_log(self) -> str:
        try:
            return explain(self.log_file.read_text(errors="replace"))
        except FileNotFoundError:
            return "(no broker.log)"

    # -- start ------------------------------------------------------------------------------
    def start(self) -> tuple[BrokerInfo, bool]:
        """Start the broker and wait until it answers; return (info, started_now).

        A broker already running for this port and data dir is returned as is.
        """
        running = self.info()
        if running is not None:
            return running, False
        port = self.settings.port
        if not port_is_free(port):
            raise BrokerError(
                f"port {port} is already in use by another process; choose another with "
                "--port or LOANSTREAM_BROKER_PORT"
            )
        controller_port = self.settings.controller_port or free_port()
        if controller_port == port or not port_is_free(controller_port):
            raise BrokerError(f"controller port {controller_port} is not free")
        libs = self.ensure_jars()
        self.home.mkdir(parents=True, exist_ok=True)
        self._write_config(port, controller_port)
        self._format(libs)
        started = time.time()
        with self.log_file.open("ab") as log:
            self._process = subprocess.Popen(
                self._java(libs, "kafka.Kafka", str(self.properties_file)),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        info = BrokerInfo(
            pid=self._process.pid,
            port=port,
            controller_port=controller_port,
            data_dir=str(self.home),
            log=str(self.log_file),
            version=self.version,
            started_at=started,
        )
        self.state_file.write_text(json.dumps(asdict(info), indent=2))
        self._wait_ready(info)
        return info, True

    def _java(self, libs: Path, *args: str) -> list[str]:
        heap = self.settings.heap
        return [
            self.settings.java,
            f"-Xmx{heap}",
            "-XX:+UseG1GC",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={_RESOURCES.joinpath('log4j2.properties')}",
            "-cp",
            f"{libs}/*",
            *args,
        ]

    def _write_config(self, port: int, controller_port: int) -> None:
        props = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@127.0.0.1:{controller_port}",
            "listeners": f"PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "log.dirs": str(self.home / "data"),
            "num.partitions": "1",
            "auto.create.topics.enable": "false",
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "10",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "share.coordinator.state.topic.replication.factor": "1",
            "group.initial.rebalance.delay.ms": "0",
            "log.cleaner.dedupe.buffer.size": str(2 * 1024 * 1024),
            "message.max.bytes": str(2 * 1024 * 1024),
        }
        self.properties_file.write_text("".join(f"{k}={v}\n" for k, v in props.items()))

    def _format(self, libs: Path) -> None:
        id_file = self.home / "cluster.id"
        if not id_file.exists():
            id_file.write_text(base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("="))
        cmd = self._java(
            libs,
            "kafka.tools.StorageTool",
            "format",
            # one argument: a base64 cluster id may start with "-", which would read as a flag
            f"--cluster-id={id_file.read_text()}",
            "-c",
            str(self.properties_file),
            "--ignore-formatted",
        )
        result = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=120)
        if result.returncode != 0:
            why = explain(result.stdout + result.stderr)
            raise BrokerError(f"formatting KRaft storage in {self.home} failed:\n{why}")

    def _wait_ready(self, info: BrokerInfo) -> None:
        deadline = time.monotonic() + self.settings.start_timeout_s
        while time.monotonic() < deadline:
            assert self._process is not None
            code = self._process.poll()
            if code is not None:
                self.state_file.unlink(missing_ok=True)
                raise BrokerError(
                    f"the broker exited with code {code} while starting; last lines of "
                    f"{self.log_file}:\n{self.tail_log()}"
                )
            if not port_is_free(info.port) and is_reachable(info.bootstrap_servers, 2.0):
                return
            time.sleep(0.2)
        self._kill(info.pid, signal.SIGKILL)
        self.state_file.unlink(missing_ok=True)
        raise BrokerError(
            f"the broker did not answer within {self.settings.start_timeout_s:.0f} s and was "
            f"killed; last lines of {self.log_file}:\n{self.tail_log()}"
        )

    # -- stop -------------------------------------------------------------------------------
    def stop(self) -> BrokerInfo | None:
        """Stop the recorded broker and wait for it to exit; None if none was running."""
        info = self.info()
        if info is None:
            return None
        self._kill(info.pid, signal.SIGTERM)
        if not self._wait_exit(info.pid, self.settings.stop_timeout_s):
            logger.warning("broker pid=%d ignored SIGTERM; sending SIGKILL", info.pid)
            self._kill(info.pid, signal.SIGKILL)
            if not self._wait_exit(info.pid, 10.0):
                raise BrokerError(f"broker pid {info.pid} did not exit after SIGKILL")
        self.state_file.unlink(missing_ok=True)
        return info

    def _kill(self, pid: int, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)

    def _wait_exit(self, pid: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process is not None and self._process.pid == pid:
                if self._process.poll() is not None:
                    return True
            elif not _pid_alive(pid, str(self.properties_file)):
                return True
            time.sleep(0.1)
        return False
