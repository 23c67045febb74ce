"""Open connections per node are bounded by ``max_connections`` (``server/listener.py``).

The bound's logic runs in-process on memory streams in virtual time; the node's behaviour at the
bound runs against a real node process with ``--max-connections 50``, whose clients are raw TCP
sockets, http.client and WebSockets, so a test knows exactly which connections the node holds.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
import resource
from collections.abc import Iterator
from contextlib import AsyncExitStack
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import trio
import trio.testing
from hypercorn.trio.run import worker_serve

from server.listener import (
    FD_RESERVE,
    MAX_REFUSALS_IN_FLIGHT,
    REFUSAL_SECONDS,
    ConnectionLimit,
    ConnectionStatistics,
    connection_budget,
)

from .conftest import APP
from .nodes import Node, fetch, running_node
from .sockets import open_socket, value

#### The bound, in-process

#: hypercorn 0.18.0's ``hypercorn.trio.run.worker_serve``, which ``serve_connections`` repeats
WORKER_SERVE_SHA256 = "8dc8347a9fc357ca334f8c3e4bcf0368176510a96d434f21a5eb4c9ec4103726"

#: what a refused client reads: the node's error body, whatever it asked
REFUSED_BODY = {
    "error": {
        "type": "Overloaded",
        "message": "the node holds max_connections (2) connections; try again later or another node",
        "retry_after": 1.0,
    }
}


def test_hypercorn_worker_serve_is_the_one_serve_connections_copies() -> None:
    # serve_connections repeats hypercorn 0.18's worker_serve with a counting handler. If this
    # fails, hypercorn changed it: carry the change over to server/listener.py, then update the hash.
    source = inspect.getsource(worker_serve).encode()
    assert hashlib.sha256(source).hexdigest() == WORKER_SERVE_SHA256


def _parse(reply: bytes) -> tuple[str, dict[str, str], Any]:
    head, _, body = reply.partition(b"\r\n\r\n")
    status, *lines = head.decode().split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines)
    assert int(headers["content-length"]) == len(body)
    return status, headers, json.loads(body)


async def _read_to_end(stream: trio.abc.ReceiveStream) -> bytes:
    data = b""
    while chunk := await stream.receive_some():
        data += chunk
    return data


async def _held(release: trio.Event, stream: Any) -> None:
    await release.wait()


async def _never(stream: Any) -> None:
    raise AssertionError("a refused connection was served")


async def _fill(nursery: trio.Nursery, limit: ConnectionLimit) -> trio.Event:
    """Connections ``limit`` holds until the event returned is set, as many as it allows."""
    release = trio.Event()
    for _ in range(limit.max_connections):
        nursery.start_soon(limit.serve_one, trio.testing.memory_stream_pair()[1], partial(_held, release))
    await trio.testing.wait_all_tasks_blocked()
    assert limit.statistics().open == limit.max_connections
    return release


async def test_at_max_connections_a_new_connection_gets_one_503_and_is_closed(
    autojump_clock: trio.testing.MockClock,
) -> None:
    limit = ConnectionLimit(2)
    async with trio.open_nursery() as nursery:
        release = await _fill(nursery, limit)
        client, server_end = trio.testing.memory_stream_pair()
        nursery.start_soon(limit.serve_one, server_end, _never)
        t0 = trio.current_time()
        await client.send_all(b"GET /healthz HTTP/1.1\r\nHost: node\r\n\r\n")
        status, headers, body = _parse(await _read_to_end(client))  # the node half-closes after it
        await client.aclose()
        await trio.testing.wait_all_tasks_blocked()
        assert trio.current_time() == t0  # answered and closed at once, not after REFUSAL_SECONDS
        assert status == "HTTP/1.1 503 Service Unavailable"
        assert headers["connection"] == "close"
        assert headers["retry-after"] == "1"
        assert headers["content-type"] == "application/json"
        assert body == REFUSED_BODY
        assert limit.statistics() == ConnectionStatistics(open=2, refused=1, max_connections=2)
        release.set()
    assert limit.statistics() == ConnectionStatistics(open=0, refused=1, max_connections=2)


async def test_a_connection_is_counted_until_its_serving_ends_however_it_ends(
    autojump_clock: trio.testing.MockClock,
) -> None:
    limit = ConnectionLimit(3)

    async def returns(stream: Any) -> None:
        await trio.sleep(1)

    async def raises(stream: Any) -> None:
        await trio.sleep(2)
        raise OSError("connection reset")

    async def fails() -> None:
        with pytest.raises(OSError, match=r"^connection reset$"):
            await limit.serve_one(trio.testing.memory_stream_pair()[1], raises)

    async def cancelled(scope: trio.CancelScope) -> None:
        with scope:
            await limit.serve_one(trio.testing.memory_stream_pair()[1], partial(_held, trio.Event()))

    opened = []
    scope = trio.CancelScope()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(limit.serve_one, trio.testing.memory_stream_pair()[1], returns)
        nursery.start_soon(fails)
        nursery.start_soon(cancelled, scope)
        for _ in range(3):
            await trio.sleep(0.5)
            opened.append(limit.statistics().open)
            await trio.sleep(0.5)
        scope.cancel()
    assert opened == [3, 2, 1]
    assert limit.statistics() == ConnectionStatistics(open=0, refused=0, max_connections=3)


async def test_refused_connections_past_max_refusals_in_flight_are_closed_at_once_without_a_reply(
    autojump_clock: trio.testing.MockClock,
) -> None:
    limit = ConnectionLimit(1)
    async with trio.open_nursery() as nursery:
        release = await _fill(nursery, limit)
        silent = []  # refused clients that never close: each is answered, then read until REFUSAL_SECONDS
        for _ in range(MAX_REFUSALS_IN_FLIGHT):
            client, server_end = trio.testing.memory_stream_pair()
            nursery.start_soon(limit.serve_one, server_end, _never)
            silent.append(client)
        await trio.testing.wait_all_tasks_blocked()
        t0 = trio.current_time()
        client, server_end = trio.testing.memory_stream_pair()
        nursery.start_soon(limit.serve_one, server_end, _never)
        assert await _read_to_end(client) == b""
        assert trio.current_time() == t0
        assert limit.statistics() == ConnectionStatistics(1, MAX_REFUSALS_IN_FLIGHT + 1, 1)
        for waiting in silent:  # answered all the same
            assert (await _read_to_end(waiting)).startswith(b"HTTP/1.1 503 ")
        release.set()
    assert trio.current_time() - t0 == REFUSAL_SECONDS  # then read until they gave up on the clients


@pytest.mark.parametrize(
    ("requested", "open_files", "budget"),
    [(10_000, 1_048_576, 10_000), (10_000, 4096, 4096 - FD_RESERVE), (10_000, 1000, 500), (10, 1, 1)],
)
def test_max_connections_is_lowered_below_the_open_file_limit(
    requested: int, open_files: int, budget: int, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="server"):
        assert connection_budget(requested, open_files) == budget
    kept = open_files - budget
    assert caplog.messages == (
        []
        if budget == requested
        else [
            f"max_connections lowered from {requested} to {budget}: the open-file limit is {open_files}"
            f" (ulimit -n), and {kept} descriptors are kept for the rest of the node"
        ]
    )


def test_the_default_open_file_limit_is_this_process_soft_limit() -> None:
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        assert connection_budget(10**9) == 10**9
    else:
        assert connection_budget(10**9) == soft - min(FD_RESERVE, soft // 2)


#### A node at its bound

MAX_CONNECTIONS = 50
#: of the connections that fill the node: WebSockets (the rest are idle keep-alive HTTP connections)
WEBSOCKETS = 5


@pytest.fixture(scope="module")
def capped_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    data_dir: Path = tmp_path_factory.mktemp("capped") / "data"
    # a long keep-alive timeout: the idle connections stay held for the whole test
    flags = ["--app", APP, "--max-connections", str(MAX_CONNECTIONS), "--keep-alive-timeout", "60"]
    with running_node(data_dir, *flags) as started:
        yield started


async def _connect(node: Node) -> trio.SocketStream:
    parts = urlsplit(node.url)
    assert parts.hostname is not None
    assert parts.port is not None
    return await trio.open_tcp_stream(parts.hostname, parts.port)


#: helper requests end their connection: one closed by its client while idle would stay counted
#: until the keep-alive timer (listener.py), and the test counts the node's connections exactly
CLOSE = {"Connection": "close"}


class _Refusals:
    """The 503s a test's clients met (the node's ``actors_connections_refused_total`` must agree)."""

    def __init__(self) -> None:
        self.count = 0

    async def fetch(self, node: Node, method: str, path: str) -> Any:
        """``fetch`` again until the node has room (each 503 counted); bounded."""
        with trio.fail_after(10):
            while (reply := await fetch(node.url, method, path, headers=CLOSE)).status == 503:
                self.count += 1
                await trio.sleep(0.01)
        return reply

    async def scrape_until(self, node: Node, check: Any, what: str) -> str:
        """Scrape until ``check(text)`` holds (the node runs in real time), counting 503s; bounded."""
        text = ""
        try:
            with trio.fail_after(10):
                while True:
                    text = (await self.fetch(node, "GET", "/metrics")).body.decode()
                    if check(text):
                        return text
                    await trio.sleep(0.05)
        except trio.TooSlowError:
            raise AssertionError(f"waited 10 s for {what}: {text}") from None


async def _request(stream: trio.SocketStream, *headers: bytes) -> bytes:
    """``GET /healthz`` on ``stream``; the whole reply."""
    await stream.send_all(b"\r\n".join([b"GET /healthz HTTP/1.1", b"Host: node", *headers, b"", b""]))
    reply = b""
    with trio.fail_after(10):
        while not reply.endswith(b'{"status":"ok"}'):
            reply += await stream.receive_some()
    return reply


async def _kept_alive(node: Node) -> trio.SocketStream:
    """A connection the node holds for sure: it answered a request on it and keeps it open."""
    stream = await _connect(node)
    reply = await _request(stream)
    assert reply.startswith(b"HTTP/1.1 200 "), reply
    return stream


async def _leave(stream: trio.SocketStream) -> None:
    """End a kept-alive connection the way a client that is done does: ``Connection: close``."""
    assert (await _request(stream, b"Connection: close")).startswith(b"HTTP/1.1 200 ")
    with trio.fail_after(10):
        assert await _read_to_end(stream) == b""  # the node closed it
    await stream.aclose()


async def test_past_max_connections_a_new_connection_gets_503_and_the_node_keeps_serving(
    capped_node: Node, unique: str
) -> None:
    node, met = capped_node, _Refusals()
    text = await met.scrape_until(node, lambda text: value(text, "actors_connections") == 1, "an empty node")
    refused_before = value(text, "actors_connections_refused_total")
    async with AsyncExitStack() as held:  # WEBSOCKETS sockets, then idle keep-alive connections
        for i in range(WEBSOCKETS):
            await held.enter_async_context(open_socket(node, f"/v1/objects/SocketProbe/{unique}-{i}/ws"))
        idle = [await _kept_alive(node) for _ in range(MAX_CONNECTIONS - WEBSOCKETS)]
        for stream in idle:
            held.push_async_callback(trio.aclose_forcefully, stream)

        refused = await fetch(node.url, "POST", f"/counter/{unique}/increment")
        assert refused.status == 503
        assert refused.headers["connection"] == "close"
        assert refused.headers["retry-after"] == "1"
        assert refused.json() == {
            "error": {
                "type": "Overloaded",
                "message": f"the node holds max_connections ({MAX_CONNECTIONS}) connections; try again"
                " later or another node",
                "retry_after": 1.0,
            }
        }
        async with await _connect(node) as silent:  # a client that sends nothing is refused too
            with trio.fail_after(10):
                assert (await _read_to_end(silent)).startswith(b"HTTP/1.1 503 ")
        # the held connections are served as before
        assert (await _request(idle[-1])).startswith(b"HTTP/1.1 200 ")

        # clients leaving make room: a normal client's calls work again
        for stream in idle[:5]:
            await _leave(stream)
        for i in range(10):  # (a 503 until the node has seen the first one go would be retried)
            reply = await met.fetch(node, "POST", f"/counter/{unique}/increment")
            assert reply.json() == {"value": i + 1}
        text = await met.scrape_until(
            node,
            lambda text: value(text, "actors_connections") == MAX_CONNECTIONS - 5 + 1,  # and the scrape
            "the connections of the clients that left to be given back",
        )
        assert value(text, "actors_connections_refused_total") == refused_before + 2 + met.count
        assert value(text, "actors_max_connections") == MAX_CONNECTIONS
        for stream in idle[5:]:
            await _leave(stream)
    # every connection is given back when it closes, WebSockets included
    await met.scrape_until(node, lambda text: value(text, "actors_connections") == 1, "every connection back")
