"""The cluster files of the recipes (compose, Kubernetes, systemd) are read by the node's own loader
as they are, refused without ACTORS_CLUSTER_SECRET, and one of them starts a real cluster node."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from server.cluster import ClusterFileError, load_membership
from tests.server.nodes import running_command

from .conftest import BIN, DEPLOY, _free_port, cluster_nodes, request, yaml_documents

SECRET = "x" * 40


def _configmap_file(tmp_path: Path) -> Path:
    (configmap,) = yaml_documents(DEPLOY / "kubernetes" / "configmap.yaml")
    path = tmp_path / "configmap-cluster.toml"
    path.write_text(configmap["data"]["cluster.toml"])
    return path


def cluster_files(tmp_path: Path) -> dict[str, Path]:
    return {
        "compose": DEPLOY / "compose" / "cluster.toml",
        "systemd": DEPLOY / "systemd" / "cluster.toml",
        "kubernetes": _configmap_file(tmp_path),
    }


@pytest.mark.parametrize("recipe", ["compose", "systemd", "kubernetes"])
def test_the_node_reads_the_recipes_cluster_file_only_with_the_secret_variable(
    recipe: str, tmp_path: Path
) -> None:
    path = cluster_files(tmp_path)[recipe]
    nodes = cluster_nodes(path.read_text())
    first = nodes[0][0]
    with pytest.raises(ClusterFileError, match=r"no secret .*ACTORS_CLUSTER_SECRET"):
        load_membership(path, first, environ={})
    membership = load_membership(path, first, environ={"ACTORS_CLUSTER_SECRET": SECRET})
    assert [(m.id, m.url) for m in membership.members] == sorted(nodes)
    assert membership.secret == SECRET.encode()


def test_a_node_started_as_compose_starts_it_joins_the_cluster_of_its_file(tmp_path: Path) -> None:
    """compose's variables and cluster file, with the URLs moved to free loopback ports (the
    tests' network policy): the node serves, lists the file's members, and is not ready while its
    peers are down."""
    text = (DEPLOY / "compose" / "cluster.toml").read_text()
    ports = [_free_port() for _ in cluster_nodes(text)]
    urls = iter(ports)
    text = re.sub(r'url = "http://[^"]+"', lambda _: f'url = "http://127.0.0.1:{next(urls)}"', text)
    (tmp_path / "cluster.toml").write_text(text)
    env = {
        "PATH": os.environ["PATH"],
        "ACTORS_CLUSTER": str(tmp_path / "cluster.toml"),
        "ACTORS_NODE_ID": "n1",
        "ACTORS_CLUSTER_SECRET": SECRET,
        "ACTORS_HOST": "127.0.0.1",
        "ACTORS_PORT": str(ports[0]),
        "ACTORS_DATA_DIR": str(tmp_path / "data"),
    }
    with running_command([str(BIN / "actors"), "serve"], env, tmp_path / "node.log") as node:
        assert request(node.url, "/healthz").status == 200
        assert request(node.url, "/readyz").status == 503  # n2 and n3 were never reached
        cluster = request(node.url, "/v1/cluster").json()
        assert [n["node"] for n in cluster["nodes"]] == ["n1", "n2", "n3"]
