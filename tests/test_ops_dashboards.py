"""The shipped alert rules and Grafana dashboard only use series that the workers export."""

from __future__ import annotations

import json
import re
from pathlib import Path

import dramatiq.middleware.prometheus as dramatiq_prometheus
import pytest
import yaml

from dispatcher.ops.metrics import engine_metrics, registry

ROOT = Path(__file__).resolve().parent.parent
SERIES = re.compile(r"\b(?:dispatcher|dramatiq)_[a-z_]+\b")


def _exported_series() -> set[str]:
    engine_metrics()
    names: set[str] = set()
    for family in registry().collect():
        suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}
        names |= {family.name + s for s in suffixes[family.type]}
    source = Path(dramatiq_prometheus.__file__).read_text()
    for kind, name in re.findall(r'prom\.(Counter|Gauge|Histogram)\(\s*"(dramatiq_\w+)"', source, re.S):
        if kind == "Counter":
            names.add(name if name.endswith("_total") else name + "_total")
        elif kind == "Histogram":
            names |= {name + "_bucket", name + "_sum", name + "_count"}
        else:
            names.add(name)
    return names


def _alert_rules() -> list[dict[str, object]]:
    document = yaml.safe_load((ROOT / "ops/prometheus/alerts.yml").read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


def _dashboard_exprs() -> list[str]:
    dashboard = json.loads((ROOT / "ops/grafana/dispatcher.json").read_text())
    return [t["expr"] for p in dashboard["panels"] if p["type"] != "row" for t in p["targets"]]


def test_the_engine_and_dramatiq_series_are_known() -> None:
    known = _exported_series()
    assert {"dispatcher_deliveries_total", "dispatcher_provider_latency_seconds_bucket", "dispatcher_requests",
            "dramatiq_messages_total", "dramatiq_message_rejects_total"} <= known


@pytest.mark.parametrize("source", ["alerts", "dashboard"])
def test_every_expression_uses_exported_series(source: str) -> None:
    known = _exported_series()
    exprs = [str(r["expr"]) for r in _alert_rules()] if source == "alerts" else _dashboard_exprs()
    assert exprs
    for expr in exprs:
        used = set(SERIES.findall(expr))
        assert used, expr
        assert used <= known, f"unknown series {used - known} in {expr}"


def test_alert_rules_cover_what_ops_asked_for() -> None:
    rules = {str(r["alert"]): r for r in _alert_rules()}
    assert {"DispatcherBacklogGrowing", "DispatcherDeadLetters", "DispatcherMessageErrorRate",
            "DispatcherRequestOverdue"} <= set(rules)
    for name, rule in rules.items():
        labels, annotations = rule["labels"], rule["annotations"]
        assert isinstance(labels, dict) and labels["severity"] in {"critical", "warning", "info"}, name
        assert isinstance(annotations, dict) and annotations["summary"], name
        assert re.fullmatch(r"\d+[smh]", str(rule.get("for", "0s"))), name


def test_dashboard_panels_are_well_formed() -> None:
    dashboard = json.loads((ROOT / "ops/grafana/dispatcher.json").read_text())
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids)) and dashboard["uid"] == "dispatcher-ops"
    for panel in dashboard["panels"]:
        assert {"x", "y", "w", "h"} <= set(panel["gridPos"]) and panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24
