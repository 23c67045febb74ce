"""deploy/prometheus/: promtool checks the configs and rules and runs the rules' unit tests; every
metric the rules read is one a real node exports; every alert has a summary and a runbook entry."""

from __future__ import annotations

import re
from typing import Any

from .conftest import DEPLOY, run, tool, yaml_documents
from .promql import metric_names

PROMETHEUS = DEPLOY / "prometheus"
#: metrics the rules read that no actors node exports, and who does
EXTERNAL = {
    "up": "Prometheus itself, per scrape target",
    "node_filesystem_avail_bytes": "node_exporter",
    "node_filesystem_size_bytes": "node_exporter",
    "kubelet_volume_stats_available_bytes": "the kubelet",
    "kubelet_volume_stats_capacity_bytes": "the kubelet",
}


def promtool() -> str:
    return tool("promtool", "Debian's prometheus package; scripts/test installs it")


def rules() -> list[dict[str, Any]]:
    (doc,) = yaml_documents(PROMETHEUS / "alerts.yml")
    return [rule for group in doc["groups"] for rule in group["rules"]]


def test_promtool_accepts_both_configs_and_their_rules() -> None:
    result = run(promtool(), "check", "config", "prometheus.yml", "prometheus-kubernetes.yml", cwd=PROMETHEUS)
    assert result.returncode == 0, result.stdout + result.stderr
    result = run(promtool(), "check", "rules", "alerts.yml", cwd=PROMETHEUS)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_alerts_fire_and_stay_quiet_as_their_unit_tests_say() -> None:
    result = run(promtool(), "test", "rules", "alerts.test.yml", cwd=PROMETHEUS)
    assert result.returncode == 0, result.stdout + result.stderr
    # every alert has a test that makes it fire
    (tests,) = yaml_documents(PROMETHEUS / "alerts.test.yml")
    fired = {
        case["alertname"] for test in tests["tests"] for case in test["alert_rule_test"] if case["exp_alerts"]
    }
    assert fired == {rule["alert"] for rule in rules()}


def test_every_metric_the_rules_read_is_exported_by_a_node(
    exported_metrics: set[str], allowed_missing_metrics: set[str]
) -> None:
    read = {name for rule in rules() for name in metric_names(rule["expr"])}
    assert {"up", "actors_calls_total", "actors_peer_up"} <= read  # the extraction works
    missing = read - exported_metrics - allowed_missing_metrics - EXTERNAL.keys()
    assert not missing, f"alerts.yml reads metrics no node exports: {sorted(missing)}"


def test_every_alert_has_a_summary_and_a_runbook_entry_in_the_readme() -> None:
    readme = (DEPLOY / "README.md").read_text()
    headings = {_slug(line.lstrip("#")) for line in readme.splitlines() if line.startswith("#")}
    for rule in rules():
        annotations = rule["annotations"]
        assert annotations["summary"]
        anchor = "deploy/README.md#" + _slug(rule["alert"])
        assert annotations["runbook"] == anchor
        assert _slug(rule["alert"]) in headings, f"deploy/README.md has no heading for {rule['alert']}"
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}


def _slug(heading: str) -> str:
    """A heading's anchor as GitHub makes it."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")
