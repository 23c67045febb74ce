"""Property tests of the built-in rooms' message handlers (hypothesis, derandomized), in-process.

Each example connects a socket to a room of a fresh runtime (``actors.testing``; the hub is what the
node drives, ``runtime.sockets``) and sends it a few messages a client could send: values encoded
as a client would (JSON text, or CBOR on a binary socket), decoded by the node's own decoders, then
delivered. The answer to each must be an error frame (a message the node refused, or a caller's
error raised by the room, both of which the node turns into one) or the room's normal reply; every
frame must be one a client can read (UTF-8 JSON without NaN, or CBOR); nothing may close the socket.
Then a well-formed message must still work: the socket and the room survived.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import cbor2
import pytest
from hypothesis import given
from hypothesis import strategies as st

from actors import ObjectId, WebSocket
from actors.errors import CallerError
from actors.testing import TestRuntime, open_test_runtime
from server.rooms import rooms_app
from server.websocket import _decode_cbor, _decode_json

from ..fuzz.strategies import FUZZ_SLOW, WELL_FORMED, room_messages


class Recorder:
    """A SocketTransport that keeps the frames and closes it was given."""

    def __init__(self) -> None:
        self.frames: list[str | bytes] = []
        self.closes: list[tuple[int, str]] = []

    def send_nowait(self, data: str | bytes) -> None:
        self.frames.append(data)

    def close_nowait(self, code: int, reason: str) -> None:
        self.closes.append((code, reason))

    def read(self, binary: bool) -> list[Any]:
        """The frames as the client reads them; fails if one is not valid for its socket's format."""
        values = []
        for frame in self.frames:
            if binary:
                values.append(cbor2.loads(frame) if isinstance(frame, bytes) else json.loads(frame))
            else:
                assert isinstance(frame, str), frame
                values.append(_browser_json(frame.encode().decode()))  # a text frame must be UTF-8
        self.frames.clear()
        return values


def _not_json(constant: str) -> Any:
    raise ValueError(f"{constant} is not JSON: a browser cannot read it")


_browser_json = json.JSONDecoder(parse_constant=_not_json).decode


#: what the sender of a room's first well-formed message (``WELL_FORMED``) receives for it
REPLY_TO_WELL_FORMED = {"ChatRoom": "seq", "Presence": "state"}


async def _open(t: TestRuntime, cls: str, binary: bool) -> tuple[ObjectId, WebSocket, Recorder]:
    object_id = t.id(cls, "room")
    recorder = Recorder()
    ws = await t.runtime.sockets.connect(object_id, recorder, binary=binary)
    recorder.read(binary)  # history (chat), value (counter)
    return object_id, ws, recorder


async def _send_each(t: TestRuntime, cls: str, binary: bool, messages: list[Any]) -> None:
    object_id, ws, recorder = await _open(t, cls, binary)
    # a member in the other format, joined: what one client sends must reach it readable too
    _, other_ws, other = await _open(t, cls, not binary)
    hub = t.runtime.sockets
    if cls in REPLY_TO_WELL_FORMED:
        await hub.receive(object_id, other_ws, WELL_FORMED[cls][0])
        recorder.read(binary)
    for message in messages:
        try:
            if binary:
                value = _decode_cbor(cbor2.dumps(message))
            else:
                value = _decode_json(json.dumps(message), MAX_FRAME_BYTES)  # lone surrogates as escapes
            await hub.receive(object_id, ws, value)
        except CallerError:
            pass  # the node answers with an error frame; the room did not crash
        for frame in [*recorder.read(binary), *other.read(not binary)]:
            assert isinstance(frame, dict), frame
        assert recorder.closes == other.closes == []
    if cls in REPLY_TO_WELL_FORMED:
        kind = REPLY_TO_WELL_FORMED[cls]
        await hub.receive(object_id, ws, WELL_FORMED[cls][0])
        assert any(kind in frame or frame.get("type") == kind for frame in recorder.read(binary))
    else:  # Counter: frames it is sent are ignored; changes still reach the socket
        await t.call(object_id, "increment")
        assert recorder.read(binary)[-1]["type"] == "value"
    await hub.disconnect(object_id, ws, 1000, "")
    other.read(not binary)
    await hub.disconnect(object_id, other_ws, 1000, "")


ROOMS = ["ChatRoom", "Presence", "Counter"]
MAX_FRAME_BYTES = 1 << 20


@pytest.mark.parametrize("cbor", [False, True], ids=["json", "cbor"])
@pytest.mark.parametrize("cls", ROOMS)
@FUZZ_SLOW
@given(data=st.data())
async def test_any_message_gets_a_reply_or_an_error_frame_and_the_room_survives(
    tmp_path: Path, cls: str, cbor: bool, data: st.DataObject
) -> None:
    messages = data.draw(st.lists(room_messages(cls, cbor=cbor), min_size=5, max_size=20), label="messages")
    async with open_test_runtime(rooms_app(), tmp_path / uuid.uuid4().hex) as t:
        await _send_each(t, cls, cbor, messages)
