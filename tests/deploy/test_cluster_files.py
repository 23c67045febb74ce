"""Membership from a file, the simple alternative the systemd recipe keeps beside etcd: its cluster
file is read by the node's own loader as it is, refused without ACTORS_CLUSTER_SECRET, and the env
file's commented file-mode lines start a real node of that cluster."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from server.cluster import ClusterFileError, load_membership
from tests.server.nodes import running_command

from .conftest import BIN, DEPLOY, SECRET, cluster_nodes, env_file, free_port, request

CLUSTER_FILE = DEPLOY / "systemd" / "cluster.toml"
ENV_FILE = DEPLOY / "systemd" / "actors.env"
#: the variables that select membership in etcd; the file alternative replaces them
ETCD_ONLY = ("ACTORS_ETCD", "ACTORS_ADVERTISE")


def file_mode_env() -> dict[str, str]:
    """actors.env with its file-mode alternative switched on as its comment says: the etcd lines
    commented out, the ``#ACTORS_CLUSTER=``/``#ACTORS_NODE_ID=`` lines uncommented."""
    env = env_file(ENV_FILE)
    for name in ETCD_ONLY:
        env.pop(name)
    alternative = dict(re.findall(r"^#(ACTORS_(?:CLUSTER|NODE_ID))=(\S+)$", ENV_FILE.read_text(), re.M))
    assert set(alternative) == {"ACTORS_CLUSTER", "ACTORS_NODE_ID"}, alternative
    return env | alternative


def test_the_node_reads_the_cluster_file_only_with_the_secret_variable() -> None:
    nodes = cluster_nodes(CLUSTER_FILE.read_text())
    first = nodes[0][0]
    with pytest.raises(ClusterFileError, match=r"no secret .*ACTORS_CLUSTER_SECRET"):
        load_membership(CLUSTER_FILE, first, environ={})
    membership = load_membership(CLUSTER_FILE, first, environ={"ACTORS_CLUSTER_SECRET": SECRET})
    assert [(m.id, m.url) for m in membership.members] == sorted(nodes)
    assert membership.secret == SECRET.encode()


def test_the_env_files_file_mode_names_the_installed_cluster_file_and_one_of_its_nodes() -> None:
    env = file_mode_env()
    assert env["ACTORS_CLUSTER"] == "/etc/actors/" + CLUSTER_FILE.name  # where the README installs it
    assert env["ACTORS_NODE_ID"] in dict(cluster_nodes(CLUSTER_FILE.read_text()))
    assert env["ACTORS_NODE_ID"] == env_file(ENV_FILE)["ACTORS_NODE_ID"]  # one id, either way


def test_a_node_started_in_file_mode_joins_the_cluster_of_its_file(tmp_path: Path) -> None:
    """The env file's file mode, with the cluster file's URLs moved to free loopback ports (the
    tests' network policy): the node serves, lists the file's members, and is not ready while its
    peers are down."""
    text = CLUSTER_FILE.read_text()
    ports = [free_port() for _ in cluster_nodes(text)]
    urls = iter(ports)
    text = re.sub(r'url = "http://[^"]+"', lambda _: f'url = "http://127.0.0.1:{next(urls)}"', text)
    (tmp_path / "cluster.toml").write_text(text)
    env = file_mode_env() | {
        "PATH": os.environ["PATH"],
        "ACTORS_CLUSTER": str(tmp_path / "cluster.toml"),
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
