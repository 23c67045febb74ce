"""WebSocket clients for the node tests: trio-websocket against a real node, every wait bounded.

``open_socket`` connects (raising ``ConnectionRejected`` for a refused handshake), ``receive`` reads
one frame and decodes it (JSON text, CBOR binary), ``wait_closed`` reads until the node's close and
returns its code and reason. Every wait is bounded by ``SOCKET_TIMEOUT``.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit

import cbor2
import trio
from trio_websocket import ConnectionClosed, WebSocketConnection, wrap_client_stream

from .nodes import Node, fetch, metric

#: one frame or one handshake, on loopback
SOCKET_TIMEOUT = 10.0


def ws_url(node: Node | str, path: str) -> str:
    base = node if isinstance(node, str) else node.url
    return base.replace("http://", "ws://", 1) + path


@asynccontextmanager
async def open_socket(
    node: Node | str,
    path: str,
    *,
    headers: list[tuple[str, str]] | None = None,
    subprotocols: list[str] | None = None,
) -> AsyncIterator[WebSocketConnection]:
    """A connected socket for the block (ConnectionRejected if the node refused the handshake).

    The client closes the socket (1000) on leaving if it is still open. The TCP stream is ours, not
    trio-websocket's: 0.12 leaves its socket open when the server rejects the handshake or closes
    first. A single exception from the block or the handshake is raised as itself, not in a group.
    """
    parts = urlsplit(node if isinstance(node, str) else node.url)
    assert parts.hostname is not None
    assert parts.port is not None
    with trio.fail_after(SOCKET_TIMEOUT):
        stream = await trio.open_tcp_stream(parts.hostname, parts.port)
    async with stream:
        try:
            async with trio.open_nursery() as nursery:
                with trio.fail_after(SOCKET_TIMEOUT):
                    ws = await wrap_client_stream(
                        nursery,
                        stream,
                        parts.netloc,
                        path,
                        subprotocols=subprotocols,
                        extra_headers=[(k.encode(), v.encode()) for k, v in headers or []],
                    )
                try:
                    yield ws
                finally:
                    with trio.move_on_after(SOCKET_TIMEOUT) as scope:
                        scope.shield = True
                        await ws.aclose()
                    nursery.cancel_scope.cancel()
        except BaseExceptionGroup as group:
            if len(group.exceptions) == 1:
                raise group.exceptions[0] from None
            raise


async def receive(ws: WebSocketConnection) -> Any:
    """The next frame, decoded: JSON for text, CBOR for binary."""
    with trio.fail_after(SOCKET_TIMEOUT):
        message = await ws.get_message()
    return json.loads(message) if isinstance(message, str) else cbor2.loads(message)


async def send_json(ws: WebSocketConnection, value: Any) -> None:
    await ws.send_message(json.dumps(value))


async def wait_closed(ws: WebSocketConnection) -> tuple[int, str | None]:
    """Read (and drop) frames until the node closes the socket; its close code and reason."""
    with trio.fail_after(SOCKET_TIMEOUT):
        try:
            while True:
                await ws.get_message()
        except ConnectionClosed as closed:
            return closed.reason.code, closed.reason.reason


async def scrape(node: Node) -> str:
    reply = await fetch(node.url, "GET", "/metrics", token=node.token)
    assert reply.status == 200
    return reply.body.decode()


async def wait_for_metric(
    node: Node, check: Callable[[str], bool], what: str, *, timeout: float = SOCKET_TIMEOUT
) -> str:
    """Scrape /metrics until ``check(text)`` holds (the node runs in real time); the last scrape."""
    try:
        with trio.fail_after(timeout):
            while True:
                text = await scrape(node)
                if check(text):
                    return text
                await trio.sleep(0.05)
    except trio.TooSlowError:
        raise AssertionError(f"waited {timeout} s for {what}") from None


def value(text: str, name: str, **labels: str) -> float:
    """A sample of the scrape, 0 when absent (a counter never incremented has no child yet)."""
    found = metric(text, name, **labels)
    return 0.0 if found is None else found
