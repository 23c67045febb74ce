"""WebSockets across the lives of objects and nodes: hibernation, drain on SIGTERM, restart, slow clients.

The node tests start their own ``actors serve`` processes (a short idle timeout; a node to stop).
A node runs in real time, so waits for eviction poll ``/metrics`` and are bounded. The slow-client
and Origin tests run the node in-process (the ASGI callable or ``serve``), where the test controls
the client's writes or the Config.
"""

from __future__ import annotations

import signal
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from trio_websocket import ConnectionRejected

from actors import App, Durability, DurableObject, Settings, WebSocket, open_runtime
from server import Config, Node, load_app, serve
from server.metrics import Metrics
from server.websocket import MAX_SEND_QUEUE_FRAMES

from .nodes import STOP_TIMEOUT, open_node
from .sockets import open_socket, receive, scrape, send_json, value, wait_closed, wait_for_metric


def _evicted(text: str, *classes: str) -> bool:
    return value(text, "actors_live_objects") == 0 and all(
        value(text, "actors_evictions_total", class_=cls, reason="idle") >= 1 for cls in classes
    )


async def test_open_sockets_outlive_the_eviction_of_their_idle_rooms_and_wake_them_intact(
    tmp_path: Path,
) -> None:
    async with open_node(tmp_path / "data", "--idle-timeout", "0.5") as node:
        chat, presence = "/chat/lobby", "/presence/lobby"
        async with (
            open_socket(node, chat) as ann,
            open_socket(node, chat) as bob,
            open_socket(node, presence) as ann_here,
            open_socket(node, presence) as bob_here,
        ):
            for ws in (ann, bob):
                assert await receive(ws) == {"type": "history", "messages": []}
            await send_json(ann, {"user": "ann", "text": "before", "ts": 1})
            for ws in (ann, bob):
                assert (await receive(ws))["seq"] == 1
            await send_json(ann_here, {"type": "join", "user": "ann", "meta": {"color": "red"}})
            await receive(ann_here)  # state
            await send_json(bob_here, {"type": "join", "user": "bob"})
            await receive(bob_here)  # state

            text = await wait_for_metric(
                node, lambda t: _evicted(t, "ChatRoom", "Presence"), "both rooms to be evicted"
            )
            assert value(text, "actors_open_sockets") == 4
            assert value(text, "actors_websocket_connections") == 4
            woken = value(text, "actors_activations_total", class_="ChatRoom")

            with trio.fail_after(5):
                await ann.ping(b"still there?")  # answered below the objects
            assert value(await scrape(node), "actors_live_objects") == 0

            await send_json(bob, {"user": "bob", "text": "after", "ts": 2})
            for ws in (ann, bob):
                assert await receive(ws) == {"user": "bob", "text": "after", "ts": 2, "seq": 2}
            async with open_socket(node, presence) as cat_here:
                await send_json(cat_here, {"type": "join", "user": "cat"})
                assert await receive(cat_here) == {
                    "type": "state",
                    "members": [
                        {"user": "ann", "meta": {"color": "red"}},
                        {"user": "bob", "meta": {}},
                        {"user": "cat", "meta": {}},
                    ],
                }
            assert value(await scrape(node), "actors_activations_total", class_="ChatRoom") == woken + 1


async def test_sigterm_closes_every_socket_with_1001_exits_0_and_the_chat_survives_a_restart(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    async with open_node(data) as node:
        async with open_socket(node, "/chat/r") as ann, open_socket(node, "/counter/c/ws") as watcher:
            await receive(ann)
            await receive(watcher)
            for i in (1, 2, 3):
                await send_json(ann, {"user": "ann", "text": f"m{i}", "ts": i})
                assert (await receive(ann))["seq"] == i
            node.process.send_signal(signal.SIGTERM)
            assert await wait_closed(ann) == (1001, "node shutting down")
            assert await wait_closed(watcher) == (1001, "node shutting down")
        with trio.fail_after(STOP_TIMEOUT):
            assert await node.process.wait() == 0
    async with open_node(data) as node, open_socket(node, "/chat/r") as late:
        history = await receive(late)
        assert [(m["text"], m["seq"]) for m in history["messages"]] == [("m1", 1), ("m2", 2), ("m3", 3)]
        await send_json(late, {"user": "bob", "text": "m4", "ts": 4})
        assert (await receive(late))["seq"] == 4


async def test_a_client_that_falls_too_far_behind_is_closed_1013_and_its_backlog_dropped(
    tmp_path: Path,
) -> None:
    app = load_app(None)
    metrics = Metrics(app)
    settings = Settings(durability=Durability.POWER_LOSS_UNSAFE)
    async with open_runtime(app, tmp_path, settings=settings, hooks=metrics) as runtime:
        node = Node(runtime, Config(data_dir=tmp_path), metrics)
        to_node, from_client = trio.open_memory_channel[dict[str, Any]](10)
        sent: list[dict[str, Any]] = []
        writing, reading_again, closed = trio.Event(), trio.Event(), trio.Event()

        async def send(message: dict[str, Any]) -> None:  # the client's side of the TCP stream
            sent.append(message)
            if message["type"] == "websocket.send" and not reading_again.is_set():
                writing.set()
                await reading_again.wait()  # the client stopped reading: the write blocks
            if message["type"] == "websocket.close":
                closed.set()

        scope = _websocket_scope("/counter/c/ws")
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(node, scope, from_client.receive, send)
                await to_node.send({"type": "websocket.connect"})
                await writing.wait()  # the value frame of on_connect is stuck in the write
                counter = runtime.get("Counter", "c")
                for _ in range(MAX_SEND_QUEUE_FRAMES + 1):
                    await counter.increment()  # the object is never held up by its slow member
                assert runtime.sockets.count() == 1
                reading_again.set()
                await closed.wait()
                await to_node.send({"type": "websocket.disconnect", "code": 1000})
        assert [m["type"] for m in sent] == ["websocket.accept", "websocket.send", "websocket.close"]
        assert sent[1]["text"] == '{"type":"value","value":0}'
        assert sent[2] == {
            "type": "websocket.close",
            "code": 1013,
            "reason": f"the client fell {MAX_SEND_QUEUE_FRAMES} frames behind",
        }
        assert runtime.sockets.count() == 0
        assert metrics.websocket_closes[1013] == 1
        assert metrics.websocket_connections == 0


async def test_allowed_origins_refuse_other_browser_origins_before_accept(tmp_path: Path) -> None:
    config = Config(port=0, data_dir=tmp_path, allowed_origins=("https://app.example",))
    stop = trio.Event()
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            [url] = await nursery.start(partial(serve, config, shutdown_trigger=stop.wait))
            with pytest.raises(ConnectionRejected) as rejected:
                async with open_socket(url, "/counter/c/ws", headers=[("Origin", "https://evil.example")]):
                    pass
            assert rejected.value.status_code == 403
            assert rejected.value.body == (
                b'{"error":{"type":"Forbidden","message":"origin \'https://evil.example\' may not open'
                b' WebSockets here (allowed_origins)"}}'
            )
            # listed (in any case, with its default port), the node's own page, and not a browser
            for headers in (
                [("Origin", "https://app.example")],
                [("Origin", "HTTPS://App.Example:443")],
                [("Origin", url)],
                [],
            ):
                async with open_socket(url, "/counter/c/ws", headers=headers) as ws:
                    assert await receive(ws) == {"type": "value", "value": 0}
            stop.set()


class SlowToLeave(DurableObject):
    async def on_close(self, ws: WebSocket, code: int, reason: str) -> None:
        await trio.sleep(1)  # holds the turn: the next on_close waits, the one after is Overloaded
        self.storage.put("left", [*self.storage.get("left", []), code])

    async def left(self) -> list[int]:
        codes: list[int] = self.storage.get("left", [])
        return codes


async def test_on_close_refused_as_overloaded_is_retried_until_it_runs(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    app = App([SlowToLeave])
    metrics = Metrics(app)
    settings = Settings(max_queue_depth=1)
    async with open_runtime(app, tmp_path, settings=settings, hooks=metrics, io_in_threads=False) as runtime:
        node = Node(runtime, Config(data_dir=tmp_path), metrics)
        scope = _websocket_scope("/v1/objects/SlowToLeave/room/ws")
        clients = [trio.open_memory_channel[dict[str, Any]](10) for _ in range(3)]
        sent: list[dict[str, Any]] = []

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        started = trio.current_time()
        async with trio.open_nursery() as nursery:
            for _, from_client in clients:
                nursery.start_soon(node, scope, from_client.receive, send)
            for to_node, _ in clients:  # one by one: each on_connect is a turn too
                await to_node.send({"type": "websocket.connect"})
                await trio.testing.wait_all_tasks_blocked()
            assert runtime.sockets.count() == 3
            for to_node, _ in clients:  # all three leave at once: 1 runs, 1 waits, 1 is refused
                await to_node.send({"type": "websocket.disconnect", "code": 1000})
        assert await runtime.get("SlowToLeave", "room").left() == [1000, 1000, 1000]
        assert trio.current_time() - started >= 3  # one second per on_close, one at a time
        assert [m["type"] for m in sent] == ["websocket.accept"] * 3
        assert metrics.websocket_closes[1000] == 3


def _websocket_scope(path: str) -> dict[str, Any]:
    """The ASGI scope of a plain WebSocket handshake to ``path`` (no query, no headers)."""
    return {"type": "websocket", "path": path, "raw_path": path.encode(), "query_string": b"", "headers": []}
