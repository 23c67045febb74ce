"""Slow and abusive clients on a real node cost bounded time and memory (``server/transport.py``).

One node with short bounds: ``--keep-alive-timeout 1`` (a connection without a whole request's
headers: idle, or a slowloris client), ``--max-header-bytes 4096``, ``--send-timeout 2`` (sent data a
client leaves unacknowledged) and ``--max-send-queue-bytes 1000000`` (a WebSocket client reading too
slowly). Clients here are raw TCP sockets, so a test controls every byte and every read. The node
runs in real time: durations are measured with a margin, and every wait is bounded.
"""

from __future__ import annotations

import base64
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import trio

from server.websocket import CLOSE_TIMEOUT_SECONDS

from .conftest import APP
from .nodes import Node, fetch, running_node
from .sockets import scrape, value, wait_for_metric

KEEP_ALIVE_TIMEOUT = 1.0
SEND_TIMEOUT = 2.0
#: what the node may take beyond a bound on a busy machine (two cores shared with other tests)
SLACK = 2.0


@pytest.fixture(scope="module")
def bounded_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    data_dir: Path = tmp_path_factory.mktemp("bounded") / "data"
    flags = [
        "--app", APP,
        "--keep-alive-timeout", str(KEEP_ALIVE_TIMEOUT),
        "--max-header-bytes", "4096",
        "--send-timeout", str(SEND_TIMEOUT),
        "--max-send-queue-bytes", "1000000",
    ]  # fmt: skip
    with running_node(data_dir, *flags) as started:
        yield started


async def _connect(node: Node, *, receive_buffer: int | None = None) -> trio.SocketStream:
    parts = urlsplit(node.url)
    sock = trio.socket.socket()
    if receive_buffer is not None:  # before connecting: the window is agreed on in the handshake
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    await sock.connect((parts.hostname, parts.port))
    return trio.SocketStream(sock)


async def _seconds_until_closed(stream: trio.SocketStream, drip: bytes = b"", every: float = 0.2) -> float:
    """Seconds until the node closes ``stream``, sending ``drip`` every ``every`` seconds meanwhile."""
    start = trio.current_time()
    with trio.fail_after(KEEP_ALIVE_TIMEOUT * 10 + SLACK):
        while True:
            try:
                if drip:
                    await stream.send_all(drip)
                with trio.move_on_after(every):
                    if await stream.receive_some() == b"":
                        return trio.current_time() - start
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return trio.current_time() - start


async def test_a_client_sending_its_headers_slowly_is_cut_off_after_keep_alive_timeout(
    bounded_node: Node,
) -> None:
    async with await _connect(bounded_node) as stream:
        await stream.send_all(b"GET /healthz HTTP/1.1\r\nHost: node\r\n")
        elapsed = await _seconds_until_closed(stream, drip=b"X-Slow: 1\r\n")
    assert KEEP_ALIVE_TIMEOUT - 0.1 <= elapsed <= KEEP_ALIVE_TIMEOUT + SLACK
    assert (await fetch(bounded_node.url, "GET", "/healthz")).status == 200


async def test_an_idle_kept_alive_connection_is_closed_after_keep_alive_timeout(bounded_node: Node) -> None:
    async with await _connect(bounded_node) as stream:
        await stream.send_all(b"GET /healthz HTTP/1.1\r\nHost: node\r\n\r\n")
        reply = b""
        with trio.fail_after(SLACK):
            while not reply.endswith(b'{"status":"ok"}'):
                reply += await stream.receive_some()
        assert reply.startswith(b"HTTP/1.1 200 ")
        elapsed = await _seconds_until_closed(stream)
    assert KEEP_ALIVE_TIMEOUT - 0.1 <= elapsed <= KEEP_ALIVE_TIMEOUT + SLACK


async def test_a_request_head_growing_past_max_header_bytes_is_431_and_the_connection_closes(
    bounded_node: Node,
) -> None:
    async with await _connect(bounded_node) as stream:
        await stream.send_all(b"GET /healthz HTTP/1.1\r\nHost: node\r\nX-Big: " + b"a" * 5000)
        with trio.fail_after(SLACK * 2):
            reply = await _read_to_end(stream)
    assert reply.startswith(b"HTTP/1.1 431 ")
    assert b"connection: close" in reply.lower()


async def _open_unread_websocket(node: Node, path: str) -> trio.SocketStream:
    """A WebSocket handshake on a raw socket with a small receive buffer; the caller never reads."""
    stream = await _connect(node, receive_buffer=4096)
    key = base64.b64encode(os.urandom(16))
    await stream.send_all(
        b"GET " + path.encode() + b" HTTP/1.1\r\nHost: node\r\nUpgrade: websocket\r\n"
        b"Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: " + key + b"\r\n\r\n"
    )
    head = b""
    with trio.fail_after(SLACK * 2):
        while b"\r\n\r\n" not in head:
            head += await stream.receive_some(1)  # the handshake only, not a byte of what follows
    assert head.startswith(b"HTTP/1.1 101 "), head
    return stream


async def test_a_websocket_client_that_never_reads_is_closed_with_1013_and_cut_off(
    bounded_node: Node, unique: str
) -> None:
    node, path = bounded_node, f"/v1/objects/SocketProbe/{unique}/ws"
    closes = value(await scrape(node), "actors_websocket_closes_total", code="1013")
    stream = await _open_unread_websocket(node, path)
    async with stream:
        await wait_for_metric(node, lambda text: _open_sockets(text) == 1, "the socket to be counted")
        # 512 KB a call: the node writes what the kernel takes, then queues, then passes
        # max_send_queue_bytes and closes (1013) with its writer blocked on a client whose window
        # stays closed. The close cannot reach it: send_timeout has the kernel drop the connection.
        with trio.fail_after(SEND_TIMEOUT + CLOSE_TIMEOUT_SECONDS + SLACK * 3):
            while _open_sockets(await scrape(node)) > 0:
                body = {"args": [8, 65536]}
                await fetch(node.url, "POST", f"/v1/objects/SocketProbe/{unique}/flood", json_body=body)
                await trio.sleep(0.05)
        assert value(await scrape(node), "actors_websocket_closes_total", code="1013") == closes + 1
        with pytest.raises(trio.BrokenResourceError), trio.fail_after(SLACK * 5):
            await _read_to_end(stream)  # what the kernel still held, then the reset
    assert (await fetch(node.url, "GET", "/healthz")).status == 200


async def _read_to_end(stream: trio.SocketStream) -> bytes:
    data = b""
    while chunk := await stream.receive_some():
        data += chunk
    return data


def _open_sockets(scraped: str) -> float:
    return value(scraped, "actors_websocket_connections")


#: connections the crowd test holds open at once (half idle, half sending their headers slowly), within
#: max_connections: a crowd past it would have the rest refused (test_connections.py)
CROWD = 1000


async def test_a_thousand_idle_and_slowloris_connections_leave_a_normal_clients_calls_working(
    bounded_node: Node, unique: str
) -> None:
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < CROWD + 200:  # this test process holds the crowd's sockets (the node raises its own)
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, CROWD + 1024), hard))
    crowd: list[trio.SocketStream] = []
    took: list[float] = []
    try:
        with trio.fail_after(30):
            for i in range(CROWD):
                stream = await _connect(bounded_node)
                if i % 2:  # a slowloris: a request line and the start of a header, never finished
                    await stream.send_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
                crowd.append(stream)

        async def drip() -> None:  # keep the slow half trickling while the normal client works
            while True:
                for stream in crowd[1::2]:
                    try:
                        await stream.send_all(b"a")
                    except (trio.BrokenResourceError, trio.ClosedResourceError):
                        pass
                await trio.sleep(0.3)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(drip)
            for i in range(30):  # a normal client's calls, each on a fresh connection
                started = trio.current_time()
                reply = await fetch(bounded_node.url, "POST", f"/counter/{unique}/increment")
                took.append(trio.current_time() - started)
                assert reply.json() == {"value": i + 1}
            nursery.cancel_scope.cancel()
        assert max(took) < 2.0, took  # served at once, not behind the crowd
        # and the node cuts the crowd off by itself: idle and slow alike, after keep_alive_timeout
        closed = 0
        with trio.move_on_after(KEEP_ALIVE_TIMEOUT * 3 + SLACK):
            for stream in crowd:
                try:
                    if await stream.receive_some() == b"":
                        closed += 1
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    closed += 1
        assert closed == CROWD
        # the crowd was within max_connections (10,000 by default): nobody was refused, and every
        # connection is given back once the node has closed it (the normal client's kept-alive ones
        # at keep_alive_timeout)
        with trio.fail_after(KEEP_ALIVE_TIMEOUT + SLACK * 2):
            while True:  # (each scrape ends its connection: kept alive, it would count until its timer)
                reply = await fetch(bounded_node.url, "GET", "/metrics", headers={"Connection": "close"})
                text = reply.body.decode()
                if value(text, "actors_connections") == 1:  # the scrape's own
                    break
                await trio.sleep(0.1)
        assert value(text, "actors_connections_refused_total") == 0
        assert value(text, "actors_max_connections") == 10_000
    finally:
        for stream in crowd:
            await trio.aclose_forcefully(stream)
