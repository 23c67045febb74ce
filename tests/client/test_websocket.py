"""``Client.websocket`` against a real node: a chat room on ``/chat/{room}``, the generic object
route with params, error frames as values, close codes as SocketClosed, refused handshakes."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import trio

from client import ObjectSocket, Rejected, SocketClosed, connect
from tests.server.nodes import Node

LIMIT = 20


async def test_two_members_chat_through_the_sdk(node: Node, unique: str):
    path = f"/chat/{unique}"
    with trio.fail_after(LIMIT):
        async with (
            connect(node.url) as client,
            client.websocket("ChatRoom", unique, path=path) as ann,
            client.websocket("ChatRoom", unique, path=path) as bob,
        ):
            assert ann.subprotocol == "cbor"
            assert await ann.receive() == {"type": "history", "messages": []}
            assert await bob.receive() == {"type": "history", "messages": []}
            await ann.send({"user": "ann", "text": "hi", "ts": 1.5})
            message = {"user": "ann", "text": "hi", "ts": 1.5, "seq": 1}
            assert await bob.receive() == message
            assert await ann.receive() == message
            await bob.send({"user": "", "text": "?"})  # the room's own error frame: a value
            error = await bob.receive()
            assert error["type"] == "error"
            assert error["message"].startswith("user must be a non-empty string")
            assert await client.call("ChatRoom", unique, "history") == [message]


async def test_the_generic_route_carries_params_and_binary_values(node: Node, unique: str):
    with trio.fail_after(LIMIT):
        async with (
            connect(node.url) as client,
            client.websocket("SocketProbe", unique, params={"room": "a b"}) as ws,
        ):
            assert await ws.receive() == {"type": "hello", "binary": True, "params": {"room": "a b"}}
            await ws.send({"blob": b"\x00\xff"})
            assert await ws.receive() == {"type": "echo", "data": {"blob": b"\x00\xff"}, "messages": 1}
            await ws.send("raise")  # on_message raises: an error frame, the socket stays open
            error = await ws.receive()
            assert (error["type"], error["error"]) == ("error", "LookupError")
            await ws.aclose()
            assert [message async for message in ws] == []  # our own close (1000) ends iteration
            assert ws.closed is not None


async def test_a_close_by_the_object_raises_socket_closed_with_its_code(node: Node, unique: str):
    with trio.fail_after(LIMIT):
        async with (
            connect(node.url) as client,
            client.websocket("SocketProbe", f"refuse-{unique}") as ws,
        ):
            received = [message async for message in _until_closed(ws)]
            assert received == [{"closed": 4001, "reason": "go away"}]
            with pytest.raises(
                SocketClosed, match=r"^the WebSocket was closed with 4001: go away$"
            ) as caught:
                await ws.receive()
            assert (caught.value.code, caught.value.reason) == (4001, "go away")
            with pytest.raises(SocketClosed):
                await ws.send("more")


async def _until_closed(ws: ObjectSocket) -> AsyncIterator[object]:
    """The socket's messages, then ``{"closed": code, "reason": reason}`` from its SocketClosed."""
    try:
        async for message in ws:
            yield message
    except SocketClosed as exc:
        yield {"closed": exc.code, "reason": exc.reason}


async def test_a_refused_handshake_is_rejected_with_its_status(node: Node, unique: str):
    with trio.fail_after(LIMIT):
        async with connect(node.url) as client:
            with pytest.raises(Rejected, match=r"HTTP 404: NotFound") as caught:
                async with client.websocket("Counter", unique, path="/no/such/route"):
                    pytest.fail("connected to a route that does not exist")
            assert caught.value.status == 404
