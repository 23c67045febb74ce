"""An in-process node for the SDK's connection tests: the wire protocol over memory streams.

Real nodes (``tests/server/nodes.py``) test the SDK end to end; this one lets a test script what the
node does (answer late, never, out of order, with an error, with garbage; drop the socket; refuse
to be reached) in virtual time, per the network-test policy of ``tests/conftest.py``. It implements
``client._dial.Dialer``: pass ``node.dial`` to ``open_client(..., dialer=node.dial)``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import trio
import trio.testing
from trio_websocket import (
    ConnectionClosed,
    HandshakeError,
    WebSocketConnection,
    wrap_client_stream,
    wrap_server_stream,
)

from actors import wire
from actors.errors import ActorError
from client._dial import Dialer

URL = "http://fake-node:8080"

Handler = Callable[[wire.Call], Awaitable[Any]]


async def echo(call: wire.Call) -> Any:
    """The default handler: return the call's arguments."""
    return {"method": call.method, "args": call.args, "kwargs": call.kwargs}


@dataclass
class Socket:
    """One accepted connection, as the node sees it."""

    url: str
    headers: list[tuple[bytes, bytes]]
    ws: WebSocketConnection | None = None
    stream: Any = None
    #: frames per message received after the Hello
    batches: list[int] = field(default_factory=list)
    #: bytes of each of those messages
    sizes: list[int] = field(default_factory=list)
    close_code: int | None = None

    async def drop(self) -> None:
        """End the connection without a close frame (a crash, a cable pulled)."""
        await self.stream.aclose()

    async def send_raw(self, data: bytes | str) -> None:
        assert self.ws is not None
        await self.ws.send_message(data)


@dataclass
class FakeNode:
    nursery: trio.Nursery
    #: what each Call returns (a value) or raises (an ActorError: an Error frame); may wait forever
    handler: Handler = echo
    max_in_flight: int = 4096
    max_message_bytes: int = 1024 * 1024
    #: the cluster map the Welcome announces (default: this node alone)
    nodes: tuple[tuple[str, str], ...] = (("fake-node:8080", URL),)
    epoch: int = 0
    #: while True, dials fail as a refused TCP connection would
    down: bool = False
    #: replaces the Welcome (bytes or text sent instead), to test bad handshakes
    welcome_override: bytes | str | None = None
    sockets: list[Socket] = field(default_factory=list)
    #: every Call received, in order
    calls: list[wire.Call] = field(default_factory=list)
    #: (url, call) for every Call, to check routing
    routed: list[tuple[str, wire.Call]] = field(default_factory=list)
    in_flight: int = 0
    max_seen_in_flight: int = 0

    @asynccontextmanager
    async def dial(
        self,
        url: str,
        *,
        headers: list[tuple[bytes, bytes]],
        subprotocols: list[str],
        max_message_size: int,
        connect_timeout: float,
    ) -> AsyncIterator[WebSocketConnection]:
        if self.down:
            try:
                raise ConnectionRefusedError(111, "Connect call failed")
            except OSError as exc:
                raise HandshakeError from exc  # what open_websocket_url raises
        client_stream, server_stream = trio.testing.memory_stream_pair()
        socket = Socket(url, headers, stream=server_stream)
        self.sockets.append(socket)
        self.nursery.start_soon(self._serve, socket)
        ws = await wrap_client_stream(
            self.nursery,
            client_stream,  # type: ignore[arg-type]
            "fake-node",
            url,
            subprotocols=subprotocols,
            extra_headers=headers,
            max_message_size=max_message_size,
        )
        try:
            yield ws
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(2):
                await ws.aclose()

    async def _serve(self, socket: Socket) -> None:
        request = await wrap_server_stream(self.nursery, socket.stream)
        ws = socket.ws = await request.accept()
        async with trio.open_nursery() as calls:
            try:
                hello = wire.decode(await ws.get_message())  # type: ignore[arg-type]
                assert [type(f) for f in hello] == [wire.Hello], hello
                if self.welcome_override is not None:
                    await ws.send_message(self.welcome_override)
                else:
                    welcome = wire.Welcome(
                        1,
                        "fake-node:8080",
                        self.max_in_flight,
                        self.max_message_bytes,
                        self.nodes,
                        self.epoch,
                    )
                    await ws.send_message(wire.encode([welcome]))
                while True:
                    data = await ws.get_message()
                    frames = wire.decode(data)  # type: ignore[arg-type]
                    socket.batches.append(len(frames))
                    socket.sizes.append(len(data))
                    for frame in frames:
                        assert type(frame) is wire.Call, frame
                        self.calls.append(frame)
                        self.routed.append((socket.url, frame))
                        calls.start_soon(self._answer, ws, frame)
            except ConnectionClosed as exc:
                socket.close_code = exc.reason.code if exc.reason else None
            calls.cancel_scope.cancel()

    async def _answer(self, ws: WebSocketConnection, call: wire.Call) -> None:
        self.in_flight += 1
        self.max_seen_in_flight = max(self.max_seen_in_flight, self.in_flight)
        try:
            try:
                frame: wire.Frame = wire.Result(call.id, await self.handler(call))
            except ActorError as exc:
                frame = wire.Error(call.id, exc.to_dict())
        finally:
            self.in_flight -= 1
        try:
            await ws.send_message(wire.encode([frame]))
        except ConnectionClosed:
            pass


@asynccontextmanager
async def open_fake_node(**options: Any) -> AsyncIterator[FakeNode]:
    async with trio.open_nursery() as nursery:
        node = FakeNode(nursery, **options)
        _: Dialer = node.dial  # conformance with the SDK's seam
        yield node
        nursery.cancel_scope.cancel()
