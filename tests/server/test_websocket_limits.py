"""``max_websockets``: a node holds a bounded number of WebSockets, refuses the next with 503 and
``Retry-After``, and keeps serving everything else (a real node, real sockets)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import trio
from trio_websocket import ConnectionRejected

from .nodes import fetch, open_node
from .sockets import open_socket, receive


async def test_past_max_websockets_a_handshake_gets_503_and_the_node_serves_on(tmp_path: Path) -> None:
    async with (
        open_node(tmp_path / "data", "--max-websockets", "3") as node,
        open_socket(node, "/chat/a") as a,
        open_socket(node, "/chat/b") as b,
    ):
        async with open_socket(node, "/counter/c/ws") as c:
            for ws in (a, b, c):
                await receive(ws)  # history or value: the three are held
            for path in ("/chat/d", "/v1/connect"):  # object sockets and SDK connections alike
                with pytest.raises(ConnectionRejected) as refused:
                    async with open_socket(node, path):
                        pass
                assert refused.value.status_code == 503
                headers = dict(refused.value.headers)
                assert headers[b"retry-after"] == b"1"
                error = json.loads(refused.value.body or b"{}")["error"]
                assert error["type"] == "Overloaded"
                assert "max_websockets (3)" in error["message"]
            reply = await fetch(node.url, "POST", "/counter/c/increment")  # HTTP is not held back
            assert reply.json() == {"value": 1}
        with trio.fail_after(10):  # c closed: its slot is free again (as soon as the node saw it)
            while True:
                try:
                    async with open_socket(node, "/chat/e") as e:
                        assert (await receive(e))["type"] == "history"
                        break
                except ConnectionRejected:
                    await trio.sleep(0.05)
