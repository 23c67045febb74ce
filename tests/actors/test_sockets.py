"""WebSockets at the object: events as turns, the output gate on sends, hibernation, limits.

The transport here is a small real implementation of ``SocketTransport`` that records frames; the node's
tests drive the same hub through real WebSocket connections.
"""

from __future__ import annotations

from typing import Any

import pytest
import trio

from actors import App, DurableObject, WebSocket
from actors.errors import InvalidArgument, LimitExceeded, UserError
from actors.limits import MAX_ATTACHMENT_BYTES
from actors.testing import open_test_runtime


class Recorder:
    """A SocketTransport that keeps what it was asked to do, as strings."""

    def __init__(self) -> None:
        self.events: list[str] = []

    def send_nowait(self, data: str | bytes) -> None:
        self.events.append(f"send {data!r}")

    def close_nowait(self, code: int, reason: str) -> None:
        self.events.append(f"close {code} {reason}")


class Room(DurableObject):
    async def on_connect(self, ws: WebSocket) -> None:
        if len(self.sockets()) > 2:
            ws.close(4000, "full")
            return
        ws.attachment = {"joined": len(self.sockets())}
        ws.set_tags(["member"])
        self.storage.put("joins", self.storage.get("joins", 0) + 1)

    async def on_message(self, ws: WebSocket, data: Any) -> None:
        if data == "boom":
            for other in self.sockets():
                other.send("never delivered")
            self.storage.put("boom", True)
            raise ValueError("boom")
        seq = self.storage.get("seq", 0) + 1
        self.storage.put("seq", seq)
        for other in self.sockets("member"):
            other.send({"seq": seq, "data": data, "from": ws.attachment["joined"]})

    async def on_close(self, ws: WebSocket, code: int, reason: str) -> None:
        self.storage.put("last_close", [code, reason])

    async def state(self) -> dict[str, Any]:
        return {
            "seq": self.storage.get("seq", 0),
            "boom": self.storage.get("boom", False),
            "last_close": self.storage.get("last_close"),
            "sockets": len(self.sockets()),
        }

    async def big_attachment(self) -> None:
        self.sockets()[0].attachment = "x" * MAX_ATTACHMENT_BYTES


APP = App([Room])


async def test_messages_are_turns_and_broadcasts_reach_every_member_in_order(tmp_path):
    async with open_test_runtime(APP, tmp_path) as t:
        room_id = t.id("Room", "r")
        hub = t.runtime.sockets
        a, b = Recorder(), Recorder()
        ws_a = await hub.connect(room_id, a)
        await hub.connect(room_id, b)
        await hub.receive(room_id, ws_a, "hi")
        await hub.receive(room_id, ws_a, {"x": 1})
        expected = [
            """send '{"seq":1,"data":"hi","from":1}'""",
            """send '{"seq":2,"data":{"x":1},"from":1}'""",
        ]
        assert a.events == expected
        assert b.events == expected


async def test_a_turn_that_raises_sends_nothing_and_writes_nothing(tmp_path):
    async with open_test_runtime(APP, tmp_path) as t:
        room_id = t.id("Room", "r")
        a = Recorder()
        ws = await t.runtime.sockets.connect(room_id, a)
        with pytest.raises(UserError, match=r"^boom$"):
            await t.runtime.sockets.receive(room_id, ws, "boom")
        assert a.events == []
        assert (await t.get("Room", "r").state())["boom"] is False


async def test_sends_leave_only_after_the_turn_is_committed(tmp_path):
    seen_before_commit: list[list[str]] = []

    class Probe(DurableObject):
        async def on_message(self, ws: WebSocket, data: Any) -> None:
            ws.send("reply")
            await trio.lowlevel.checkpoint()
            seen_before_commit.append(list(transport.events))

    transport = Recorder()
    async with open_test_runtime(App([Probe]), tmp_path) as t:
        probe = t.id("Probe", "p")
        ws = await t.runtime.sockets.connect(probe, transport)
        await t.runtime.sockets.receive(probe, ws, "go")
        assert seen_before_commit == [[]]
        assert transport.events == ["send 'reply'"]


async def test_sockets_survive_eviction_with_attachments_and_the_next_message_wakes_the_object(
    tmp_path, autojump_clock
):
    async with open_test_runtime(APP, tmp_path) as t:
        room_id = t.id("Room", "r")
        a = Recorder()
        ws = await t.runtime.sockets.connect(room_id, a)
        await t.advance(60)  # idle eviction
        assert not t.is_live("Room", "r")
        assert t.statistics().open_sockets == 1
        await t.runtime.sockets.receive(room_id, ws, "after")
        assert a.events == ["""send '{"seq":1,"data":"after","from":1}'"""]


async def test_on_connect_may_refuse_with_a_close_code(tmp_path):
    async with open_test_runtime(APP, tmp_path) as t:
        room_id = t.id("Room", "r")
        transports = [Recorder() for _ in range(3)]
        for transport in transports:
            await t.runtime.sockets.connect(room_id, transport)
        assert transports[2].events == ["close 4000 full"]


async def test_on_close_runs_as_a_turn_and_the_socket_leaves_the_object(tmp_path):
    async with open_test_runtime(APP, tmp_path) as t:
        room_id = t.id("Room", "r")
        ws = await t.runtime.sockets.connect(room_id, Recorder())
        await t.runtime.sockets.disconnect(room_id, ws, 1001, "going away")
        state = await t.get("Room", "r").state()
        assert (state["last_close"], state["sockets"]) == ([1001, "going away"], 0)


async def test_socket_limits_are_named(tmp_path):
    async with open_test_runtime(APP, tmp_path) as t:
        room_id = t.id("Room", "r")
        await t.runtime.sockets.connect(room_id, Recorder())
        with pytest.raises(LimitExceeded) as info:
            await t.get("Room", "r").big_attachment()
        assert info.value.limit == "MAX_ATTACHMENT_BYTES"


async def test_sending_outside_a_turn_or_on_another_objects_socket_is_refused(tmp_path):
    class Thief(DurableObject):
        async def steal(self) -> None:
            stolen[0].send("x")

    stolen: list[WebSocket] = []
    async with open_test_runtime(App([Room, Thief]), tmp_path) as t:
        stolen.append(await t.runtime.sockets.connect(t.id("Room", "r"), Recorder()))
        with pytest.raises(RuntimeError, match="inside a turn"):
            stolen[0].send("x")
        with pytest.raises(UserError, match="socket's own object"):
            await t.get("Thief", "t").steal()
        with pytest.raises(InvalidArgument, match="close code"):
            stolen[0].close(1006)


async def test_on_connect_sees_the_connection_params_and_can_refuse_a_bad_token(tmp_path):
    class Guarded(DurableObject):
        async def on_connect(self, ws: WebSocket) -> None:
            if ws.params.get("token") != "s3cret":
                ws.close(4001, "bad token")

    async with open_test_runtime(App([Guarded]), tmp_path) as t:
        good, bad = Recorder(), Recorder()
        guarded = t.id("Guarded", "g")
        await t.runtime.sockets.connect(guarded, good, params={"token": "s3cret"})
        await t.runtime.sockets.connect(guarded, bad, params={"token": "guess"})
        assert (good.events, bad.events) == ([], ["close 4001 bad token"])
