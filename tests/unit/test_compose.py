"""docker-compose.yml and deploy/compose.sasl.yml cannot run here (no Docker engine), so their
structure is checked instead, and the ACL and secrets scripts are run without a broker."""

import ast
import os
import re
import shlex
import shutil
import ssl
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
import typer.main
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12

from loanstream.cli import get_app
from loanstream.config import KafkaSettings
from loanstream.kafka.broker import kafka_version
from loanstream.topics import FOREVER, TOPICS, TopicSpec
from loop.notify import DEFAULT_KINDS, NotifySettings
from scorer.settings import ScorerSettings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
SASL_TEXT = (ROOT / "deploy" / "compose.sasl.yml").read_text()
SASL = yaml.safe_load(SASL_TEXT)["services"]
ACLS = ROOT / "deploy" / "kafka" / "kafka-acls.sh"
MAKE_SECRETS = ROOT / "deploy" / "kafka" / "make-secrets.sh"
OURS = {n: s for n, s in SERVICES.items() if s.get("build") == "."}
# One-shot jobs (topics, history, first model): another service waits for them to complete.
ONE_SHOTS = {
    name
    for service in OURS.values()
    for name, need in service["depends_on"].items()
    if need["condition"] == "service_completed_successfully"
}
METRICS_FLAGS = ("--metrics-port", "--api-port")
SERVICE_PRINCIPALS = {"producer", "scorer", "monitor", "trainer", "notifier"}
# What each image has to run a health check with (the LoanStream image: python:3.11-slim, no
# curl; Prometheus: busybox; Grafana installs curl; Kafka: its own scripts).
HEALTH_TOOLS = {
    "loanstream:latest": "python",
    "apache/kafka": "/opt/kafka/bin/kafka-broker-api-versions.sh",
    "prom/prometheus": "wget",
    "grafana/grafana": "curl",
    "ghcr.io/mlflow/mlflow": "python",
    "postgres": "pg_isready",
}


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
    assert [default_of(p) for p in SERVICES["kafka"]["ports"]] == ["127.0.0.1:9092:9092"]
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


def test_loanstream_logs_are_bounded_on_the_host() -> None:
    for name, service in OURS.items():
        assert service["logging"] == {
            "driver": "json-file",
            "options": {"max-size": "10m", "max-file": "5"},
        }, name


def test_the_history_and_local_state_share_the_data_volume() -> None:
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


def flag(command: list[str], name: str) -> str:
    return command[command.index(name) + 1]


def test_every_service_shares_one_mlflow_server_on_postgres_that_alone_holds_the_models() -> None:
    """One registry for services on any machine: MLFLOW_TRACKING_URI names the server, which
    keeps runs in PostgreSQL and serves the model files from a volume no other service mounts."""
    from importlib.metadata import version

    server, database = SERVICES["mlflow"], SERVICES["postgres"]
    assert server["image"] == f"ghcr.io/mlflow/mlflow:v{version('mlflow')}-full"  # has psycopg2
    assert database["image"].startswith("postgres:")
    command = server["command"]
    assert command[:2] == ["mlflow", "server"] and "--serve-artifacts" in command
    assert f"mlflow-artifacts:{flag(command, '--artifacts-destination')}" in server["volumes"]
    store = server["environment"]["MLFLOW_BACKEND_STORE_URI"]
    assert re.fullmatch(
        r"postgresql://mlflow:\$\{MLFLOW_DB_PASSWORD:\?[^}]+\}@postgres:5432/mlflow", store
    )
    assert database["environment"]["POSTGRES_USER"] == "mlflow"
    assert server["depends_on"]["postgres"]["condition"] == "service_healthy"
    uri = "http://mlflow:" + flag(command, "--port")
    # MLflow answers only the Host headers it allows (its /health answers any): the services' too
    assert "mlflow:" + flag(command, "--port") in flag(command, "--allowed-hosts").split(",")
    for name in ("first-model", "scorer", "monitor", "trainer"):
        env = SERVICES[name]["environment"]
        assert default_of(env["MLFLOW_TRACKING_URI"]) == uri, name
        assert not any(k.endswith("_TRACKING_URI") and k.startswith("LOANSTREAM_") for k in env)
        assert SERVICES[name]["depends_on"]["mlflow"]["condition"] == "service_healthy", name
    holders = [n for n, s in SERVICES.items() if any("mlflow-" in v for v in s.get("volumes", []))]
    assert sorted(holders) == ["mlflow", "postgres"]
    assert [v for v in database["volumes"] if v.startswith("mlflow-")] == [
        "mlflow-db:/var/lib/postgresql/data"
    ]


def test_dependencies_and_mounted_files_exist() -> None:
    for name, service in SERVICES.items():
        for dependency in service.get("depends_on", []):
            assert dependency in SERVICES, f"{name} depends on unknown {dependency}"
        for volume in service.get("volumes", []):
            source = default_of(volume).split(":")[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), f"{name} mounts missing {source}"
    published = {
        n: [default_of(p) for p in s["ports"]] for n, s in SERVICES.items() if "ports" in s
    }
    assert published == {
        "kafka": ["127.0.0.1:9092:9092"],
        "mlflow": ["127.0.0.1:5000:5000"],
        "scorer": ["127.0.0.1:8080:8080"],
        "prometheus": ["127.0.0.1:9090:9090"],
        "grafana": ["127.0.0.1:3000:3000"],
    }


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
    prometheus = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
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


def source_literal(path: str, *names: str) -> Any:
    """A literal in our own source, read without importing it (the monitor's and the trainer's
    modules take seconds to import): a module constant (``"TABLES"``), a settings field's
    default (``"Class", "field"``) or an argument's default (``"Class", "method", "arg"``)."""
    node: Any = ast.parse((ROOT / path).read_text())
    for name in names[:-1]:
        node = next(n for n in node.body if getattr(n, "name", None) == name)
    last = names[-1]
    if isinstance(node, ast.FunctionDef):
        arguments = node.args.args[len(node.args.args) - len(node.args.defaults) :]
        defaults = dict(zip((a.arg for a in arguments), node.args.defaults, strict=True))
        return ast.literal_eval(defaults[last])
    for item in node.body:
        if isinstance(item, ast.Assign) and any(
            getattr(t, "id", None) == last for t in item.targets
        ):
            return ast.literal_eval(item.value)
        if isinstance(item, ast.AnnAssign) and getattr(item.target, "id", None) == last:
            value = item.value
            assert value is not None, f"{last} in {path} has no default"
            if isinstance(value, ast.Call):  # Field(default=...)
                value = next(k.value for k in value.keywords if k.arg == "default")
            return ast.literal_eval(value)
    raise AssertionError(f"{'.'.join(names)} not found in {path}")


def variables(text: str) -> dict[str, str]:
    """Every ``${VAR<op>...}`` of a compose file: variable -> its operator (``:?``, ``:-``, '')."""
    found: dict[str, str] = {}
    for name, op in re.findall(r"\$\{(\w+)(:\?|:-|\?|-)?", text):
        assert found.get(name, op) == op, f"{name} is used with {found[name]!r} and {op!r}"
        found[name] = op
    return found


def test_no_port_is_published_on_all_interfaces() -> None:
    """Each published port names the host address, LOANSTREAM_BIND, loopback unless set."""
    for name, service in [*SERVICES.items(), *SASL.items()]:
        for port in service.get("ports", []):
            assert isinstance(port, str) and port.count(":") == 3, f"{name}: {port!r}"
            assert port.startswith("${LOANSTREAM_BIND:-127.0.0.1}:"), f"{name}: {port!r}"
    assert not any("ports" in service for service in SASL.values())  # ports would add up


def test_secrets_are_required_never_defaulted() -> None:
    """A password or key comes from the operator (``${VAR:?why}``) or compose stops."""
    text = (ROOT / "docker-compose.yml").read_text()
    for source in (text, SASL_TEXT):
        for name, op in variables(source).items():
            if re.search(r"PASSWORD|_KEY\b|API_KEY", name):
                assert op == ":?", f"{name} must be required (${{{name}:?...}}), not {op!r}"
    key = "LOANSTREAM_SCORER_" + "api_key".upper()
    assert "api_key" in ScorerSettings.model_fields
    assert re.fullmatch(rf"\$\{{{key}:\?[^}}]+\}}", SERVICES["scorer"]["environment"][key])
    grafana = SERVICES["grafana"]["environment"]
    assert re.fullmatch(
        r"\$\{GRAFANA_ADMIN_PASSWORD:\?[^}]+\}", grafana["GF_SECURITY_ADMIN_PASSWORD"]
    )
    assert grafana["GF_AUTH_ANONYMOUS_ENABLED"] == "false"
    assert "GF_AUTH_ANONYMOUS_ORG_ROLE" not in grafana
    assert "GF_SECURITY_ADMIN_USER" not in grafana or grafana["GF_SECURITY_ADMIN_USER"] != "admin"


def test_the_secret_checker_tells_required_from_defaulted() -> None:
    assert variables("a: ${A:?set A}\nb: ${B:-x}\nc: ${C}\nd: $${D}") == {
        "A": ":?",
        "B": ":-",
        "C": "",
        "D": "",
    }
    with pytest.raises(AssertionError, match="is used with"):
        variables("${A:?x} ${A:-y}")


def test_every_service_has_a_health_check_with_a_tool_its_image_has() -> None:
    services = {**SERVICES, **{n: s for n, s in SASL.items() if n not in SERVICES}}
    for name, service in services.items():
        check = service.get("healthcheck")
        assert check is not None, f"{name} has no health check"
        if check.get("disable"):  # a one-shot job: its exit code is its health
            assert name in ONE_SHOTS or name == "kafka-acls", f"{name} runs without a check"
            continue
        kind, tool, *_ = check["test"]
        assert kind in ("CMD", "CMD-SHELL"), name
        if kind == "CMD-SHELL":
            tool = shlex.split(tool)[0]
        [image] = [i for i in HEALTH_TOOLS if service["image"].startswith(i)]
        assert tool == HEALTH_TOOLS[image], f"{name}: {tool} is not in {service['image']}"
    assert "kafka-acls" in SASL and SASL["kafka-acls"]["image"] == SERVICES["kafka"]["image"]


def test_loanstream_health_checks_ask_the_services_own_port() -> None:
    for name in set(OURS) - ONE_SHOTS:
        _, tool, flag, code = OURS[name]["healthcheck"]["test"]
        assert (tool, flag) == ("python", "-c"), name
        compile(code, name, "exec")  # valid Python
        [url] = re.findall(r"'(http://[^']+)'", code)
        path = "/readyz" if name == "scorer" else "/metrics"
        assert url == f"http://127.0.0.1:{metrics_port(OURS[name])}{path}", name
        assert "timeout=" in code, name
    assert SERVICES["grafana"]["depends_on"]["prometheus"]["condition"] == "service_healthy"


def test_the_sasl_variant_gives_each_service_its_own_principal() -> None:
    users: dict[str, str] = {}
    for name, service in OURS.items():
        if name == "history":  # `loanstream generate` writes a file and never meets Kafka
            assert service["command"][1] == "generate" and name not in SASL
            continue
        env = SASL[name]["environment"]
        assert env["LOANSTREAM_KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL", name
        assert env["LOANSTREAM_KAFKA_SASL_MECHANISM"] == "PLAIN", name
        assert env["LOANSTREAM_KAFKA_SSL_CA_LOCATION"] == "/etc/loanstream/certs/ca.pem", name
        user = users[name] = env["LOANSTREAM_KAFKA_SASL_USERNAME"]
        variable = f"LOANSTREAM_SASL_{user.upper()}_PASSWORD"
        assert re.fullmatch(rf"\$\{{{variable}:\?[^}}]+\}}", env["LOANSTREAM_KAFKA_SASL_PASSWORD"])
    for service in SERVICE_PRINCIPALS:
        assert users[service] == service
    assert users == {
        **{s: s for s in SERVICE_PRINCIPALS},
        "topics": "topics",
        "first-model": "trainer",
    }
    assert set(users.values()) == set(principals_granted()) == set(made_principals())
    assert (
        SASL["topics"]["depends_on"]["kafka-acls"]["condition"] == "service_completed_successfully"
    )


def test_the_sasl_broker_denies_by_default_and_speaks_plaintext_nowhere() -> None:
    env = {**SERVICES["kafka"]["environment"], **SASL["kafka"]["environment"]}
    protocols = dict(p.split(":") for p in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(","))
    assert protocols == {
        "INTERNAL": "SASL_SSL",
        "CONTROLLER": "SASL_PLAINTEXT",
        "EXTERNAL": "SASL_SSL",
    }
    assert "CONTROLLER://localhost:9093" in env["KAFKA_LISTENERS"].split(",")
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"] == "1@localhost:9093"
    assert env["KAFKA_AUTHORIZER_CLASS_NAME"].endswith(".StandardAuthorizer")
    assert env["KAFKA_ALLOW_EVERYONE_IF_NO_ACL_FOUND"] == "false"
    assert env["KAFKA_SUPER_USERS"] == "User:admin"
    assert env["KAFKA_SASL_ENABLED_MECHANISMS"] == "PLAIN"
    assert env["KAFKA_SASL_MECHANISM_CONTROLLER_PROTOCOL"] == "PLAIN"  # GSSAPI otherwise
    jaas = "-Djava.security.auth.login.config=/etc/kafka/secrets/kafka_server_jaas.conf"
    assert env["KAFKA_OPTS"] == jaas
    assert "./deploy/kafka/secrets:/etc/kafka/secrets:ro" in SASL["kafka"]["volumes"]
    assert (
        "--command-config /etc/kafka/secrets/admin.properties"
        in SASL["kafka"]["healthcheck"]["test"][1]
    )
    # The image turns KAFKA_* variables into properties and drops any value holding a '='.
    for base in (SERVICES["kafka"]["environment"], env):
        dropped = [k for k, v in base.items() if "=" in str(v) and k != "KAFKA_OPTS"]
        assert not dropped, f"the apache/kafka image would drop {dropped}"


def granted(extra_env: dict[str, str] | None = None) -> set[tuple[str, str, str, str, str]]:
    """(principal, pattern, kind, name, operation) for each ACL kafka-acls.sh adds."""
    env = {"PATH": os.environ["PATH"], "DRY_RUN": "1", **(extra_env or {})}
    run = subprocess.run(["bash", str(ACLS)], env=env, capture_output=True, text=True, check=True)
    acls = set()
    for line in run.stdout.splitlines():
        words = shlex.split(line)
        assert words[:2] == ["/opt/kafka/bin/kafka-acls.sh", "--bootstrap-server"], line
        value = {w: words[i + 1] for i, w in enumerate(words[:-1]) if w.startswith("--")}
        kind = "topic" if "--topic" in value else "group"
        principal = value["--allow-principal"].removeprefix("User:")
        operations = [words[i + 1] for i, w in enumerate(words) if w == "--operation"]
        for operation in operations:
            acls.add(
                (principal, value["--resource-pattern-type"], kind, value[f"--{kind}"], operation)
            )
    return acls


def principals_granted() -> set[str]:
    return {acl[0] for acl in granted()}


def made_principals() -> list[str]:
    [line] = [x for x in MAKE_SECRETS.read_text().splitlines() if x.startswith("PRINCIPALS=")]
    return line.removeprefix("PRINCIPALS=(").removesuffix(")").split()


def test_each_principal_gets_exactly_what_its_service_reads_and_writes() -> None:
    acls = granted()
    tables = source_literal("monitor/app.py", "TABLES")
    monitor_group = source_literal("monitor/settings.py", "MonitorSettings", "app_id")
    trainer_group = source_literal("trainer/service.py", "RetrainService", "run", "group_id")
    changelogs = [f"{monitor_group}-{table}-changelog" for table in tables]

    def on(principal: str, operation: str) -> set[str]:
        return {a[3] for a in acls if a[0] == principal and a[2] == "topic" and a[4] == operation}

    def groups(principal: str) -> dict[str, str]:
        return {a[3]: a[4] for a in acls if a[0] == principal and a[2] == "group"}

    assert on("producer", "Write") == {"loan.applications", "loan.outcomes", "loan.dead-letter"}
    assert on("producer", "Read") == set() and groups("producer") == {}
    assert on("scorer", "Read") == {"loan.applications", "loan.model-updates"}
    assert on("scorer", "Write") == {
        "loan.predictions", "loan.shadow-predictions", "loan.dead-letter"
    }  # fmt: skip
    assert groups("scorer") == {
        ScorerSettings.model_fields["app_id"].default: "Read",
        "whole-": "Describe",
    }
    assert on("monitor", "Read") == {
        "loan.predictions", "loan.shadow-predictions", "loan.outcomes", "loan.labelled",
        "loan.drift-events", "loan.monitor-state", "loan.model-updates", *changelogs,
    }  # fmt: skip
    assert on("monitor", "Write") == {
        "loan.labelled", "loan.drift-events", "loan.retrain-requests", "loan.dead-letter",
        "loan.monitor-state", *changelogs,
    }  # fmt: skip
    assert on("monitor", "Create") == set(changelogs)
    assert on("monitor", "DescribeConfigs") == {"loan."}  # prefixed: every declared topic
    assert groups("monitor") == {
        monitor_group: "Read",
        "whole-": "Describe",
        "read-": "Describe",
        "state-": "Describe",
    }
    assert on("trainer", "Read") == {
        "loan.retrain-requests", "loan.labelled", "loan.model-updates", "loan.shadow-predictions"
    }  # fmt: skip
    assert on("trainer", "Write") == {
        "loan.model-updates", "loan.retrain-results", "loan.dead-letter"
    }  # fmt: skip
    assert groups("trainer") == {trainer_group: "Read", "whole-": "Describe", "read-": "Describe"}
    assert on("notifier", "Read") == {
        "loan.drift-events", "loan.retrain-results", "loan.model-updates"
    }  # fmt: skip
    assert on("notifier", "Write") == {"loan.dead-letter"}
    assert groups("notifier") == {source_literal("loop/notify.py", "GROUP_ID"): "Read"}
    assert {a[4] for a in acls if a[0] == "notifier"} == {"Read", "Write"}
    assert {a for a in acls if a[0] == "topics"} == {
        ("topics", "prefixed", "topic", "loan.", op)
        for op in ("Create", "Describe", "DescribeConfigs")
    }
    prefixed = {(a[0], a[3]) for a in acls if a[1] == "prefixed"}
    assert prefixed == {("topics", "loan."), ("monitor", "loan."), *{
        (p, g) for p, gs in [("scorer", ["whole-"]), ("monitor", ["whole-", "read-", "state-"]),
                             ("trainer", ["whole-", "read-"])] for g in gs
    }}  # fmt: skip
    # Every declared topic has a writer; only the dead letters have no service reading them.
    declared = {t.name for t in TOPICS}
    written = {a[3] for a in acls if a[4] == "Write"}
    read = {a[3] for a in acls if a[4] == "Read"}
    assert declared <= written
    assert declared - read <= {"loan.dead-letter", "loan.retrain-results"}


def test_the_acls_follow_the_topic_prefix_and_the_app_ids() -> None:
    acls = granted({"LOANSTREAM_KAFKA_TOPIC_PREFIX": "prod.", "LOANSTREAM_MONITOR_APP_ID": "mon"})
    topics = {a[3] for a in acls if a[2] == "topic"}
    changelogs = {
        "mon-pending-predictions-changelog",
        "mon-orphan-outcomes-changelog",
        "mon-pending-shadow-changelog",
    }
    assert {t for t in topics if not t.startswith("prod.loan.")} == changelogs
    assert ("monitor", "literal", "group", "mon", "Read") in acls
    selective = granted({"LOANSTREAM_ACL_SELECTIVE_LABELS": "1"}) - granted()
    assert selective == {
        ("producer", "literal", "topic", "loan.predictions", "Read"),
        ("producer", "prefixed", "group", "whole-", "Describe"),
    }


def test_the_notifier_is_optional_and_gets_its_webhook_from_the_operator() -> None:
    """It starts only with its profile; URL and secret come from the shell or .env, never a
    default, and an unset one reaches it empty (it then refuses to start, saying why)."""
    notifier = SERVICES["notifier"]
    assert notifier["profiles"] == ["notify"]
    assert [n for n, s in SERVICES.items() if "profiles" in s] == ["notifier"]
    assert notifier["command"] == ["loanstream", "notify", "--metrics-port", "8004"]
    env = notifier["environment"]
    for name in ("WEBHOOK_URL", "WEBHOOK_SECRET"):
        variable = f"LOANSTREAM_NOTIFY_{name}"
        assert env[variable] == f"${{{variable}:-}}"
    settings = {f"LOANSTREAM_NOTIFY_{f.upper()}" for f in NotifySettings.model_fields}
    assert {k for k in env if k.startswith("LOANSTREAM_NOTIFY_")} <= settings
    kinds = default_of(env["LOANSTREAM_NOTIFY_KINDS"])
    assert NotifySettings(webhook_url="https://x.example/", kinds=kinds).kinds == DEFAULT_KINDS


def configured_retention(topic: TopicSpec) -> str:
    """A declared topic's retention, as docs/security.md writes it."""
    config = topic.config
    if config.get("cleanup.policy") == "compact":
        return "compacted"
    if config.get("retention.bytes"):
        return f"{int(config['retention.bytes']) // 1024**3} GiB per partition"
    if config.get("retention.ms") == FOREVER:
        return "forever"
    return f"{int(config['retention.ms']) // (24 * 3600 * 1000)} days"


def test_the_security_doc_classifies_every_topic_with_its_real_retention() -> None:
    doc = (ROOT / "docs" / "security.md").read_text()
    rows = {
        m.group(1): m.group(0)
        for m in re.finditer(r"^\| `([\w.-]+)` \|.*$", doc, flags=re.MULTILINE)
    }
    for topic in TOPICS:
        assert topic.name in rows, f"docs/security.md does not classify {topic.name}"
        cells = [c.strip() for c in rows[topic.name].strip("|").split("|")]
        assert cells[3] == configured_retention(topic), f"{topic.name}: {cells[3]!r}"
    for principal in ("admin", *made_principals()):
        assert f"| `{principal}` |" in doc, f"docs/security.md has no row for {principal}"


@pytest.mark.skipif(shutil.which("openssl") is None, reason="make-secrets.sh needs openssl")
def test_made_secrets_fit_the_broker_the_services_and_each_other(tmp_path: Path) -> None:
    out, certs = tmp_path / "secrets", tmp_path / "certs"
    env = {"PATH": os.environ["PATH"], "LOANSTREAM_CERTS_OUT": str(certs)}
    subprocess.run(["bash", str(MAKE_SECRETS), str(out)], env=env, check=True, capture_output=True)
    values = dict(
        line.split("=", 1) for line in (out / "sasl.env").read_text().splitlines() if "=" in line
    )
    assert set(values) == {n for n, op in variables(SASL_TEXT).items() if op == ":?"}
    jaas = dict(re.findall(r'user_(\w+)="(\w+)"', (out / "kafka_server_jaas.conf").read_text()))
    assert set(jaas) == {"admin", *made_principals()}
    for user, password in jaas.items():
        assert user == "admin" or values[f"LOANSTREAM_SASL_{user.upper()}_PASSWORD"] == password
    assert f'username="admin" password="{jaas["admin"]}";' in (out / "admin.properties").read_text()
    assert len(set(values.values())) == len(values)  # no two secrets alike
    # The keystore opens with its password and serves a certificate the CA vouches for, under
    # the name the containers connect to.
    key, cert, _ = pkcs12.load_key_and_certificates(
        (out / "kafka.keystore.p12").read_bytes(),
        values["LOANSTREAM_KAFKA_KEYSTORE_PASSWORD"].encode(),
    )
    assert key is not None and cert is not None
    (tmp_path / "broker.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "broker.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    assert (certs / "ca.pem").read_bytes() == (out / "ca.pem").read_bytes()
    client = ssl.create_default_context(cafile=certs / "ca.pem")
    assert tls_handshake(client, tmp_path / "broker.pem", tmp_path / "broker.key", "kafka")
    with pytest.raises(ssl.SSLCertVerificationError):
        tls_handshake(client, tmp_path / "broker.pem", tmp_path / "broker.key", "elsewhere")
    rerun = subprocess.run(["bash", str(MAKE_SECRETS), str(out)], env=env, capture_output=True)
    assert rerun.returncode == 1 and b"exists" in rerun.stderr  # never overwrites


def tls_handshake(client: ssl.SSLContext, cert: Path, key: Path, hostname: str) -> bool:
    """A TLS handshake in memory between ``client`` and a server with ``cert``."""
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(cert, key)
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    sides = [
        client.wrap_bio(c_in, c_out, server_hostname=hostname),
        server.wrap_bio(s_in, s_out, server_side=True),
    ]
    done = [False, False]
    for _ in range(10):
        for i, side in enumerate(sides):
            try:
                side.do_handshake()
                done[i] = True
            except ssl.SSLWantReadError:
                pass
        s_in.write(c_out.read())
        c_in.write(s_out.read())
        if all(done):
            return True
    return False
