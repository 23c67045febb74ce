"""deploy/prometheus/: promtool checks the configs and rules and runs the rules' unit tests; every
metric the rules read is one a real node exports; every alert has a summary and a runbook entry."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

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


#: the alerts of membership on etcd, and the series they read
ETCD_ALERTS = ("ActorsLeaseFenced", "ActorsLeaseAboutToLapse", "ActorsHandoffStuck", "ActorsEpochDisagree")
ETCD_SERIES = re.compile(r"^(actors_(?:lease_\w+|handoff_\w+|cluster_epoch))(\{[^}]*\})? (\S+)$", re.M)


def test_healthy_real_nodes_keep_the_etcd_alerts_quiet(
    file_node_scrape: str, etcd_node_scrape: str, tmp_path: Path
) -> None:
    """The etcd alerts' series as a node with a cluster file and a ready node in an etcd
    membership export them, held for 30 minutes: none of the etcd alerts fires (the file node's
    zeros must not look like a lapsing lease, nor its epoch like a disagreement with the other's)."""
    series = []
    for job, text in (("actors-file", file_node_scrape), ("actors-etcd", etcd_node_scrape)):
        found = ETCD_SERIES.findall(text)
        assert {name for name, _, _ in found} >= {"actors_lease_fenced", "actors_lease_fence_seconds"}
        for name, labels, value in found:
            inner = ", ".join(filter(None, [f'job="{job}", instance="{job}-1"', labels.strip("{}")]))
            series.append({"series": f"{name}{{{inner}}}", "values": f"{float(value)}x30"})
    tests = {
        "rule_files": [str(PROMETHEUS / "alerts.yml")],
        "evaluation_interval": "1m",
        "tests": [{
            "name": "healthy real nodes",
            "interval": "1m",
            "input_series": series,
            "alert_rule_test": [
                {"eval_time": when, "alertname": name, "exp_alerts": []}
                for name in ETCD_ALERTS for when in ("1m", "15m", "30m")
            ],
        }],
    }  # fmt: skip
    (tmp_path / "real.test.yml").write_text(yaml.safe_dump(tests))
    result = run(promtool(), "test", "rules", "real.test.yml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_ready_etcd_node_is_unfenced_with_its_fence_further_than_the_alerts_threshold(
    etcd_node_scrape: str,
) -> None:
    values = {
        name: float(value) for name, labels, value in ETCD_SERIES.findall(etcd_node_scrape) if not labels
    }
    assert values["actors_lease_fenced"] == 0
    # --lease-ttl 10 --lease-margin 3: at most 7 s, and above 2 s while renewals succeed
    assert 2 < values["actors_lease_fence_seconds"] <= 7
    assert values["actors_cluster_epoch"] >= 1
    assert values["actors_handoff_pending_objects"] == 0
