"""Several node processes on this machine as one cluster: ``actors serve --workers N`` and ``actors demo``.

Both use the cluster's own mechanism (a cluster file, placement, forwarding); nothing here routes.

- ``serve --workers N`` uses every core: N node processes (ids ``w1``..``wN``, data in
  ``<data-dir>/w<i>``) each accept on the one public port (``SO_REUSEPORT``, so the kernel spreads
  connections) and on a private port of their own, which the cluster file names: the SDK and the
  other workers reach each worker there. A worker that exits without being asked is restarted
  (after ``RESTART_DELAY_SECONDS``) with the same id, port and folder, so its objects come back.
- ``demo --nodes N --port P`` starts N nodes on ports P..P+N-1 (ids ``n1``..``nN``, data in
  ``./data/<id>``, a fresh secret), prints their URLs and keeps them running; a node that dies
  stays dead (the demo shows what a cluster does without it) until the demo is restarted.

Guarantees
- The parent prints ``actors: listening on <url>`` once every node listens (the public URL for
  workers; one line per node for the demo), so a script can wait for it.
- SIGTERM or SIGINT to the parent drains every node (each gets SIGTERM and finishes its calls); a
  node still running after ``STOP_TIMEOUT_SECONDS`` is killed. The parent exits 0 after a clean stop.
- A node that refuses its configuration (exit 2: e.g. ``--workers`` changed, so stored objects would
  belong to other workers) is not restarted: every node is stopped and the parent exits 2.
- The cluster file the parent writes (``<data-dir>/cluster.toml``, mode 0600) holds the secret; it
  is rewritten at every start.

XX: a WebSocket that the kernel hands to a worker which does not own its room is relayed, so each
frame to it is written twice (BENCHMARKS.md: chat fan-out gains 1.25x from 2 workers, counters 1.65x).
Passing the accepted socket to the owner worker (``SCM_RIGHTS``) would avoid that, but hypercorn has
read the handshake by then: it would take replaying the request into the owner's server.
"""

from __future__ import annotations

import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import trio

__all__ = ["LocalNode", "demo_nodes", "run_local_cluster", "worker_nodes"]

log = logging.getLogger("server.cluster")

#: seconds before a crashed worker is started again
RESTART_DELAY_SECONDS: Final = 1.0
#: seconds the nodes get to drain after SIGTERM before they are killed (the drain bound plus slack)
STOP_TIMEOUT_SECONDS: Final = 40.0
#: seconds every node gets to print its listening line
START_TIMEOUT_SECONDS: Final = 60.0


@dataclass(frozen=True, slots=True)
class LocalNode:
    id: str
    host: str  # the interface it binds
    port: int
    data_dir: Path
    shared_port: int | None = None  # also accept here, with the other workers (SO_REUSEPORT)
    #: the host the others and the SDK reach it at (None: ``host``; a wildcard host binds every
    #: interface, and the cluster file then names this machine's hostname)
    reach: str | None = None

    @property
    def url(self) -> str:
        reach = self.reach or self.host
        host = f"[{reach}]" if ":" in reach else reach
        return f"http://{host}:{self.port}"


def free_port(host: str) -> int:
    """A port the kernel says is free now (another process could take it before we bind it)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def worker_nodes(count: int, host: str, port: int, data_dir: Path) -> list[LocalNode]:
    """``count`` workers sharing ``port`` (0: a free one), each with a free private port on ``host``.

    On a wildcard host (``0.0.0.0``, ``::``) the workers bind every interface like the public port,
    and the cluster file names this machine's hostname, so SDK clients elsewhere reach each worker.
    """
    wildcard = host in ("0.0.0.0", "::", "")
    bind = host or "0.0.0.0"
    reach = socket.gethostname() if wildcard else None
    shared = port or free_port(bind)
    return [
        LocalNode(f"w{i}", bind, free_port(bind), data_dir / f"w{i}", shared, reach)
        for i in range(1, count + 1)
    ]


def demo_nodes(count: int, host: str, port: int, data_dir: Path) -> list[LocalNode]:
    return [LocalNode(f"n{i}", host, port + i - 1, data_dir / f"n{i}") for i in range(1, count + 1)]


def write_cluster_file(nodes: Sequence[LocalNode], path: Path) -> None:
    """The cluster file for ``nodes`` with a fresh secret, readable by this user only."""
    lines = [f'secret = "{secrets.token_urlsafe(32)}"']
    for node in nodes:
        lines += ["[[nodes]]", f'id = "{node.id}"', f'url = "{node.url}"']
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as file:
        file.write("\n".join(lines) + "\n")


async def run_local_cluster(
    nodes: Sequence[LocalNode],
    serve_args: Sequence[str],
    cluster_file: Path,
    *,
    restart: bool,
    announce: Sequence[str],
    note: str = "",
) -> int:
    """Run ``nodes`` until SIGTERM/SIGINT; returns the exit status (0: every node stopped cleanly).

    ``serve_args`` are the user's ``actors serve`` flags, passed to every node before the node's
    own (later flags win); ``announce`` are the URLs printed once every node listens, followed by
    ``note`` on stderr.
    """
    write_cluster_file(nodes, cluster_file)
    stopping = trio.Event()
    listening = [trio.Event() for _ in nodes]
    failures: list[str] = []

    async def supervise(node: LocalNode, ready: trio.Event) -> None:
        command = [
            sys.executable, "-m", "server.cli", "serve", *serve_args, "--workers", "1",
            "--cluster", str(cluster_file), "--node-id", node.id, "--host", node.host,
            "--port", str(node.port), "--data-dir", str(node.data_dir),
        ]  # fmt: skip
        if node.shared_port is not None:
            command += ["--shared-port", str(node.shared_port)]
        while True:
            process = await trio.lowlevel.open_process(
                command, stdout=subprocess.PIPE, start_new_session=True
            )
            assert process.stdout is not None
            async with trio.open_nursery() as watch:
                watch.start_soon(_read_listening, process.stdout, ready)

                async def stop(process: trio.Process = process) -> None:
                    await stopping.wait()
                    _signal(process, signal.SIGTERM)
                    with trio.move_on_after(STOP_TIMEOUT_SECONDS):
                        await process.wait()
                        return
                    _signal(process, signal.SIGKILL)

                watch.start_soon(stop)
                code = await process.wait()
                watch.cancel_scope.cancel()
            if stopping.is_set():
                if code != 0:
                    failures.append(f"{node.id} exited with {code}")
                return
            log.warning("node exited", extra={"event": "node_exited", "node": node.id, "code": code})
            if code == 2:  # refused its configuration (a node printed why): restarting cannot help
                failures.append(f"{node.id} refused to start")
                stopping.set()
                return
            if not restart:
                failures.append(f"{node.id} exited with {code}")
                await stopping.wait()
                return
            await trio.sleep(RESTART_DELAY_SECONDS)

    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with trio.open_nursery() as nursery:
            for node, ready in zip(nodes, listening, strict=True):
                nursery.start_soon(supervise, node, ready)
            helpers = trio.CancelScope()  # the announcer and the signal watcher end with the start of a stop

            async def announce_when_ready() -> None:
                with trio.move_on_after(START_TIMEOUT_SECONDS):
                    for ready in listening:
                        await ready.wait()
                    for url in announce:
                        print(f"actors: listening on {url}", flush=True)
                    if note:
                        print(note, file=sys.stderr, flush=True)
                    return
                log.error("nodes did not start", extra={"event": "start_timeout"})
                stopping.set()

            async def watch_signals() -> None:
                async for signum in signals:
                    log.info(
                        "signal received", extra={"event": "signal", "signal": signal.Signals(signum).name}
                    )
                    stopping.set()
                    return

            async def run_helpers() -> None:
                with helpers:
                    async with trio.open_nursery() as inner:
                        inner.start_soon(announce_when_ready)
                        inner.start_soon(watch_signals)

            nursery.start_soon(run_helpers)
            await stopping.wait()
            helpers.cancel()
            nursery.cancel_scope.deadline = trio.current_time() + STOP_TIMEOUT_SECONDS + 5
    return 2 if any("refused" in f for f in failures) else 1 if failures else 0


async def _read_listening(stream: trio.abc.ReceiveStream, ready: trio.Event) -> None:
    """Set ``ready`` at the node's first ``actors: listening on`` line; drain the rest of its stdout."""
    buffer = b""
    async for chunk in stream:
        if ready.is_set():
            continue
        buffer += chunk
        if b"actors: listening on" in buffer:
            ready.set()


def _signal(process: trio.Process, signum: int) -> None:
    if process.returncode is None:
        try:
            os.killpg(process.pid, signum)
        except ProcessLookupError:
            pass
