"""ChatRoom and Presence through the runtime's socket hub, in virtual time.

The real WebSocket routes are tested against a running node elsewhere; these pin the room protocols.
"""

from __future__ import annotations

import json
from typing import Any

import trio

from actors import App
from actors.testing import open_test_runtime
from server.rooms._chat import HISTORY_MESSAGES, ChatRoom
from server.rooms._presence import HEARTBEAT_TIMEOUT_SECONDS, Presence

APP = App([ChatRoom, Presence])


class Client:
    """A SocketTransport that decodes what it receives."""

    def __init__(self) -> None:
        self.frames: list[Any] = []
        self.closed: tuple[int, str] | None = None

    def send_nowait(self, data: str | bytes) -> None:
        self.frames.append(json.loads(data))

    def close_nowait(self, code: int, reason: str) -> None:
        self.closed = (code, reason)


async def test_chat_members_receive_every_message_with_increasing_seq_sender_included(tmp_path):
    async with open_test_runtime(APP, tmp_path) as t:
        room, hub = t.id("ChatRoom", "lobby"), t.runtime.sockets
        ann, bob = Client(), Client()
        ws_ann = await hub.connect(room, ann)
        await hub.connect(room, bob)
        for text in ("hi", "there"):
            await hub.receive(room, ws_ann, {"user": "ann", "text": text, "ts": 1.5})
        expected = [
            {"user": "ann", "text": "hi", "ts": 1.5, "seq": 1},
            {"user": "ann", "text": "there", "ts": 1.5, "seq": 2},
        ]
        assert ann.frames == [{"type": "history", "messages": []}, *expected]
        assert bob.frames == [{"type": "history", "messages": []}, *expected]


async def test_a_chat_joiner_first_gets_the_last_50_messages_oldest_first(tmp_path):
    async with open_test_runtime(APP, tmp_path) as t:
        room = t.get("ChatRoom", "lobby")
        for i in range(60):
            await room.post("bot", f"m{i}", float(i))
        await t.restart()
        joiner = Client()
        await t.runtime.sockets.connect(room.id, joiner)
        [history] = joiner.frames
        assert history["type"] == "history"
        assert [m["seq"] for m in history["messages"]] == list(range(11, 61))
        assert len(history["messages"]) == HISTORY_MESSAGES


async def test_a_malformed_chat_frame_gets_an_error_and_changes_nothing(tmp_path):
    async with open_test_runtime(APP, tmp_path) as t:
        room, hub = t.id("ChatRoom", "lobby"), t.runtime.sockets
        client = Client()
        ws = await hub.connect(room, client)
        await hub.receive(room, ws, {"user": "", "text": "x", "ts": 1})
        await hub.receive(room, ws, ["not", "an", "object"])
        assert [f["type"] for f in client.frames] == ["history", "error", "error"]
        assert await t.get("ChatRoom", "lobby").history() == []
        assert t.runtime.list_objects() == []  # nothing was stored: no file either


async def test_presence_announces_joins_and_leaves_and_lists_members(tmp_path):
    async with open_test_runtime(APP, tmp_path) as t:
        room, hub = t.id("Presence", "p"), t.runtime.sockets
        ann, bob = Client(), Client()
        ws_ann = await hub.connect(room, ann)
        ws_bob = await hub.connect(room, bob)
        await hub.receive(room, ws_ann, {"type": "join", "user": "ann", "meta": {"color": "red"}})
        await hub.receive(room, ws_bob, {"type": "join", "user": "bob"})
        assert bob.frames[0] == {
            "type": "state",
            "members": [{"user": "ann", "meta": {"color": "red"}}, {"user": "bob", "meta": {}}],
        }
        await hub.disconnect(room, ws_bob, 1000, "")
        assert ann.frames[1:] == [
            {"type": "join", "user": "ann", "meta": {"color": "red"}},
            {"type": "join", "user": "bob", "meta": {}},
            {"type": "leave", "user": "bob", "reason": "closed"},
        ]
        assert await t.get("Presence", "p").members() == [{"user": "ann", "meta": {"color": "red"}}]


async def test_presence_drops_a_member_that_stops_heartbeating_after_the_timeout(
    tmp_path, autojump_clock
):
    async with open_test_runtime(APP, tmp_path) as t:
        room, hub = t.id("Presence", "p"), t.runtime.sockets
        ann, bob = Client(), Client()
        ws_ann = await hub.connect(room, ann)
        ws_bob = await hub.connect(room, bob)
        await hub.receive(room, ws_ann, {"type": "join", "user": "ann"})
        await hub.receive(room, ws_bob, {"type": "join", "user": "bob"})
        started = trio.current_time()
        for _ in range(4):  # ann keeps beating, bob is silent
            await t.advance(10)
            await hub.receive(room, ws_ann, {"type": "heartbeat"})
        assert bob.closed == (4008, "heartbeat timeout")
        assert {"type": "leave", "user": "bob", "reason": "timeout"} in ann.frames
        assert ann.closed is None
        assert trio.current_time() - started == 40
        assert HEARTBEAT_TIMEOUT_SECONDS == 30
        assert [m["user"] for m in await t.get("Presence", "p").members()] == ["ann"]
