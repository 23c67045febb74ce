"""Keep-alive never loses a request, through a pooled client (httpx) on a real node.

Before issue 12 a node that answered without reading the request body (404, 405, 400, 401, or a
route that takes no body) closed the connection without saying so whenever the body was larger
than what hypercorn had buffered by then (tens of KB), and the client's next request on that pooled
connection failed with "Server disconnected without sending a response".
"""

from __future__ import annotations

from typing import Any

import httpx

from .conftest import TOKEN
from .nodes import Node, in_thread

#: requests per test, and a body size well past what hypercorn buffers before the app reads
REQUESTS = 200
BODY = b"x" * 300_000


def _send_all(url: str, requests: list[tuple[str, str]], body: bytes, token: str | None = None) -> list[Any]:
    """Send every ``(method, path)`` with ``body`` on one pooled client: (status, connection, local port)."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    answered = []
    with httpx.Client(base_url=url, timeout=10) as client:
        for method, path in requests:
            with client.stream(method, path, content=body, headers=headers) as response:
                port = response.extensions["network_stream"].get_extra_info("client_addr")[1]
                response.read()
            answered.append((response.status_code, response.headers.get("connection"), port))
    return answered


async def test_bodies_the_reply_did_not_need_are_read_so_the_connection_carries_the_next_request(
    node: Node, unique: str
) -> None:
    cases = [
        ("POST", "/nowhere", 404),
        ("PUT", f"/counter/{unique}/increment", 405),
        ("POST", "/counter/%ff/increment", 400),  # the path is not UTF-8: refused before the body
        ("POST", "/healthz", 405),
        ("GET", "/healthz", 200),  # a route that takes no body
    ]
    requests = [cases[i % len(cases)][:2] for i in range(REQUESTS)]
    answered = await in_thread(_send_all, node.url, requests, BODY, timeout=120)
    assert [status for status, _, _ in answered] == [cases[i % len(cases)][2] for i in range(REQUESTS)]
    assert {connection for _, connection, _ in answered} == {None}
    assert len({port for _, _, port in answered}) == 1, "the node closed a kept-alive connection"


async def test_a_refused_token_reads_the_body_too(strict_node: Node, unique: str) -> None:
    # strict_node's max_body_bytes is 1000: a body within it is read and the connection kept
    requests = [("POST", f"/counter/{unique}/increment")] * REQUESTS
    answered = await in_thread(_send_all, strict_node.url, requests, b"y" * 900, "wrong", timeout=120)
    assert {(status, connection) for status, connection, _ in answered} == {(401, None)}
    assert len({port for _, _, port in answered}) == 1


async def test_a_body_over_the_limit_is_answered_with_connection_close(
    strict_node: Node, unique: str
) -> None:
    requests = [("POST", "/nowhere"), ("POST", f"/v1/objects/Probe/{unique}/echo")] * (REQUESTS // 2)
    answered = await in_thread(_send_all, strict_node.url, requests, BODY, TOKEN, timeout=120)
    # over max_body_bytes: 413 before the route's body is read, 404 with its body left unread;
    # either way the node closes and says so, and the client opens a new connection
    assert [(status, connection) for status, connection, _ in answered] == [
        (404, "close"),
        (413, "close"),
    ] * (REQUESTS // 2)
    assert len({port for _, _, port in answered}) == REQUESTS
