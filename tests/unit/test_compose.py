"""docker-compose.yml cannot run here (no Docker engine), so its structure is checked instead."""

import re
import tomllib
from pathlib import Path
from typing import Any

import typer.main
import yaml

from loanstream.cli import get_app
from loanstream.config import KafkaSettings
from loanstream.kafka.broker import kafka_version

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
OURS = {n: s for n, s in SERVICES.items() if s.get("build") == "."}
# One-shot jobs (topics, history, first model): another service waits for them to complete.
ONE_SHOTS = {
    name
    for service in OURS.values()
    for name, need in service["depends_on"].items()
    if need["condition"] == "service_completed_successfully"
}
METRICS_FLAGS = ("--metrics-port", "--api-port")


def cli_has(words: list[str]) -> bool:
    """True if ``loanstream <words...>`` parses: a real command, its options and their values."""
    command: Any = typer.main.get_command(get_app())
    while hasattr(command, "commands"):  # a group: the next word names a subcommand
        if not words or words[0] not in command.commands:
            return False
        command, words = command.commands[words[0]], words[1:]
    try:
        command.make_context(command.name, list(words))  # parses and converts, runs nothing
    except typer.TyperException:
        return False
    return True


def metrics_port(service: dict[str, Any]) -> str | None:
    command = service.get("command", [])
    ports = [command[command.index(flag) + 1] for flag in METRICS_FLAGS if flag in command]
    return ports[0] if ports else None


def default_of(value: str) -> str:
    """``${VAR:-default}`` as Compose reads it when VAR is not set."""
    return re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", value)


def test_kafka_is_the_official_image_of_the_local_brokers_version() -> None:
    assert SERVICES["kafka"]["image"] == f"apache/kafka:{kafka_version()}"
    env = SERVICES["kafka"]["environment"]
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
    assert "9092:9092" in SERVICES["kafka"]["ports"]
    assert "healthcheck" in SERVICES["kafka"]


def test_every_loanstream_service_runs_a_real_command_after_kafka_is_healthy() -> None:
    assert {"topics", "producer", "scorer", "monitor", "trainer"} <= set(OURS)
    for name, service in OURS.items():
        command = service["command"]
        assert command[0] == "loanstream", name
        assert cli_has(command[1:]), f"{name}: 'loanstream {' '.join(command[1:])}' is no command"
        assert service["depends_on"]["kafka"]["condition"] == "service_healthy"
        if name != "topics":
            assert service["depends_on"]["topics"]["condition"] == "service_completed_successfully"


def test_every_loanstream_service_gets_every_kafka_setting() -> None:
    """Each KafkaSettings field, SASL and SSL included, passes through from the shell."""
    wanted = {f"LOANSTREAM_KAFKA_{field.upper()}" for field in KafkaSettings.model_fields}
    for name, service in OURS.items():
        env = service["environment"]
        assert wanted <= set(env), f"{name} does not pass {sorted(wanted - set(env))}"
        assert default_of(env["LOANSTREAM_KAFKA_BOOTSTRAP_SERVERS"]) == "kafka:19092"
        passed = {k for k, v in env.items() if k.startswith("LOANSTREAM_KAFKA_") and v is None}
        assert passed == wanted - {"LOANSTREAM_KAFKA_BOOTSTRAP_SERVERS"}, name
        assert "/etc/loanstream/certs:ro" in " ".join(service["volumes"]), name


def test_services_that_share_the_mlflow_store_share_the_volume() -> None:
    for name, service in OURS.items():
        assert "loanstream-data:/data" in service["volumes"], name
        for key, value in service["environment"].items():
            if key.endswith("_DATA_DIR"):
                assert value == "/data", f"{name}: {key}"
    assert SERVICES["scorer"]["environment"]["LOANSTREAM_SCORER_API_HOST"] == "0.0.0.0"
    assert SERVICES["first-model"]["environment"]["LOANSTREAM_TRAINER_DATA_DIR"] == "/data"
    for name in ("scorer", "monitor", "trainer"):
        prefix = f"LOANSTREAM_{name.upper()}_DATA_DIR"
        assert SERVICES[name]["environment"][prefix] == "/data"


def test_dependencies_and_mounted_files_exist() -> None:
    for name, service in SERVICES.items():
        for dependency in service.get("depends_on", []):
            assert dependency in SERVICES, f"{name} depends on unknown {dependency}"
        for volume in service.get("volumes", []):
            source = default_of(volume).split(":")[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), f"{name} mounts missing {source}"
    assert SERVICES["grafana"]["ports"] == ["3000:3000"]
    assert SERVICES["prometheus"]["ports"] == ["9090:9090"]
    assert SERVICES["scorer"]["ports"] == ["8080:8080"]


def test_grafana_gets_the_provisioning_and_the_dashboards() -> None:
    volumes = SERVICES["grafana"]["volumes"]
    assert "./deploy/grafana/provisioning:/etc/grafana/provisioning:ro" in volumes
    provisioning = ROOT / "deploy" / "grafana" / "provisioning"
    assert list((provisioning / "datasources").glob("*.yml"))
    assert list((provisioning / "dashboards").glob("*.yml"))
    home = SERVICES["grafana"]["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    [dashboards] = [v for v in volumes if v.startswith("./deploy/grafana/dashboards:")]
    inside = dashboards.split(":")[1]
    assert home.startswith(inside + "/")
    assert (ROOT / "deploy" / "grafana" / "dashboards" / Path(home).name).exists()


def test_the_cli_check_itself_tells_commands_from_non_commands() -> None:
    assert cli_has(["topics", "create"])
    assert cli_has(["topics", "create", "--bootstrap-servers", "kafka:19092"])
    assert cli_has(["train", "history.parquet", "--candidates", "hgb"])
    assert not cli_has(["topics", "create", "--no-such-flag"])
    assert not cli_has(["topics"])
    assert not cli_has(["scorer-that-does-not-exist"])
    assert not cli_has(["scorer", "an-argument-it-does-not-take"])
    assert not cli_has(["monitor", "--metrics-port", "not-a-number"])


def test_prometheus_scrapes_exactly_the_services_metrics_ports() -> None:
    prometheus = yaml.safe_load((ROOT / "deploy" / "prometheus.yml").read_text())
    targets = {
        t
        for job in prometheus["scrape_configs"]
        if job["job_name"] != "prometheus"
        for c in job["static_configs"]
        for t in c["targets"]
    }
    serving = {f"{name}:{metrics_port(s)}" for name, s in SERVICES.items() if metrics_port(s)}
    assert targets == serving
    for name in set(OURS) - ONE_SHOTS:
        assert metrics_port(OURS[name]), f"{name} runs without a metrics port"


def test_the_image_holds_every_package_and_the_data_dir() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    dockerfile = (ROOT / "Dockerfile").read_text()
    for pattern in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]:
        package = pattern.rstrip("*")
        assert f"COPY {package} ./{package}" in dockerfile, f"the image lacks {package}/"
    assert "chown nobody /data" in dockerfile and "USER nobody" in dockerfile
