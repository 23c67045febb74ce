"""``server.serve`` and the ASGI callable in-process: bound URLs, shutdown and readiness."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import trio

from actors import open_runtime
from server import Config, Node, load_app, serve
from server.metrics import Metrics

from .nodes import fetch


async def test_serve_reports_the_bound_url_and_returns_after_its_trigger(tmp_path: Path) -> None:
    stop = trio.Event()
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            urls = await nursery.start(
                lambda task_status: serve(  # type: ignore[misc]
                    Config(port=0, data_dir=tmp_path), shutdown_trigger=stop.wait, task_status=task_status
                )
            )
            assert len(urls) == 1
            assert urls[0].startswith("http://127.0.0.1:")
            assert not urls[0].endswith(":0")
            reply = await fetch(urls[0], "POST", "/counter/a/increment")
            assert reply.json() == {"value": 1}
            stop.set()
    assert (tmp_path / "catalog.sqlite3").exists()


async def asgi(node: Node, method: str, path: str) -> tuple[int, Any]:
    messages: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        messages.append(message)

    scope = {
        "type": "http",
        "method": method,
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": [],
    }
    await node(scope, receive, send)
    start, body = messages
    return start["status"], json.loads(body["body"])


async def test_readyz_is_503_once_draining_begins(tmp_path: Path) -> None:
    app = load_app(None)
    metrics = Metrics(app)
    async with open_runtime(app, tmp_path, hooks=metrics) as runtime:
        node = Node(runtime, Config(data_dir=tmp_path), metrics)
        assert await asgi(node, "GET", "/readyz") == (200, {"status": "ready"})
        node.draining = True
        assert await asgi(node, "GET", "/readyz") == (503, {"status": "draining"})
        assert await asgi(node, "GET", "/healthz") == (200, {"status": "ok"})
