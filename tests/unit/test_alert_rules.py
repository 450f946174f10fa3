"""The Prometheus alert rules: valid, tested by promtool against recorded series, and written
only with metrics and labels the services really export.

promtool comes from Debian's ``prometheus`` package (.ci/run installs it). Without it the promtool
tests skip locally, and fail in CI (``CI`` set) or with ``LOANSTREAM_REQUIRE_PROMTOOL=1``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import promql_parser as promql
import pytest
import yaml

from tests.unit.test_dashboard import SERIES, labels_of

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS = ROOT / "deploy" / "prometheus"
ALERTS = PROMETHEUS / "alerts.yml"
ALERTS_TEST = PROMETHEUS / "alerts.test.yml"
CONFIG = PROMETHEUS / "prometheus.yml"
RULES: list[dict[str, Any]] = [
    rule for group in yaml.safe_load(ALERTS.read_text())["groups"] for rule in group["rules"]
]
SEVERITIES = {"info", "warning", "critical"}
WANTED = {  # what issue 20 asks the rules to watch, by the alert that does
    "drift confirmed": "LoanStreamDriftConfirmed",
    "consumer lag over a bound": "LoanStreamConsumerLagHigh",
    "scorer not ready": "LoanStreamScorerNotReady",
    "dead letters spiking": "LoanStreamDeadLettersSpiking",
    "model load failures": "LoanStreamModelLoadFailures",
    "no predictions while applications arrive": "LoanStreamNoPredictions",
    "monitor snapshot failures": "LoanStreamMonitorSnapshotFailures",
}


def promtool() -> str:
    """promtool's path; skips without it, unless CI or LOANSTREAM_REQUIRE_PROMTOOL asks for it."""
    found = shutil.which("promtool")
    if found:
        return found
    if os.environ.get("CI") or os.environ.get("LOANSTREAM_REQUIRE_PROMTOOL") == "1":
        pytest.fail("promtool is not on PATH (apt-get install prometheus), and CI requires it")
    pytest.skip("promtool is not on PATH: apt-get install --no-install-recommends prometheus")


def run_promtool(*args: str) -> str:
    done = subprocess.run(
        [promtool(), *args], cwd=PROMETHEUS, capture_output=True, text=True, timeout=120
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"promtool {' '.join(args)} failed:\n{output}"
    return output


def test_promtool_checks_the_rules_and_the_config() -> None:
    assert f"SUCCESS: {len(RULES)} rules found" in run_promtool("check", "rules", ALERTS.name)
    assert "SUCCESS" in run_promtool("check", "config", CONFIG.name)


def test_promtool_unit_tests_of_the_rules_pass() -> None:
    assert "SUCCESS" in run_promtool("test", "rules", ALERTS_TEST.name)


def test_promtool_fails_a_rule_test_that_expects_the_wrong_thing(tmp_path: Path) -> None:
    """The check above can fail: the same tests, one expectation turned around, are refused."""
    tool = promtool()
    shutil.copy(ALERTS, tmp_path / ALERTS.name)
    tests = yaml.safe_load(ALERTS_TEST.read_text())
    case = next(c for t in tests["tests"] for c in t["alert_rule_test"] if c["exp_alerts"])
    case["exp_alerts"] = []
    (tmp_path / ALERTS_TEST.name).write_text(yaml.safe_dump(tests))
    done = subprocess.run(
        [tool, "test", "rules", ALERTS_TEST.name], cwd=tmp_path, capture_output=True, timeout=120
    )
    assert done.returncode != 0


def test_each_rule_waits_names_a_severity_and_explains_itself() -> None:
    names = [rule["alert"] for rule in RULES]
    assert len(names) == len(set(names)), "two rules share a name"
    assert set(WANTED.values()) <= set(names)
    for rule in RULES:
        name = rule["alert"]
        assert "for" in rule, f"{name} has no for:"
        assert rule["labels"]["severity"] in SEVERITIES, name
        assert {"summary", "description", "runbook"} <= set(rule["annotations"]), name


@pytest.mark.parametrize("rule", RULES, ids=[r["alert"] for r in RULES])
def test_rules_use_only_exported_metrics_and_labels(rule: dict[str, Any]) -> None:
    """Every metric name, matcher and grouping label exists on a series a service exports
    (tests/unit/test_dashboard.py builds them from the metrics classes); the annotations name
    only labels the alert carries."""
    labels = labels_of(promql.parse(rule["expr"]))
    used = set(re.findall(r"\$labels\.(\w+)", " ".join(rule["annotations"].values())))
    assert used <= labels, f"{rule['alert']} annotations name {sorted(used - labels)}"


def test_the_metric_check_refuses_a_renamed_metric() -> None:
    assert "loanstream_consumer_lag" in SERIES
    assert {"group", "topic"} <= SERIES["loanstream_consumer_lag"]
    for renamed in (
        "increase(loanstream_monitor_drift_events[10m]) > 0",  # a counter is exported as _total
        "loanstream_consumer_lag{partition='0'} > 10",
        "sum by (reason) (rate(loanstream_monitor_messages_total[5m]))",
    ):
        with pytest.raises(AssertionError):
            labels_of(promql.parse(renamed))


def test_every_rule_has_promtool_cases_that_fire_and_that_stay_quiet() -> None:
    cases = [
        case
        for group in yaml.safe_load(ALERTS_TEST.read_text())["tests"]
        for case in group["alert_rule_test"]
    ]
    for rule in RULES:
        mine = [c for c in cases if c["alertname"] == rule["alert"]]
        assert any(c["exp_alerts"] for c in mine), f"no test fires {rule['alert']}"
        assert any(not c["exp_alerts"] for c in mine), f"no test keeps {rule['alert']} quiet"


def test_compose_prometheus_loads_the_rules() -> None:
    config = yaml.safe_load(CONFIG.read_text())
    assert config["rule_files"] == [ALERTS.name]
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    volumes = compose["services"]["prometheus"]["volumes"]
    assert f"./deploy/prometheus/{CONFIG.name}:/etc/prometheus/prometheus.yml:ro" in volumes
    # rule_files are relative to the config file: the rules sit beside it in the container
    assert f"./deploy/prometheus/{ALERTS.name}:/etc/prometheus/{ALERTS.name}:ro" in volumes
