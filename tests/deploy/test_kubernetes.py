"""deploy/kubernetes/: the manifests validate against the Kubernetes schemas, and agree with each
other, with the image and with the node (ids, DNS names, ports, probes, drain bound)."""

from __future__ import annotations

from typing import Any

import pytest

from .conftest import DEPLOY, DRAIN_TIMEOUT_SECONDS, cluster_nodes, run, tool, yaml_documents
from .test_container import image_env

MANIFESTS = sorted((DEPLOY / "kubernetes").glob("*.yaml"))
#: the oldest Kubernetes the manifests claim (persistentVolumeClaimRetentionPolicy is on from 1.27)
OLDEST = "1.27.0"


def resources() -> dict[tuple[str, str], Any]:
    found = {}
    for path in MANIFESTS:
        for doc in yaml_documents(path):
            found[doc["kind"], doc["metadata"]["name"]] = doc
    return found


@pytest.mark.parametrize("version", [OLDEST, None], ids=["oldest", "newest-known"])
def test_the_manifests_validate_against_the_kubernetes_schemas(version: str | None) -> None:
    validate = tool("kubernetes-validate", "PyPI's kubernetes-validate, in the test extras")
    flags = ["--kubernetes-version", version] if version else []
    result = run(validate, "--strict", *flags, *map(str, MANIFESTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count(" passed ") == len(resources())


def test_the_cluster_file_lists_each_pod_by_name_at_its_stable_dns_name() -> None:
    found = resources()
    sts = found["StatefulSet", "actors"]
    service = found["Service", sts["spec"]["serviceName"]]
    assert service["spec"]["clusterIP"] == "None"
    # Unready pods must resolve: a node is ready only once it has reached its peers.
    assert service["spec"]["publishNotReadyAddresses"] is True
    assert sts["spec"]["podManagementPolicy"] == "Parallel"
    port = image_env()["ACTORS_PORT"]
    name, replicas = sts["metadata"]["name"], sts["spec"]["replicas"]
    nodes = cluster_nodes(found["ConfigMap", "actors-cluster"]["data"]["cluster.toml"])
    assert nodes == [
        (f"{name}-{i}", f"http://{name}-{i}.{service['metadata']['name']}:{port}") for i in range(replicas)
    ]


def test_the_pods_get_their_id_cluster_file_secret_and_volume() -> None:
    found = resources()
    pod = found["StatefulSet", "actors"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    env = {item["name"]: item for item in container["env"]}
    assert env["ACTORS_NODE_ID"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert env["ACTORS_CLUSTER_SECRET"]["valueFrom"]["secretKeyRef"]["name"] == "actors"
    mounts = {mount["name"]: mount["mountPath"] for mount in container["volumeMounts"]}
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    assert volumes["cluster"]["configMap"]["name"] in {n for _, n in found}
    assert env["ACTORS_CLUSTER"]["value"] == mounts["cluster"] + "/cluster.toml"
    claim = found["StatefulSet", "actors"]["spec"]["volumeClaimTemplates"][0]["metadata"]["name"]
    assert mounts[claim] == image_env()["ACTORS_DATA_DIR"]
    assert pod["securityContext"]["runAsUser"] == pod["securityContext"]["fsGroup"] == 10001  # the image's
    assert container["resources"]["requests"].keys() == {"cpu", "memory"}


def test_probes_grace_period_and_disruption_budget_follow_the_node() -> None:
    found = resources()
    pod = found["StatefulSet", "actors"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert pod["terminationGracePeriodSeconds"] > DRAIN_TIMEOUT_SECONDS
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["ports"][0]["containerPort"] == int(image_env()["ACTORS_PORT"])
    budget = found["PodDisruptionBudget", "actors"]["spec"]
    assert budget["maxUnavailable"] == 1
    assert (
        budget["selector"]["matchLabels"] == found["StatefulSet", "actors"]["spec"]["selector"]["matchLabels"]
    )
    retention = found["StatefulSet", "actors"]["spec"]["persistentVolumeClaimRetentionPolicy"]
    assert retention == {"whenDeleted": "Retain", "whenScaled": "Retain"}  # the only copy of the data
