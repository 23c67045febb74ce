"""deploy/compose.yaml: ``docker compose config`` where docker is installed (never here, and
scripts/test does not install it), the file's agreement with its etcd service, env file and the
files it mounts, and its three nodes' environments started here as a real cluster on a real etcd."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from tests.cluster.etcd_server import EtcdServer
from tests.server.nodes import running_command

from .conftest import (
    BIN,
    DEPLOY,
    DRAIN_TIMEOUT_SECONDS,
    REPO,
    SECRET,
    env_file,
    free_port,
    request,
    run,
    wait_ready,
    yaml_documents,
)

COMPOSE = DEPLOY / "compose.yaml"
NODES = ("n1", "n2", "n3")


def compose() -> Any:
    (doc,) = yaml_documents(COMPOSE)
    return doc


def node_env(name: str) -> dict[str, str]:
    """A node service's variables as compose gives them: its env file, overridden by
    ``environment``."""
    service = compose()["services"][name]
    env: dict[str, str] = {}
    for path in service["env_file"]:
        env |= env_file(DEPLOY / path)
    return env | {key: str(value) for key, value in service["environment"].items()}


def etcd_flags() -> dict[str, str]:
    command = compose()["services"]["etcd"]["command"]
    return dict(arg.removeprefix("--").split("=", 1) for arg in command[1:])


def _docker_compose() -> str:
    docker = shutil.which("docker")
    if docker is None:
        pytest.skip("docker is not installed (scripts/test does not install a container engine)")
    version = subprocess.run([docker, "compose", "version"], capture_output=True, timeout=30, check=False)
    if version.returncode != 0:
        pytest.skip("`docker compose version` fails: the compose plugin is not installed")
    return docker


def test_docker_compose_accepts_the_file() -> None:
    docker = _docker_compose()
    result = run(docker, "compose", "-f", str(COMPOSE), "config", "--quiet")
    assert result.returncode == 0, result.stderr


def test_etcd_is_one_pinned_3_5_member_with_its_volume_and_a_health_check() -> None:
    etcd = compose()["services"]["etcd"]
    assert re.fullmatch(r"gcr\.io/etcd-development/etcd:v3\.5\.\d+", etcd["image"]), etcd["image"]
    assert etcd["command"][0] == "/usr/local/bin/etcd"
    flags = etcd_flags()
    assert etcd["volumes"] == [f"etcd-data:{flags['data-dir']}"]
    assert "etcd-data" in compose()["volumes"]
    assert flags["initial-cluster"] == f"{flags['name']}={flags['initial-advertise-peer-urls']}"
    # exec form: the image has no shell
    assert etcd["healthcheck"]["test"][:2] == ["CMD", "/usr/local/bin/etcdctl"]
    assert etcd["healthcheck"]["test"][-2:] == ["endpoint", "health"]


def test_each_node_joins_etcd_under_its_id_and_advertises_its_published_port() -> None:
    services = compose()["services"]
    etcd_url = etcd_flags()["advertise-client-urls"]
    assert etcd_url == f"http://{services['etcd']['hostname']}:2379"
    assert etcd_flags()["listen-client-urls"].endswith(":2379")
    for name in NODES:
        service = services[name]
        env = node_env(name)
        port = env["ACTORS_PORT"]
        assert env["ACTORS_NODE_ID"] == name
        assert env["ACTORS_ETCD"] == etcd_url
        assert env["ACTORS_ADVERTISE"] == f"http://{service['hostname']}:{port}"
        assert "ACTORS_CLUSTER" not in env  # membership is in etcd, not in a file
        assert service["ports"] == [f"127.0.0.1:{port}:{port}"]  # the URL works from the host too
        assert env["ACTORS_URL"] == f"http://127.0.0.1:{port}"
        assert service["volumes"] == [f"{name}-data:/data"]
        assert service["depends_on"] == {"etcd": {"condition": "service_healthy"}}
        assert service["stop_grace_period"] == "45s"
        assert DRAIN_TIMEOUT_SECONDS < 45
        assert service["build"] == {"context": "..", "dockerfile": "deploy/Containerfile"}
        assert len(env["ACTORS_CLUSTER_SECRET"].encode()) >= 16  # the node's minimum
    assert (DEPLOY / ".." / "deploy" / "Containerfile").resolve() == REPO / "deploy" / "Containerfile"


def test_monitoring_mounts_existing_files_and_scrapes_every_node() -> None:
    services = compose()["services"]
    for name in ("prometheus", "grafana"):
        assert services[name]["profiles"] == ["monitoring"]
        for volume in services[name]["volumes"]:
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (DEPLOY / source).exists(), volume
    (config,) = yaml_documents(DEPLOY / "prometheus" / "prometheus.yml")
    (job,) = config["scrape_configs"]
    advertised = [node_env(name)["ACTORS_ADVERTISE"].removeprefix("http://") for name in NODES]
    assert job["static_configs"][0]["targets"] == advertised


def test_the_three_compose_nodes_form_a_cluster_on_a_real_etcd(etcd: EtcdServer, tmp_path: Path) -> None:
    """Each node's compose environment, with etcd's and the nodes' URLs moved to loopback and free
    ports (the tests' network policy) and a data folder each: all three join and become ready, each
    lists the three, calls through one node reach objects on every node, and ``actors cluster
    nodes --etcd`` lists three active members."""
    prefix = "/deploy-compose/"
    ports = {name: free_port() for name in NODES}
    with ExitStack() as stack:
        nodes = {}
        for name in NODES:
            env = node_env(name) | {
                "PATH": os.environ["PATH"],
                "ACTORS_ETCD": etcd.url,
                "ACTORS_ETCD_PREFIX": prefix,
                "ACTORS_ADVERTISE": f"http://127.0.0.1:{ports[name]}",
                "ACTORS_CLUSTER_SECRET": SECRET,
                "ACTORS_HOST": "127.0.0.1",
                "ACTORS_PORT": str(ports[name]),
                "ACTORS_DATA_DIR": str(tmp_path / name),
            }
            command = [str(BIN / "actors"), "serve"]
            nodes[name] = stack.enter_context(running_command(command, env, tmp_path / f"{name}.log"))
        for node in nodes.values():
            wait_ready(node.url)
        for node in nodes.values():
            listed = {n["node"] for n in request(node.url, "/v1/cluster").json()["nodes"]}
            assert listed == set(NODES)
        for i in range(24):  # placement hashes the ids and node ids only: the same owners every run
            reply = request(nodes["n1"].url, f"/counter/compose-{i}/increment", method="POST")
            assert reply.status == 200, reply.body
            assert reply.json() == {"value": 1}
        view = subprocess.run(
            [sys.executable, "-m", "server.cli", "cluster", "nodes", "--etcd", etcd.url, "--json"],
            capture_output=True, text=True, timeout=60, check=False,
            env={**os.environ, "ACTORS_ETCD_PREFIX": prefix},
        )  # fmt: skip
        assert view.returncode == 0, view.stderr
        members = json.loads(view.stdout)["nodes"]
        assert [(m["id"], m["state"], m["alive"]) for m in members] == [(n, "active", True) for n in NODES]
        rows = request(nodes["n2"].url, "/v1/cluster/nodes").json()["nodes"]
        assert all(row["objects"] > 0 and row["to_move"] == 0 for row in rows), rows
        assert sum(row["objects"] for row in rows) == 24
        assert len({row["epoch"] for row in rows}) == 1, rows
