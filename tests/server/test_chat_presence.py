"""ChatRoom and Presence through the runtime's socket hub, in virtual time.

The real WebSocket routes are tested against a running node elsewhere; these pin the room protocols.
"""

from __future__ import annotations

import json
import math
from typing import Any

import cbor2
import trio

from actors import App
from actors.testing import open_test_runtime
from server.rooms._chat import HISTORY_MESSAGES, ChatRoom
from server.rooms._presence import HEARTBEAT_TIMEOUT_SECONDS, Presence

APP = App([ChatRoom, Presence])


class Client:
    """A SocketTransport that decodes what it receives."""

    def __init__(self, *, binary: bool = False) -> None:
        self.frames: list[Any] = []
        self.closed: tuple[int, str] | None = None
        self.binary = binary  # frames are CBOR (else JSON)

    def send_nowait(self, data: str | bytes) -> None:
        self.frames.append(cbor2.loads(data) if self.binary else json.loads(data))

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


#### Found by the fuzzers (tests/server/test_rooms_fuzz.py): each was a crash of the room's code (a
#### UserError frame) or a frame a browser cannot read; each is now the room's own error frame


async def test_a_chat_ts_past_the_safe_integers_gets_an_error_frame(tmp_path):
    async with open_test_runtime(APP, tmp_path) as t:
        room, hub = t.id("ChatRoom", "lobby"), t.runtime.sockets
        client = Client()
        ws = await hub.connect(room, client)
        # 10**400 broke math.isfinite, 2**64 the INSERT into the room's table
        for ts in (10**400, 2**64, -(2**63) - 1, 2**53):
            await hub.receive(room, ws, {"user": "ann", "text": "x", "ts": ts})
        await hub.receive(room, ws, {"user": "ann", "text": "x", "ts": 2**53 - 1})
        errors = [frame for frame in client.frames if frame.get("type") == "error"]
        assert [e["message"] for e in errors] == [
            "ts must be a finite number (an integer within ±9007199254740991)"
        ] * 4
        assert client.frames[-1] == {"user": "ann", "text": "x", "ts": 2**53 - 1, "seq": 1}


async def test_presence_meta_that_is_not_json_gets_an_error_frame(tmp_path):
    async with open_test_runtime(APP, tmp_path) as t:
        room, hub = t.id("Presence", "p"), t.runtime.sockets
        cbor_client, json_member = Client(binary=True), Client()
        ws = await hub.connect(room, cbor_client, binary=True)
        member_ws = await hub.connect(room, json_member)
        await hub.receive(room, member_ws, {"type": "join", "user": "bob"})
        # bytes broke json.dumps; NaN and infinity went out to JSON members as "NaN" and "Infinity"
        for value in (b"\x00", math.nan, math.inf):
            await hub.receive(room, ws, {"type": "join", "user": "ann", "meta": {"x": value}})
        assert cbor_client.frames == [
            {"type": "error", "message": "meta must be an object of JSON values (no bytes, NaN or infinity)"}
        ] * 3
        assert [frame["type"] for frame in json_member.frames] == ["state", "join"]  # bob's own
