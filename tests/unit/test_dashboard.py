"""The Grafana dashboards ask Prometheus only for series the services really export.

Each service's metrics class is built against a fresh registry, with one child per labelled
metric so that `registry.collect()` shows every sample name (`_total`, `_bucket`, `_sum`, ...)
and its labels. Every PromQL expression is parsed, and each metric name, label matcher, grouping
label and legend label checked against those samples: renaming a metric or a label breaks this.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import promql_parser as promql
import pytest
import yaml
from prometheus_client import CollectorRegistry
from prometheus_client.metrics import MetricWrapperBase

from loanstream.lag import LagMetrics
from monitor.metrics import MonitorMetrics
from producer.metrics import ProducerMetrics
from scorer.metrics import ScorerMetrics
from trainer.metrics import TrainerMetrics

ROOT = Path(__file__).resolve().parents[2]
GRAFANA = ROOT / "deploy" / "grafana"
DASHBOARDS = sorted((GRAFANA / "dashboards").glob("*.json"))
TARGET_LABELS = frozenset({"job", "instance"})  # Prometheus adds them to every scraped series
# LagMetrics: the consumer lag gauges the scorer, monitor and trainer add to their registries.
SERVICES = (ScorerMetrics, MonitorMetrics, TrainerMetrics, ProducerMetrics, LagMetrics)
Series = Mapping[str, frozenset[str]]


def exported_series() -> dict[str, frozenset[str]]:
    """Every sample name the services export, with the label names it carries."""
    series: dict[str, set[str]] = {}
    for service in SERVICES:
        registry = CollectorRegistry()
        for metric in vars(service(registry)).values():
            if isinstance(metric, MetricWrapperBase) and metric._labelnames:
                metric.labels(*metric._labelnames)  # without a child a family has no samples
        for family in registry.collect():
            for sample in family.samples:
                series.setdefault(sample.name, set()).update(sample.labels)
    return {name: frozenset(labels) | TARGET_LABELS for name, labels in series.items()}


SERIES = exported_series()


def labels_of(node: Any, series: Series = SERIES) -> frozenset[str]:
    """The labels the result of a PromQL node carries; asserts on the way that every metric
    name, matcher and grouping label in it exists on the series it applies to."""
    match node:
        case promql.VectorSelector():
            name = node.name  # None for a {__name__=...} selector: the dashboards name metrics
            assert name is not None and name in series, f"no service exports {name!r}"
            labels = series[name]
            matchers = node.matchers.matchers + [m for g in node.matchers.or_matchers for m in g]
            unknown = {m.name for m in matchers} - labels
            assert not unknown, f"{name} has no label {sorted(unknown)}"
            return labels
        case promql.MatrixSelector():
            return labels_of(node.vector_selector, series)
        case promql.ParenExpr() | promql.UnaryExpr() | promql.SubqueryExpr():
            return labels_of(node.expr, series)
        case promql.AggregateExpr():
            inner = labels_of(node.expr, series)
            if node.param is not None:
                labels_of(node.param, series)
            if node.modifier is None:
                return frozenset()
            named = frozenset(node.modifier.labels)
            assert named <= inner, f"cannot group by {sorted(named - inner)} in {node}"
            return named if node.modifier.type == promql.AggModifierType.By else inner - named
        case promql.Call():
            labels = frozenset().union(*(labels_of(arg, series) for arg in node.args))
            return labels - {"le"} if node.func.name == "histogram_quantile" else labels
        case promql.BinaryExpr():
            lhs, rhs = labels_of(node.lhs, series), labels_of(node.rhs, series)
            matching = node.modifier.matching if node.modifier else None
            if matching is not None:
                assert set(matching.labels) <= lhs & rhs, f"cannot match on {matching} in {node}"
            return lhs | rhs  # one-to-one matching: both sides carry the same labels
        case promql.NumberLiteral() | promql.StringLiteral():
            return frozenset()
    raise AssertionError(f"unexpected PromQL node {type(node).__name__}: {node}")


def panels(items: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for item in items:
        yield item
        yield from panels(item.get("panels", []))  # a collapsed row holds its panels


def targets() -> Iterator[tuple[str, dict[str, Any]]]:
    for path in DASHBOARDS:
        for panel in panels(json.loads(path.read_text())["panels"]):
            for target in panel.get("targets", []):
                yield f"{path.stem}/{panel['title']}/{target['refId']}", target


TARGETS = dict(targets())


@pytest.mark.parametrize("where", sorted(TARGETS))
def test_every_expression_uses_only_exported_series_and_labels(where: str) -> None:
    target = TARGETS[where]
    labels = labels_of(promql.parse(target["expr"]))  # raises ValueError on a syntax error
    legend = set(re.findall(r"\{\{\s*(\w+)\s*\}\}", target.get("legendFormat", "")))
    assert legend <= labels, f"the legend names {sorted(legend - labels)}, not in the result"


def test_the_check_refuses_renamed_metrics_and_labels() -> None:
    assert "loanstream_scorer_applications_total" in SERIES
    assert "loanstream_scorer_applications" not in SERIES  # a counter is exported as _total
    assert "le" in SERIES["loanstream_scorer_end_to_end_seconds_bucket"]
    assert "le" not in SERIES["loanstream_scorer_end_to_end_seconds_count"]
    assert {"decision", "model_version", "source"} <= SERIES["loanstream_scorer_applications_total"]
    for bad in (
        "rate(loanstream_scorer_applications[1m])",
        'loanstream_monitor_join{status="pending"}',
        "sum by (reason) (rate(loanstream_scorer_applications_total[1m]))",
        "histogram_quantile(0.9, sum by (le) (rate(loanstream_scorer_end_to_end_seconds[1m])))",
        "sum by (feature) (loanstream_monitor_join)",
    ):
        with pytest.raises(AssertionError):
            labels_of(promql.parse(bad))


def test_every_panel_queries_something_and_every_service_is_on_a_dashboard() -> None:
    assert DASHBOARDS, "no dashboard in deploy/grafana/dashboards"
    for path in DASHBOARDS:
        for panel in panels(json.loads(path.read_text())["panels"]):
            if panel["type"] != "row":
                assert [t for t in panel.get("targets", []) if t.get("expr")], panel["title"]
    used = " ".join(t["expr"] for t in TARGETS.values())
    for service in ("scorer", "monitor", "trainer", "producer"):
        assert f"loanstream_{service}_" in used, f"no panel shows the {service}"
    assert "loanstream_consumer_lag" in used, "no panel shows the consumer lag"


def test_the_lag_panel_shows_each_groups_lag_per_topic() -> None:
    [panel] = [
        p
        for path in DASHBOARDS
        for p in panels(json.loads(path.read_text())["panels"])
        if p["title"] == "Consumer lag per service"
    ]
    [target] = panel["targets"]
    assert labels_of(promql.parse(target["expr"])) >= {"group", "topic"}
    # The panel's threshold line is the bound of the LoanStreamConsumerLagHigh alert.
    rules = yaml.safe_load((ROOT / "deploy" / "prometheus" / "alerts.yml").read_text())
    [rule] = [
        r for g in rules["groups"] for r in g["rules"] if r["alert"] == "LoanStreamConsumerLagHigh"
    ]
    bound = float(rule["expr"].rsplit(">", 1)[1])
    steps = panel["fieldConfig"]["defaults"]["thresholds"]["steps"]
    assert [s["value"] for s in steps if s["value"] is not None] == [bound]


def test_dashboards_use_the_provisioned_datasource_and_provider_path() -> None:
    provisioning = GRAFANA / "provisioning"
    [source] = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())[
        "datasources"
    ]
    [provider] = yaml.safe_load((provisioning / "dashboards" / "dashboards.yml").read_text())[
        "providers"
    ]
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    mount = f"./deploy/grafana/dashboards:{provider['options']['path']}:ro"
    assert mount in compose["services"]["grafana"]["volumes"]
    uids = set()
    for path in DASHBOARDS:
        dashboard = json.loads(path.read_text())
        uids.add(dashboard["uid"])
        for panel in panels(dashboard["panels"]):
            for item in [panel, *panel.get("targets", [])]:
                if "datasource" in item:
                    assert item["datasource"]["uid"] == source["uid"], panel["title"]
    assert len(uids) == len(DASHBOARDS), "two dashboards share a uid"
