"""An object's own WebSocket (``Client.websocket``): send and receive plain values.

Separate from the multiplexed call connection: this is the object's socket route
(``/v1/objects/{Class}/{name}/ws``, or a room route such as ``/chat/{room}``), where the object's
``on_connect``/``on_message``/``on_close`` run. The SDK asks for the ``cbor`` subprotocol, so values
travel as CBOR binary messages both ways (bytes and all); a text message from the node is read as JSON.

Errors and closes
- An error frame (``{"type": "error", "error": <type>, "message": ...}``: a message that did not
  decode, or whose ``on_message`` turn failed) is returned by ``receive`` as the value it is, not
  raised: the socket stays open, and rooms use the same shape for their own protocol errors
  (``{"type": "error", "message": ...}``), so one loop handles both.
- When the socket closes, ``receive`` and ``send`` raise :class:`~client.errors.SocketClosed` with
  the close code and reason (the table is in ``server/errors.py``; 1006: the connection dropped).
  ``async for`` ends quietly on code 1000 (a normal close, by the object or by us) and raises
  ``SocketClosed`` for any other code, so a node shutting down (1001) is never mistaken for the end.
"""

from __future__ import annotations

import json
from typing import Any, final

import cbor2
from trio_websocket import ConnectionClosed, WebSocketConnection

from actors import plain_value_problem
from actors.errors import InvalidArgument
from actors.wire import ProtocolError

from .errors import SocketClosed

__all__ = ["ObjectSocket"]


@final
class ObjectSocket:
    """An open WebSocket to one object (made by ``Client.websocket``; not built directly)."""

    def __init__(self, ws: WebSocketConnection) -> None:
        self._ws = ws

    async def send(self, value: Any) -> None:
        """Send one plain value (as CBOR). Raises InvalidArgument if it is not a plain value,
        SocketClosed if the socket is closed."""
        problem = plain_value_problem(value, "message")
        if problem:
            raise InvalidArgument(problem)
        try:
            await self._ws.send_message(cbor2.dumps(value))
        except ConnectionClosed as exc:
            raise _closed(exc) from None

    async def receive(self) -> Any:
        """The next value the object sent (error frames included, see the module docstring).

        Raises SocketClosed once the socket is closed and every message before the close was read;
        ProtocolError if the node sent a message that is not CBOR (binary) or JSON (text).
        """
        try:
            data = await self._ws.get_message()
        except ConnectionClosed as exc:
            raise _closed(exc) from None
        try:
            return cbor2.loads(data) if type(data) is bytes else json.loads(data)
        except Exception as exc:  # cbor2 and json raise several types for malformed input
            raise ProtocolError(f"the node sent a message that does not decode: {exc}") from None

    def __aiter__(self) -> ObjectSocket:
        return self

    async def __anext__(self) -> Any:
        try:
            return await self.receive()
        except SocketClosed as exc:
            if exc.code == 1000:
                raise StopAsyncIteration from None
            raise

    async def aclose(self, code: int = 1000, reason: str = "") -> None:
        """Close the socket (the object's ``on_close`` runs); idempotent."""
        await self._ws.aclose(code, reason or None)

    @property
    def closed(self) -> SocketClosed | None:
        """How the socket closed (or is closing), or None while it is open."""
        reason = self._ws.closed
        return None if reason is None else SocketClosed(reason.code, reason.reason or "")

    @property
    def subprotocol(self) -> str | None:
        """The subprotocol the node accepted (``cbor`` from a node of this version)."""
        return self._ws.subprotocol


def _closed(exc: ConnectionClosed) -> SocketClosed:
    reason = exc.reason
    if reason is None:
        return SocketClosed(1006, "")
    return SocketClosed(reason.code, reason.reason or "")
