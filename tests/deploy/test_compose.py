"""deploy/compose.yaml: ``docker compose config`` where docker is installed (never here, and
scripts/test does not install it), and the file's agreement with its cluster file, env file and
the files it mounts."""

from __future__ import annotations

import shutil
import subprocess
import tomllib
from typing import Any

import pytest

from .conftest import DEPLOY, DRAIN_TIMEOUT_SECONDS, REPO, cluster_nodes, env_file, run, yaml_documents

COMPOSE = DEPLOY / "compose.yaml"
NODES = ("n1", "n2", "n3")


def compose() -> Any:
    (doc,) = yaml_documents(COMPOSE)
    return doc


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


def test_each_node_has_its_volume_its_id_and_the_port_its_cluster_entry_names() -> None:
    services = compose()["services"]
    mount = "./compose/cluster.toml:/etc/actors/cluster.toml:ro"
    nodes = dict(cluster_nodes((DEPLOY / "compose" / "cluster.toml").read_text()))
    assert set(nodes) == set(NODES)
    for name in NODES:
        service = services[name]
        env = service["environment"]
        port = env["ACTORS_PORT"]
        assert env["ACTORS_NODE_ID"] == name
        assert nodes[name] == f"http://{service['hostname']}:{port}"
        assert service["ports"] == [f"127.0.0.1:{port}:{port}"]  # the URL works from the host too
        assert env["ACTORS_URL"] == f"http://127.0.0.1:{port}"
        assert service["volumes"] == [f"{name}-data:/data", mount]
        assert env["ACTORS_CLUSTER"] == mount.split(":")[1]
        assert service["stop_grace_period"] == "45s"
        assert DRAIN_TIMEOUT_SECONDS < 45
        assert service["build"] == {"context": "..", "dockerfile": "deploy/Containerfile"}
        (env_path,) = service["env_file"]
        assert len(env_file(DEPLOY / env_path)["ACTORS_CLUSTER_SECRET"]) >= 32
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
    nodes = tomllib.loads((DEPLOY / "compose" / "cluster.toml").read_text())["nodes"]
    assert job["static_configs"][0]["targets"] == [node["url"].removeprefix("http://") for node in nodes]
