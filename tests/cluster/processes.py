"""Clusters of real node processes on 127.0.0.1 for the tests, every wait bounded, always stopped.

A cluster file lists each node with a port picked free just before the start (the nodes bind it
themselves; the file must name it first). ``running_cluster`` (blocking, for module fixtures) and
``Cluster`` (trio, for tests that kill and restart nodes) both stop every process they started
(SIGTERM, then SIGKILL) even when a test fails.
"""

from __future__ import annotations

import signal
import socket
import subprocess
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import trio

from tests.server.nodes import (
    ENV,
    STARTUP_TIMEOUT,
    STOP_TIMEOUT,
    Node,
    Reply,
    _read_url,
    _read_url_blocking,
    command,
    fetch,
    stop_process,
)

SECRET = "test-cluster-secret-0123456789"
APP = "tests.server.probe_app:app"


def free_ports(count: int) -> list[int]:
    """``count`` distinct ports free now (held open together so the kernel gives distinct ones)."""
    probes = [socket.socket() for _ in range(count)]
    try:
        for probe in probes:
            probe.bind(("127.0.0.1", 0))
        return [probe.getsockname()[1] for probe in probes]
    finally:
        for probe in probes:
            probe.close()


def write_cluster_file(path: Path, ports: dict[str, int], secret: str = SECRET) -> Path:
    lines = [f'secret = "{secret}"']
    for node_id, port in ports.items():
        lines += ["[[nodes]]", f'id = "{node_id}"', f'url = "http://127.0.0.1:{port}"']
    path.write_text("\n".join(lines) + "\n")
    return path


def node_command(base: Path, node_id: str, port: int, cluster_file: Path, *flags: str) -> list[str]:
    data_dir = base / node_id
    data_dir.mkdir(parents=True, exist_ok=True)
    return [
        *command(data_dir, "--app", APP, *flags),
        "--port", str(port), "--cluster", str(cluster_file), "--node-id", node_id,
    ]  # fmt: skip


async def _poll(node: Node, path: str, done: Callable[[Reply], bool]) -> None:
    """Until ``done(reply)`` for ``GET path`` (a node still starting refuses connections: retried)."""
    while True:
        try:
            if done(await fetch(node.url, "GET", path)):
                return
        except OSError:
            pass
        await trio.sleep(0.05)


async def wait_ready(nodes: list[Node], timeout: float = STARTUP_TIMEOUT) -> None:
    """Until every node's /readyz is 200 (it has reached each of its peers once)."""
    with trio.fail_after(timeout):
        for node in nodes:
            await _poll(node, "/readyz", lambda reply: reply.status == 200)


async def wait_all_up(nodes: list[Node], timeout: float = STARTUP_TIMEOUT) -> None:
    """Until every node sees every other node's link up (``GET /v1/cluster``)."""
    with trio.fail_after(timeout):
        for node in nodes:
            await _poll(node, "/v1/cluster", lambda reply: all(n["up"] for n in reply.json()["nodes"]))


@contextmanager
def running_cluster(base: Path, count: int = 3, *flags: str) -> Iterator[list[Node]]:
    """``count`` nodes ``n1``.. for the block, each SIGTERMed at the end (asserted to exit 0)."""
    ids = [f"n{i}" for i in range(1, count + 1)]
    cluster_file = write_cluster_file(base / "cluster.toml", dict(zip(ids, free_ports(count), strict=True)))
    ports = _ports(cluster_file)
    processes: list[tuple[subprocess.Popen[bytes], Path]] = []
    try:
        for node_id in ids:
            log_path = base / f"{node_id}.log"
            with log_path.open("wb") as log:
                argv = node_command(base, node_id, ports[node_id], cluster_file, *flags)
                processes.append(
                    (subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=log, env=ENV, cwd=base), log_path)
                )
        nodes = [Node(_read_url_blocking(p, log), p, log) for p, log in processes]
        trio.run(wait_ready, nodes)
        yield nodes
        for process, _ in processes:
            process.send_signal(signal.SIGTERM)
        for process, log_path in processes:
            code = process.wait(timeout=STOP_TIMEOUT)
            assert code == 0, f"node exited {code}; log:\n{log_path.read_text()}"
    finally:
        for process, _ in processes:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=STOP_TIMEOUT)
            if process.stdout is not None:
                process.stdout.close()


def _ports(cluster_file: Path) -> dict[str, int]:
    import tomllib

    document = tomllib.loads(cluster_file.read_text())
    return {n["id"]: int(n["url"].rsplit(":", 1)[1]) for n in document["nodes"]}


class Cluster:
    """Nodes the test starts, kills and restarts (same id, port and data folder each time)."""

    def __init__(self, base: Path, count: int, flags: tuple[str, ...]) -> None:
        self.base = base
        self.ids = [f"n{i}" for i in range(1, count + 1)]
        self.cluster_file = write_cluster_file(
            base / "cluster.toml", dict(zip(self.ids, free_ports(count), strict=True))
        )
        self.ports = _ports(self.cluster_file)
        self.flags = flags
        self.processes: dict[str, trio.Process] = {}
        self.nodes: dict[str, Node] = {}
        self._logs: list[Any] = []

    def url(self, node_id: str) -> str:
        return f"http://127.0.0.1:{self.ports[node_id]}"

    async def start(self, node_id: str, *, cluster_file: Path | None = None) -> Node:
        old = self.processes.pop(node_id, None)
        if old is not None:  # a node started again: reap the old process first
            await stop_process(old)
        log_path = self.base / f"{node_id}.log"
        with log_path.open("ab") as log:
            argv = node_command(
                self.base, node_id, self.ports[node_id], cluster_file or self.cluster_file, *self.flags
            )
            process = await trio.lowlevel.open_process(
                argv, stdout=subprocess.PIPE, stderr=log, env=ENV, cwd=self.base
            )
        self.processes[node_id] = process
        with trio.fail_after(STARTUP_TIMEOUT):
            url = await _read_url(process, log_path)
        node = self.nodes[node_id] = Node(url, process, log_path)
        return node

    def kill(self, node_id: str) -> None:
        self.processes[node_id].kill()

    async def stop(self, node_id: str, sig: int = signal.SIGTERM) -> int:
        process = self.processes[node_id]
        if process.returncode is None:
            process.send_signal(sig)
        with trio.fail_after(STOP_TIMEOUT):
            return await process.wait()

    async def close(self) -> None:
        for process in self.processes.values():  # every node drains at once
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes.values():
            await stop_process(process)


@asynccontextmanager
async def open_cluster(base: Path, count: int = 3, *flags: str) -> AsyncIterator[Cluster]:
    """Start ``count`` nodes and wait until all are ready; stop whatever still runs at the end."""
    cluster = Cluster(base, count, flags)
    try:
        async with trio.open_nursery() as nursery:
            for node_id in cluster.ids:
                nursery.start_soon(cluster.start, node_id)
        await wait_ready(list(cluster.nodes.values()))
        yield cluster
    finally:
        await cluster.close()
