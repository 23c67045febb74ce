"""Nodes with their membership in a real etcd, for the tests: start, kill, restart, leave, cut off.

Each node is a real ``actors serve --etcd`` process on 127.0.0.1 with its own data folder and a
port picked free before it starts; its stderr goes to ``<base>/<id>.log`` (appended across
restarts). ``EtcdProxy`` stands between one node and etcd so a test can cut that node off from
etcd (connections black-holed, as in a network partition) without touching the others.
Everything started is stopped at the end (SIGTERM, then SIGKILL), whatever happened.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import trio

from tests.server.nodes import ENV, STARTUP_TIMEOUT, Node, _read_url, command, fetch, stop_process

from .processes import APP, SECRET, free_ports

__all__ = ["EtcdNodes", "EtcdProxy", "open_etcd_nodes"]

#: short leases so that a cut-off node's lease lapses within a test (etcd's minimum is 2 s)
TEST_LEASE_FLAGS = ("--lease-ttl", "4", "--lease-margin", "1.5")


class EtcdNodes:
    """Nodes of one cluster whose membership is in the etcd at ``etcd_url``."""

    def __init__(self, base: Path, etcd_url: str, *flags: str) -> None:
        self.base = base
        self.etcd_url = etcd_url
        self.flags = flags
        self.ports: dict[str, int] = {}
        self.processes: dict[str, trio.Process] = {}
        self.nodes: dict[str, Node] = {}
        #: a node's own way to etcd (a proxy), when the test cuts it off
        self.etcd_for: dict[str, str] = {}
        self.env = {**ENV, "ACTORS_CLUSTER_SECRET": SECRET}

    def url(self, node_id: str) -> str:
        if node_id not in self.ports:
            self.ports[node_id] = free_ports(1)[0]
        return f"http://127.0.0.1:{self.ports[node_id]}"

    def argv(self, node_id: str) -> list[str]:
        url = self.url(node_id)
        data_dir = self.base / node_id
        data_dir.mkdir(parents=True, exist_ok=True)
        etcd = self.etcd_for.get(node_id, self.etcd_url)
        return [
            *command(data_dir, "--app", APP, *TEST_LEASE_FLAGS, *self.flags),
            "--port", str(self.ports[node_id]), "--etcd", etcd, "--node-id", node_id, "--advertise", url,
        ]  # fmt: skip

    async def start(self, node_id: str) -> Node:
        old = self.processes.pop(node_id, None)
        if old is not None:
            await stop_process(old)
        log_path = self.base / f"{node_id}.log"
        with log_path.open("ab") as log:
            process = await trio.lowlevel.open_process(
                self.argv(node_id), stdout=subprocess.PIPE, stderr=log, env=self.env, cwd=self.base
            )
        self.processes[node_id] = process
        with trio.fail_after(STARTUP_TIMEOUT):
            url = await _read_url(process, log_path)
        node = self.nodes[node_id] = Node(url, process, log_path)
        return node

    async def wait_ready(self, *node_ids: str, timeout: float = STARTUP_TIMEOUT) -> None:
        with trio.fail_after(timeout):
            for node_id in node_ids or tuple(self.nodes):
                while True:
                    if (await fetch(self.url(node_id), "GET", "/readyz")).status == 200:
                        break
                    await trio.sleep(0.05)

    def kill(self, node_id: str) -> None:
        self.processes[node_id].kill()

    async def wait_exit(self, node_id: str, timeout: float = 30.0) -> int:
        with trio.fail_after(timeout):
            return await self.processes[node_id].wait()

    async def cli(self, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[bytes]:
        """``actors <args> --etcd <url>`` to its end."""
        argv = [sys.executable, "-m", "server.cli", *args, "--etcd", self.etcd_url]
        with trio.fail_after(timeout):
            return await trio.run_process(
                argv, capture_stdout=True, capture_stderr=True, check=False, env=self.env
            )

    async def nodes_view(self, via: str) -> dict[str, dict[str, object]]:
        """``GET /v1/cluster/nodes`` through ``via``, by node id."""
        reply = await fetch(self.url(via), "GET", "/v1/cluster/nodes")
        assert reply.status == 200, reply.text
        return {row["node"]: row for row in reply.json()["nodes"]}

    async def wait_settled(self, via: str, members: set[str], timeout: float = 60.0) -> None:
        """Until the membership is ``members`` and no node has anything left to hand off."""
        with trio.fail_after(timeout):
            while True:
                try:
                    view = await self.nodes_view(via)
                except (AssertionError, OSError):
                    view = {}
                if set(view) == members and all(row.get("to_move") == 0 for row in view.values()):
                    return
                await trio.sleep(0.1)

    async def close(self) -> None:
        for process in self.processes.values():
            if process.returncode is None:
                process.send_signal(15)
        for process in self.processes.values():
            await stop_process(process)


@asynccontextmanager
async def open_etcd_nodes(base: Path, etcd_url: str, ids: list[str], *flags: str) -> AsyncIterator[EtcdNodes]:
    """Start ``ids`` one after the other (each joins), wait until all are ready; stop all at the end."""
    nodes = EtcdNodes(base, etcd_url, *flags)
    try:
        for node_id in ids:
            await nodes.start(node_id)
        await nodes.wait_ready(*ids)
        yield nodes
    finally:
        await nodes.close()


class EtcdProxy:
    """A TCP proxy to etcd for one node; ``cut()`` black-holes it (a partition), ``heal()`` ends that."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self.cut_off = False
        self._streams: set[trio.SocketStream] = set()
        self._healed = trio.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def serve(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        task_status.started()
        await trio.serve_listeners(self._handle, listeners)

    def cut(self) -> None:
        """Drop every connection; new ones are accepted and never answered, like a dead network."""
        self.cut_off = True
        self._healed = trio.Event()
        for stream in list(self._streams):
            stream.socket.close()

    def heal(self) -> None:
        self.cut_off = False
        self._healed.set()

    async def _handle(self, client: trio.SocketStream) -> None:
        if self.cut_off:
            await self._healed.wait()  # the client's request times out meanwhile
            await client.aclose()
            return
        try:
            upstream = await trio.open_tcp_stream("127.0.0.1", self.target_port)
        except OSError:
            await client.aclose()
            return
        self._streams |= {client, upstream}
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_pump, client, upstream, nursery.cancel_scope)
                nursery.start_soon(_pump, upstream, client, nursery.cancel_scope)
        finally:
            self._streams -= {client, upstream}
            for stream in (client, upstream):
                with trio.move_on_after(1):
                    await stream.aclose()


async def _pump(source: trio.SocketStream, sink: trio.SocketStream, scope: trio.CancelScope) -> None:
    try:
        while data := await source.receive_some(65536):
            await sink.send_all(data)
    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
        pass
    scope.cancel()
