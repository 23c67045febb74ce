"""Shared helpers of the deploy/ checks: where the recipes are, the ecosystem tools, a live node.

Policy (beside ``tests/conftest.py``'s): the recipes are checked with the tools their ecosystems use
(hadolint, kubernetes-validate, promtool, systemd-analyze, docker compose), never a stand-in. A tool
that is missing skips its test with the reason; under CI (``CI=true``) it fails instead, because
``scripts/test`` installs every one of them (docker alone is never installed: its checks skip).
Names a recipe uses (variables, flags, metrics) are compared with what the code really offers:
``actors serve --help`` and the ``/metrics`` of real nodes, one with a cluster file and one in an
etcd membership. The etcd is a real one (``tests/cluster/etcd_server.py``), shared by the session:
each test that uses it has its own key prefix.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.cluster.etcd_server import EtcdServer, running_etcd
from tests.server.nodes import Client, Reply, running_command, running_node

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
#: the venv's console scripts (``actors``, ``hadolint``, ``kubernetes-validate``)
BIN = Path(sys.executable).parent
IN_CI = os.environ.get("CI") == "true"
#: ``actors._lifetime.DRAIN_TIMEOUT_SECONDS``: every stop grace period must be longer
DRAIN_TIMEOUT_SECONDS = 30.0

#: Metrics the recipes may read that no node exports yet. Each must be missing: once a node exports
#: it, remove it here, so the check covers it like any other (a metric that lands under another name
#: then fails the check instead of hiding). Empty: the recipes read only what nodes export.
PENDING_METRICS: dict[str, str] = {}
#: the cluster secret of the nodes the checks start (the recipes leave theirs for the operator)
SECRET = "x" * 40


def tool(name: str, why: str) -> str:
    """The path of an ecosystem tool; skip (fail under CI) when it is not installed."""
    path = shutil.which(name, path=os.pathsep.join([str(BIN), os.environ.get("PATH", "")]))
    if path is None:
        message = f"{name} is not installed ({why})"
        if IN_CI:
            pytest.fail(f"{message}: under CI a missing tool fails the check instead of skipping it")
        pytest.skip(message)
    return path


def run(*argv: str, cwd: Path = DEPLOY, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False)


#: the commands whose ``--help`` the checks read
HELP_COMMANDS = (
    ("serve",),
    ("objects", "list"),
    ("objects", "export"),
    ("objects", "delete"),
    ("call",),
    ("cluster", "nodes"),
    ("cluster", "leave"),
    ("cluster", "remove"),
)
_HELP_SCRIPT = """
import sys
from server.cli import main
for argv in sys.argv[1:]:
    try:
        main([*argv.split(), "--help"])
    except SystemExit:
        pass
    print("\\0", flush=True)
"""


@pytest.fixture(scope="session")
def help_texts() -> dict[tuple[str, ...], str]:
    """``actors <command> --help`` of each of HELP_COMMANDS, unwrapped: the console script's own
    ``main``, run once in a fresh interpreter for all of them (each start costs a second)."""
    env = {**os.environ, "COLUMNS": "1000"}
    commands = [" ".join(command) for command in HELP_COMMANDS]
    result = subprocess.run(
        [sys.executable, "-c", _HELP_SCRIPT, *commands], capture_output=True, text=True, env=env, timeout=60
    )
    assert result.returncode == 0, result.stderr
    texts = result.stdout.split("\0\n")
    assert len(texts) == len(HELP_COMMANDS) + 1, result.stdout
    return dict(zip(HELP_COMMANDS, texts, strict=False))


@pytest.fixture(scope="session")
def serve_help(help_texts: dict[tuple[str, ...], str]) -> str:
    return help_texts["serve",]


def has_flag(help_text: str, flag: str) -> bool:
    return re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", help_text) is not None


@pytest.fixture(scope="session")
def documented_variables(help_texts: dict[tuple[str, ...], str]) -> set[str]:
    """ACTORS_* variables that ``actors serve``/``objects``/``call`` document, or that the node's
    source names literally (a variable read outside the flag table, like ACTORS_CLUSTER_SECRET)."""
    texts = [*help_texts.values(), *(path.read_text() for path in (REPO / "server").rglob("*.py"))]
    return {name for text in texts for name in re.findall(r"\bACTORS_[A-Z0-9_]+\b", text)}


#### Files


def yaml_documents(path: Path) -> list[Any]:
    import yaml

    with path.open() as file:
        return [doc for doc in yaml.safe_load_all(file) if doc is not None]


def cluster_nodes(text: str) -> list[tuple[str, str]]:
    """``(id, url)`` of each ``[[nodes]]`` entry of a deploy cluster file, checking its shape.

    The deploy files carry no ``secret``: the nodes get it from ACTORS_CLUSTER_SECRET only, so a
    node whose variable is missing stops at start instead of using a secret in a readable file.
    """
    data = tomllib.loads(text)
    assert set(data) == {"nodes"}, data.keys()
    nodes = [(node["id"], node["url"]) for node in data["nodes"]]
    assert all(set(node) == {"id", "url"} for node in data["nodes"])
    assert len({i for i, _ in nodes}) == len(nodes)
    assert len({u for _, u in nodes}) == len(nodes)
    return nodes


def env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines of an env file (systemd's EnvironmentFile, compose's env_file)."""
    values = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip()
    return values


#### Live nodes


def request(url: str, path: str, *, method: str = "GET") -> Reply:
    """One blocking HTTP request on a fresh connection."""
    client = Client(url)
    try:
        return client.request(method, path)
    finally:
        client.close()


def metric_names_exported(text: str) -> set[str]:
    """Every series name a Prometheus text exposition can have, from its TYPE lines and samples
    (a histogram ``h`` has ``h_bucket``, ``h_sum``, ``h_count``), so a family with no sample yet
    (a labelled counter nobody bumped) still counts."""
    names = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            names.add(name)
            if kind in ("histogram", "summary"):
                names.update({f"{name}_bucket", f"{name}_sum", f"{name}_count"})
            if kind == "counter" and not name.endswith("_total"):
                names.add(f"{name}_total")
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return names


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_ready(url: str, timeout: float = 20.0) -> None:
    """Until ``/readyz`` answers 200 (an etcd node: once its holds and lease are in etcd)."""
    deadline = time.monotonic() + timeout
    while (status := request(url, "/readyz").status) != 200:
        assert time.monotonic() < deadline, f"{url}/readyz still answers {status} after {timeout} s"
        time.sleep(0.05)


@pytest.fixture(scope="session")
def etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdServer]:
    """A real etcd for the session (skipped where etcd is not installed, failed under CI)."""
    with running_etcd(tmp_path_factory.mktemp("etcd")) as server:
        yield server


@pytest.fixture(scope="session")
def file_node_scrape(tmp_path_factory: pytest.TempPathFactory) -> str:
    """``/metrics`` of ``n1`` of a two-node cluster file whose ``n2`` is down, so the peer metrics
    have a peer to describe, after one call."""
    root = tmp_path_factory.mktemp("metrics")
    port, peer = free_port(), free_port()
    (root / "cluster.toml").write_text(
        f'secret = "{"s" * 40}"\n'
        f'[[nodes]]\nid = "n1"\nurl = "http://127.0.0.1:{port}"\n'
        f'[[nodes]]\nid = "n2"\nurl = "http://127.0.0.1:{peer}"\n'
    )
    flags = ["--port", str(port), "--cluster", str(root / "cluster.toml"), "--node-id", "n1"]
    with running_node(root / "data", *flags) as node:
        request(node.url, "/counter/deploy-check/increment", method="POST")  # fill the call families
        reply = request(node.url, "/metrics")
    assert reply.status == 200
    return reply.body.decode()


def etcd_node_env(etcd: EtcdServer, prefix: str, node_id: str, port: int, data_dir: Path) -> dict[str, str]:
    """The variables of a node in an etcd membership on loopback (the tests' network policy)."""
    return {
        "PATH": os.environ["PATH"],
        "ACTORS_ETCD": etcd.url,
        "ACTORS_ETCD_PREFIX": prefix,
        "ACTORS_NODE_ID": node_id,
        "ACTORS_ADVERTISE": f"http://127.0.0.1:{port}",
        "ACTORS_CLUSTER_SECRET": SECRET,
        "ACTORS_HOST": "127.0.0.1",
        "ACTORS_PORT": str(port),
        "ACTORS_DATA_DIR": str(data_dir),
    }


@pytest.fixture(scope="session")
def etcd_node_scrape(tmp_path_factory: pytest.TempPathFactory, etcd: EtcdServer) -> str:
    """``/metrics`` of a ready node alone in an etcd membership (defaults for the lease), after one
    call."""
    root = tmp_path_factory.mktemp("etcd-metrics")
    env = etcd_node_env(etcd, "/deploy-metrics/", "e1", free_port(), root / "data")
    with running_command([str(BIN / "actors"), "serve"], env, root / "node.log") as node:
        wait_ready(node.url)
        request(node.url, "/counter/deploy-check/increment", method="POST")
        reply = request(node.url, "/metrics")
    assert reply.status == 200
    return reply.body.decode()


@pytest.fixture(scope="session")
def exported_metrics(file_node_scrape: str, etcd_node_scrape: str) -> set[str]:
    """Metric names real nodes export, with a cluster file or in an etcd membership."""
    return metric_names_exported(file_node_scrape) | metric_names_exported(etcd_node_scrape)


@pytest.fixture(scope="session")
def allowed_missing_metrics(exported_metrics: set[str]) -> set[str]:
    landed = PENDING_METRICS.keys() & exported_metrics
    assert not landed, f"nodes export {sorted(landed)} now: remove them from PENDING_METRICS"
    return set(PENDING_METRICS)
