"""Real node processes for the tests, and a small blocking HTTP client to talk to them.

Policy (see ``tests/conftest.py``): nodes are real ``python -m server.cli serve`` processes bound to
127.0.0.1 port 0; the URL is read from their first stdout line. Every wait is bounded, and every node
is stopped (SIGTERM, then SIGKILL) even when a test fails. HTTP goes through the stdlib
``http.client`` in worker threads (``fetch``), so no test dependency is added.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import select
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import cbor2
import trio

REPO = Path(__file__).resolve().parents[2]
#: node processes import ``tests.server.probe_app`` and the example's ``counter_app``
ENV = {
    **os.environ,
    "PYTHONPATH": os.pathsep.join(
        [*filter(None, [os.environ.get("PYTHONPATH")]), str(REPO), str(REPO / "examples")]
    ),
    "PYTHONUNBUFFERED": "1",
}
URL_LINE = re.compile(r"^actors: listening on (http://\S+)$")
#: a cold interpreter importing trio, hypercorn, apsw and prometheus on a busy machine
STARTUP_TIMEOUT = 20.0
#: from SIGTERM to exit when nothing is in flight
STOP_TIMEOUT = 15.0
#: one HTTP request
REQUEST_TIMEOUT = 10.0


def command(data_dir: Path, *flags: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "server.cli",
        "serve",
        "--port",
        "0",
        "--data-dir",
        str(data_dir),
        *flags,
    ]


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        assert self.headers["content-type"] == "application/json", self.headers
        return json.loads(self.body)

    def cbor(self) -> Any:
        assert self.headers["content-type"] == "application/cbor", self.headers
        return cbor2.loads(self.body)


@dataclass
class Client:
    """Blocking HTTP/1.1 with keep-alive; use one per thread."""

    url: str
    token: str | None = None
    _conn: http.client.HTTPConnection | None = field(default=None, repr=False)

    def request(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        body: Any = None,
        headers: dict[str, str] | None = None,
    ) -> Reply:
        sent = dict(headers or {})
        if self.token is not None:
            sent.setdefault("Authorization", f"Bearer {self.token}")
        if json_body is not None:
            body = json.dumps(json_body).encode()
            sent.setdefault("Content-Type", "application/json")
        if self._conn is None:
            parts = urlsplit(self.url)
            self._conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=REQUEST_TIMEOUT)
        try:
            self._conn.request(
                method, path, body=body, headers=sent, encode_chunked="Transfer-Encoding" in sent
            )
            response = self._conn.getresponse()
            reply = Reply(response.status, {k.lower(): v for k, v in response.getheaders()}, response.read())
            if response.will_close:
                self.close()
            return reply
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


async def fetch(url: str, method: str, path: str, *, token: str | None = None, **kwargs: Any) -> Reply:
    """One request on a fresh connection, in a worker thread, bounded by REQUEST_TIMEOUT."""
    client = Client(url, token)

    def run() -> Reply:
        try:
            return client.request(method, path, **kwargs)
        finally:
            client.close()

    with trio.fail_after(REQUEST_TIMEOUT):
        return await trio.to_thread.run_sync(run, abandon_on_cancel=True)


async def in_thread(fn: Any, *args: Any, timeout: float = REQUEST_TIMEOUT) -> Any:
    """Run blocking ``fn(*args)`` (a batch of requests) in a worker thread, bounded by ``timeout``."""
    with trio.fail_after(timeout):
        return await trio.to_thread.run_sync(partial(fn, *args), abandon_on_cancel=True)


def metric(text: str, name: str, **labels: str) -> float | None:
    """The value of one sample in Prometheus text, or None if absent."""
    want = ",".join(f'{k.rstrip("_")}="{v}"' for k, v in labels.items())
    target = f"{name}{{{want}}}" if labels else name
    for line in text.splitlines():
        if line.startswith(target + " "):
            return float(line.rsplit(" ", 1)[1])
    return None


@dataclass
class Node:
    url: str
    process: Any  # subprocess.Popen or trio.Process
    log_path: Path
    token: str | None = None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


#### Blocking start/stop, for session fixtures


def _prepare(data_dir: Path) -> Path:
    """Create ``data_dir``; return the path of the node's log (its stderr), beside it."""
    data_dir.mkdir(parents=True, exist_ok=True)
    return data_dir.parent / f"{data_dir.name}.log"


def _text(path: Path) -> str:
    return path.read_text(errors="replace")


@contextmanager
def running_node(data_dir: Path, *flags: str, token: str | None = None) -> Iterator[Node]:
    """A node process for the duration of the block; SIGTERM (then SIGKILL) at the end.

    On leaving, asserts the node exited 0 after SIGTERM (the graceful path).
    """
    log_path = _prepare(data_dir)
    with running_command(command(data_dir, *flags), ENV, log_path, cwd=data_dir) as node:
        node.token = token
        yield node


@contextmanager
def running_command(
    argv: list[str], env: dict[str, str], log_path: Path, *, cwd: Path | None = None
) -> Iterator[Node]:
    """``argv`` (any command line that starts a node, with its environment) as a node for the block.

    On leaving, SIGTERM; asserts the node drained and exited 0 (then SIGKILL if it did not).
    """
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=log, env=env, cwd=cwd or log_path.parent
        )
    try:
        url = _read_url_blocking(process, log_path)
        yield Node(url, process, log_path)
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=STOP_TIMEOUT)
        assert code == 0, f"node exited {code}; log:\n{log_path.read_text()}"
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=STOP_TIMEOUT)
        assert process.stdout is not None
        process.stdout.close()


def _read_url_blocking(process: subprocess.Popen[bytes], log_path: Path) -> str:
    assert process.stdout is not None
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or process.poll() is not None:
            raise RuntimeError(f"node did not start; log:\n{log_path.read_text()}")
        ready, _, _ = select.select([process.stdout], [], [], remaining)
        if ready:
            line = process.stdout.readline().decode().strip()
            match = URL_LINE.match(line)
            if match:
                return match.group(1)
            if not line:
                raise RuntimeError(f"node closed stdout; log:\n{log_path.read_text()}")


#### Trio start/stop, for tests that own their node


@asynccontextmanager
async def open_node(data_dir: Path, *flags: str, token: str | None = None) -> AsyncIterator[Node]:
    """Like ``running_node`` but inside a trio test; the caller decides how the node stops.

    Leaving the block kills the node if it is still running (SIGTERM, then SIGKILL).
    """
    log_path = _prepare(data_dir)
    with log_path.open("wb") as log:
        process = await trio.lowlevel.open_process(
            command(data_dir, *flags), stdout=subprocess.PIPE, stderr=log, env=ENV, cwd=data_dir
        )
    try:
        with trio.fail_after(STARTUP_TIMEOUT):
            url = await _read_url(process, log_path)
        yield Node(url, process, log_path, token)
    finally:
        await stop_process(process)


async def stop_process(process: trio.Process) -> None:
    """SIGTERM (a node drains; a second one is ignored), SIGKILL after STOP_TIMEOUT; closes stdout.
    Shielded: it runs in ``finally`` blocks of tests being cancelled."""
    with trio.CancelScope(shield=True):
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            with trio.move_on_after(STOP_TIMEOUT):
                await process.wait()
        if process.returncode is None:
            process.kill()
            with trio.move_on_after(STOP_TIMEOUT):
                await process.wait()
        if process.stdout is not None:
            await process.stdout.aclose()


async def _read_url(process: trio.Process, log_path: Path) -> str:
    assert process.stdout is not None
    buffer = b""
    while b"\n" not in buffer:
        chunk = await process.stdout.receive_some()
        if not chunk:
            raise RuntimeError(f"node exited before listening; log:\n{_text(log_path)}")
        buffer += chunk
    line = buffer.split(b"\n", 1)[0].decode().strip()
    match = URL_LINE.match(line)
    assert match, f"unexpected first line {line!r}; log:\n{_text(log_path)}"
    return match.group(1)
