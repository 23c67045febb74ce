"""deploy/grafana/: the dashboard and its provisioning parse, promtool parses every panel's query,
and every metric a query reads is one a real node exports."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

from .conftest import DEPLOY, run, tool, yaml_documents
from .promql import metric_names
from .test_prometheus import EXTERNAL

GRAFANA = DEPLOY / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "actors.json"
#: Grafana's variables, as promtool will see them
VARIABLES = {"$__rate_interval": "1m", "$__interval": "1m", "$instance": ".*"}


def dashboard() -> Any:
    return json.loads(DASHBOARD.read_text())


def queries() -> list[str]:
    panels = [p for p in dashboard()["panels"] if p["type"] != "row"]
    return [target["expr"] for panel in panels for target in panel["targets"]]


def template_metrics() -> set[str]:
    names = set()
    for variable in dashboard()["templating"]["list"]:
        if variable["type"] == "query":
            match = re.fullmatch(r"label_values\((.+),\s*\w+\)", variable["definition"])
            assert match, variable["definition"]
            names |= metric_names(match.group(1))
    return names


def test_the_dashboard_covers_what_an_operator_watches() -> None:
    titles = " | ".join(p["title"] for p in dashboard()["panels"]).lower()
    topics = ("calls/s", "latency", "live objects", "commits", "turns per commit", "websocket", "peer")
    for topic in (*topics, "epoch", "handoff", "lease"):
        assert topic in titles, topic
    panels = [p for p in dashboard()["panels"] if p["type"] != "row"]
    ids = [p["id"] for p in dashboard()["panels"]]
    assert len(ids) == len(set(ids))
    assert all(p["datasource"]["uid"] == "${datasource}" and p["targets"] for p in panels)


def test_the_provisioning_points_at_the_dashboard_folder() -> None:
    (provider,) = yaml_documents(GRAFANA / "provisioning" / "dashboards" / "actors.yaml")[0]["providers"]
    (datasource,) = yaml_documents(GRAFANA / "provisioning" / "datasources" / "prometheus.yaml")[0][
        "datasources"
    ]
    assert datasource["type"] == "prometheus"
    (compose,) = yaml_documents(DEPLOY / "compose.yaml")
    mounts = compose["services"]["grafana"]["volumes"]
    assert f"./grafana/dashboards:{provider['options']['path']}:ro" in mounts


def test_promtool_parses_every_panel_query(tmp_path: Path) -> None:
    promtool = tool("promtool", "Debian's prometheus package; scripts/test installs it")
    exprs = []
    for expr in queries():
        for variable, value in VARIABLES.items():
            expr = expr.replace(variable, value)
        exprs.append(expr)
    rules = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard:query_{i}", "expr": expr} for i, expr in enumerate(exprs)
    ]}]}  # fmt: skip
    (tmp_path / "queries.yml").write_text(yaml.safe_dump(rules))
    result = run(promtool, "check", "rules", "queries.yml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_metric_the_dashboard_reads_is_exported_by_a_node(
    exported_metrics: set[str], allowed_missing_metrics: set[str]
) -> None:
    read = template_metrics().union(*map(metric_names, queries()))
    assert "actors_live_objects" in read
    assert "actors_peer_forward_duration_seconds_bucket" in read
    missing = read - exported_metrics - allowed_missing_metrics - EXTERNAL.keys()
    assert not missing, f"the dashboard reads metrics no node exports: {sorted(missing)}"
