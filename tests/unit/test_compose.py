"""docker-compose.yml cannot run here (no Docker engine), so its structure is checked instead."""

import itertools
from pathlib import Path

import typer.main
import yaml

from loanstream.cli import get_app
from loanstream.kafka.broker import kafka_version

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]


def cli_has(words: list[str]) -> bool:
    """True if ``loanstream <words...>`` names a real command and each of its --options."""
    command = typer.main.get_command(get_app())
    for word in itertools.takewhile(lambda w: not w.startswith("-"), words):
        subcommands = getattr(command, "commands", None)  # groups have subcommands
        if subcommands is None or word not in subcommands:
            return False
        command = subcommands[word]
    if hasattr(command, "commands"):
        return False
    known = {opt for param in command.params for opt in param.opts + param.secondary_opts}
    return all(w in known for w in words if w.startswith("-"))


def test_kafka_is_the_official_image_of_the_local_brokers_version() -> None:
    assert SERVICES["kafka"]["image"] == f"apache/kafka:{kafka_version()}"
    env = SERVICES["kafka"]["environment"]
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
    assert "9092:9092" in SERVICES["kafka"]["ports"]
    assert "healthcheck" in SERVICES["kafka"]


def test_every_loanstream_service_runs_a_real_command_after_kafka_is_healthy() -> None:
    ours = {n: s for n, s in SERVICES.items() if s.get("build") == "."}
    assert ours, "no LoanStream service in docker-compose.yml"
    for name, service in ours.items():
        command = service["command"]
        assert command[0] == "loanstream", name
        assert cli_has(command[1:]), f"{name}: 'loanstream {' '.join(command[1:])}' is no command"
        assert service["depends_on"]["kafka"]["condition"] == "service_healthy"
        assert service["environment"]["LOANSTREAM_KAFKA_BOOTSTRAP_SERVERS"] == "kafka:19092"


def test_dependencies_and_mounted_files_exist() -> None:
    for name, service in SERVICES.items():
        for dependency in service.get("depends_on", []):
            assert dependency in SERVICES, f"{name} depends on unknown {dependency}"
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), f"{name} mounts missing {source}"
    assert SERVICES["grafana"]["ports"] == ["3000:3000"]
    assert SERVICES["prometheus"]["ports"] == ["9090:9090"]


def test_the_cli_check_itself_tells_commands_from_non_commands() -> None:
    assert cli_has(["topics", "create"])
    assert cli_has(["topics", "create", "--bootstrap-servers", "kafka:19092"])
    assert not cli_has(["topics", "create", "--no-such-flag"])
    assert not cli_has(["topics"])
    assert not cli_has(["scorer-that-does-not-exist"])


def test_prometheus_scrapes_every_service_that_serves_metrics() -> None:
    prometheus = yaml.safe_load((ROOT / "deploy" / "prometheus.yml").read_text())
    targets = {
        t
        for job in prometheus["scrape_configs"]
        for c in job["static_configs"]
        for t in c["targets"]
    }
    for name, service in SERVICES.items():
        command = service.get("command", [])
        for flag in ("--metrics-port", "--api-port"):
            if flag in command:
                port = command[command.index(flag) + 1]
                assert f"{name}:{port}" in targets, f"Prometheus does not scrape {name}"
