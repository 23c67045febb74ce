"""deploy/kubernetes/: the manifests validate against the Kubernetes schemas, and agree with each
other, with the image and with the node (ids, DNS names, etcd, ports, probes, drain bound)."""

from __future__ import annotations

import re
from typing import Any

import pytest

from .conftest import DEPLOY, DRAIN_TIMEOUT_SECONDS, run, tool, yaml_documents
from .test_container import image_env

KUBERNETES = DEPLOY / "kubernetes"
#: the recipe (`kubectl apply -f deploy/kubernetes/`) and the single-member etcd for trying it out
MANIFESTS = sorted(KUBERNETES.glob("*.yaml"))
TRY_ETCD = sorted((KUBERNETES / "try-etcd").glob("*.yaml"))
#: the oldest Kubernetes the manifests claim (persistentVolumeClaimRetentionPolicy is on from 1.27)
OLDEST = "1.27.0"


def resources(paths: list[Any] = MANIFESTS) -> dict[tuple[str, str], Any]:
    found = {}
    for path in paths:
        for doc in yaml_documents(path):
            found[doc["kind"], doc["metadata"]["name"]] = doc
    return found


def container() -> Any:
    (actors,) = resources()["StatefulSet", "actors"]["spec"]["template"]["spec"]["containers"]
    return actors


def env_values() -> dict[str, Any]:
    return {item["name"]: item.get("value", item.get("valueFrom")) for item in container()["env"]}


@pytest.mark.parametrize("version", [OLDEST, None], ids=["oldest", "newest-known"])
def test_the_manifests_validate_against_the_kubernetes_schemas(version: str | None) -> None:
    validate = tool("kubernetes-validate", "PyPI's kubernetes-validate, in the test extras")
    flags = ["--kubernetes-version", version] if version else []
    result = run(validate, "--strict", *flags, *map(str, MANIFESTS + TRY_ETCD))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count(" passed ") == len(resources(MANIFESTS + TRY_ETCD))


def test_each_pod_joins_etcd_under_its_name_and_advertises_its_stable_dns_name() -> None:
    found = resources()
    sts = found["StatefulSet", "actors"]
    service = found["Service", sts["spec"]["serviceName"]]
    assert service["spec"]["clusterIP"] == "None"
    # The others must reach a pod that joined before it is ready (handoff, `want`).
    assert service["spec"]["publishNotReadyAddresses"] is True
    names = [item["name"] for item in container()["env"]]
    env = env_values()
    pod_field = {"fieldRef": {"fieldPath": "metadata.name"}}
    assert env["ACTORS_NODE_ID"] == env["POD_NAME"] == pod_field
    assert env["POD_NAMESPACE"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    port = image_env()["ACTORS_PORT"]
    headless = service["metadata"]["name"]
    assert env["ACTORS_ADVERTISE"] == (
        f"http://$(POD_NAME).{headless}.$(POD_NAMESPACE).svc.cluster.local:{port}"
    )
    # $(VAR) is expanded only from variables defined earlier in the list.
    assert names.index("POD_NAME") < names.index("ACTORS_ADVERTISE")
    assert names.index("POD_NAMESPACE") < names.index("ACTORS_ADVERTISE")
    assert "ACTORS_CLUSTER" not in env  # membership is in etcd
    assert not [kind for kind, _ in found if kind == "ConfigMap"]


def test_the_pods_etcd_is_the_try_out_etcds_service_marked_not_for_production() -> None:
    etcd = resources(TRY_ETCD)
    service = etcd["Service", "etcd"]
    (client_port,) = service["spec"]["ports"]
    assert env_values()["ACTORS_ETCD"] == f"http://{service['metadata']['name']}:{client_port['port']}"
    sts = etcd["StatefulSet", "etcd"]
    assert sts["spec"]["replicas"] == 1
    (member,) = sts["spec"]["template"]["spec"]["containers"]
    assert re.fullmatch(r"gcr\.io/etcd-development/etcd:v3\.5\.\d+", member["image"])
    flags = dict(arg.removeprefix("--").split("=", 1) for arg in member["command"][1:])
    assert flags["listen-client-urls"].endswith(f":{client_port['port']}")
    assert {p["name"]: p["containerPort"] for p in member["ports"]}[client_port["targetPort"]] == 2379
    assert "NOT FOR PRODUCTION" in TRY_ETCD[0].read_text()
    # `kubectl apply -f deploy/kubernetes/` (not recursive) must not pick it up
    assert all(path.parent.name == "try-etcd" for path in TRY_ETCD)


def test_the_pods_get_their_secret_and_volume_and_no_pre_stop_leave() -> None:
    found = resources()
    pod = found["StatefulSet", "actors"]["spec"]["template"]["spec"]
    env = env_values()
    assert env["ACTORS_CLUSTER_SECRET"]["secretKeyRef"]["name"] == "actors"
    mounts = {mount["name"]: mount["mountPath"] for mount in container()["volumeMounts"]}
    claim = found["StatefulSet", "actors"]["spec"]["volumeClaimTemplates"][0]["metadata"]["name"]
    assert mounts[claim] == image_env()["ACTORS_DATA_DIR"]
    assert pod["securityContext"]["runAsUser"] == pod["securityContext"]["fsGroup"] == 10001  # the image's
    assert container()["resources"]["requests"].keys() == {"cpu", "memory"}
    # SIGTERM is a drain for a restart; scaling in is `actors cluster leave` first (README).
    assert "lifecycle" not in container()


def test_probes_grace_period_and_disruption_budget_follow_the_node() -> None:
    found = resources()
    pod = found["StatefulSet", "actors"]["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] > DRAIN_TIMEOUT_SECONDS
    assert container()["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container()["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container()["ports"][0]["containerPort"] == int(image_env()["ACTORS_PORT"])
    budget = found["PodDisruptionBudget", "actors"]["spec"]
    assert budget["maxUnavailable"] == 1
    assert (
        budget["selector"]["matchLabels"] == found["StatefulSet", "actors"]["spec"]["selector"]["matchLabels"]
    )
    retention = found["StatefulSet", "actors"]["spec"]["persistentVolumeClaimRetentionPolicy"]
    assert retention == {"whenDeleted": "Retain", "whenScaled": "Retain"}  # the only copy of the data


def test_prometheus_finds_every_pod_through_the_headless_services_srv_records() -> None:
    found = resources()
    service = found["Service", "actors"]
    (port,) = service["spec"]["ports"]
    (config,) = yaml_documents(DEPLOY / "prometheus" / "prometheus-kubernetes.yml")
    (job,) = config["scrape_configs"]
    (sd,) = job["dns_sd_configs"]
    assert sd == {"names": [f"_{port['name']}._tcp.{service['metadata']['name']}"], "type": "SRV",
                  "refresh_interval": "30s"}  # fmt: skip
