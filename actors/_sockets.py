"""WebSockets held by the node, handed to objects as :class:`WebSocket` handles (hibernation).

Guarantees
- Sockets do not keep an object in memory. The hub (one per runtime) owns every open socket with its
  tags and attachment; an idle object is evicted as usual while its sockets stay open, and the next
  message re-activates it with ``self.sockets()`` and every attachment intact.
- Socket events are turns: ``on_connect(ws)``, ``on_message(ws, data)`` and ``on_close(ws, code, reason)``
  run one at a time with the object's calls, in arrival order per socket, with atomic writes.
- The output gate covers sockets: ``ws.send`` and ``ws.close`` inside a turn only queue; what a turn
  queued leaves after the turn's batch is durable, and is dropped if the turn raised (its writes were
  rolled back too). So no member ever sees a message whose state change could still be lost.
- When its object moves to another node (``Runtime.release``) every socket is closed with the move's
  code and forgotten; ``on_close`` does not run for them here (the object is no longer on this node;
  its clients reconnect, and the new owner runs ``on_connect``).
- Protocol-level pings are answered by the node without waking the object.
- Limits: ``MAX_SOCKETS_PER_OBJECT`` open sockets per object, ``MAX_ATTACHMENT_BYTES`` per attachment,
  ``MAX_TAGS_PER_SOCKET`` tags of at most ``MAX_TAG_BYTES`` each (Cloudflare's numbers).

The node implements :class:`SocketTransport` for each connection and drives the hub with ``connect``,
``receive`` and ``disconnect``.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Protocol, final

from . import _codec
from ._ids import ObjectId
from ._turn import current_turn
from .errors import InvalidArgument, LimitExceeded
from .limits import (
    MAX_ATTACHMENT_BYTES,
    MAX_SOCKETS_PER_OBJECT,
    MAX_TAG_BYTES,
    MAX_TAGS_PER_SOCKET,
)

if TYPE_CHECKING:
    from ._runtime import Runtime

__all__ = ["SocketHub", "SocketTransport", "WebSocket"]


class SocketTransport(Protocol):
    """What the node provides per connection; both methods must not block."""

    def send_nowait(self, data: str | bytes) -> None:
        """Queue a text (str) or binary (bytes) frame."""

    def close_nowait(self, code: int, reason: str) -> None:
        """Start the closing handshake."""


@final
class WebSocket:
    """An open socket of an object, as the object sees it. Built by the runtime only."""

    __slots__ = (
        "_attachment", "_hub", "_moved", "_object_id", "_transport", "binary", "closed", "id", "params",
        "tags",
    )  # fmt: skip

    def __init__(
        self,
        hub: SocketHub,
        object_id: ObjectId,
        socket_id: str,
        transport: SocketTransport,
        binary: bool,
        params: dict[str, str] | None = None,
    ) -> None:
        self._hub = hub
        self._object_id = object_id
        self._transport = transport
        #: unique within the node
        self.id = socket_id
        #: frames of plain values go out as CBOR binary frames (else JSON text frames)
        self.binary = binary
        #: what the client put in the connection request (the node passes the URL's query
        #: parameters), e.g. a signed token for ``on_connect`` to verify
        self.params: dict[str, str] = dict(params or {})
        self.tags: tuple[str, ...] = ()
        self._attachment: bytes | None = None
        #: the object (or the peer) closed it; sends are ignored
        self.closed = False
        #: closed because its object moved to another node (``SocketHub.close_moved``): no ``on_close``
        self._moved = False

    def send(self, data: Any) -> None:
        """Queue a frame: str goes as a text frame, bytes as a binary frame, any other plain value
        encoded (JSON text, or CBOR for binary sockets). It leaves once this turn is durable."""
        frame = _encode(data, self.binary)
        _outbox(self, "send").append((self, "send", frame))

    def close(self, code: int = 1000, reason: str = "") -> None:
        """Close the socket once this turn is durable (``on_close`` runs when the close completes)."""
        if not (code == 1000 or 3000 <= code <= 4999):
            raise InvalidArgument("close code must be 1000 or in 3000-4999")
        if len(reason.encode()) > 123:
            raise InvalidArgument("close reason must be at most 123 bytes of UTF-8")
        _outbox(self, "close").append((self, "close", (code, reason)))

    @property
    def attachment(self) -> Any:
        """A small plain value kept with the socket at the node (survives eviction, not restarts)."""
        return None if self._attachment is None else _codec.loads(self._attachment)

    @attachment.setter
    def attachment(self, value: Any) -> None:
        problem = _codec.describe_unserializable(value, "attachment")
        if problem:
            raise InvalidArgument(problem)
        data = _codec.dumps(value)
        if len(data) > MAX_ATTACHMENT_BYTES:
            raise LimitExceeded(
                f"attachment is {len(data)} bytes; MAX_ATTACHMENT_BYTES is {MAX_ATTACHMENT_BYTES}",
                limit="MAX_ATTACHMENT_BYTES",
            )
        self._attachment = data

    def set_tags(self, tags: Iterable[str]) -> None:
        """Replace the socket's tags (``self.sockets(tag)`` filters by them)."""
        tags = tuple(tags)
        if len(tags) > MAX_TAGS_PER_SOCKET:
            raise LimitExceeded(
                f"{len(tags)} tags; MAX_TAGS_PER_SOCKET is {MAX_TAGS_PER_SOCKET}", limit="MAX_TAGS_PER_SOCKET"
            )
        for tag in tags:
            if type(tag) is not str or len(tag.encode()) > MAX_TAG_BYTES:
                raise LimitExceeded(f"tags are str of at most {MAX_TAG_BYTES} bytes", limit="MAX_TAG_BYTES")
        self.tags = tags

    def deliver(self, frame: Any, kind: str) -> None:
        """Hand a released frame or close to the transport (after the commit)."""
        if self.closed:
            return
        if kind == "close":
            self.closed = True
            code, reason = frame
            self._transport.close_nowait(code, reason)
        else:
            self._transport.send_nowait(frame)

    def __repr__(self) -> str:
        return f"<WebSocket {self.id} of {self._object_id}>"


#: json.dumps with options builds a new encoder on every call; this one is made once
_compact_json = json.JSONEncoder(separators=(",", ":"), allow_nan=False).encode


def _encode(data: Any, binary: bool) -> str | bytes:
    if type(data) is str or type(data) is bytes:
        return data
    problem = _codec.describe_unserializable(data, "message")
    if problem:
        raise InvalidArgument(problem)
    if binary:
        return _codec.dumps(data)
    try:
        return _compact_json(data)
    except (TypeError, ValueError) as exc:  # bytes inside, NaN
        raise InvalidArgument(f"message cannot be JSON: {exc}") from None


def _outbox(ws: WebSocket, what: str) -> list[Any]:
    context = current_turn.get()
    if (
        context is None
        or context.activation._running_work is None
        or context.activation.id.hex != ws._object_id.hex
    ):
        raise RuntimeError(f"ws.{what}() can only be used inside a turn of the socket's own object")
    work = context.activation._running_work
    if work.outbox is None:
        work.outbox = []
    return work.outbox


class SocketHub:
    """Every open socket of the runtime, by object (see the module docstring)."""

    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime
        self._by_object: dict[str, dict[str, WebSocket]] = {}
        self._ids = itertools.count(1)

    def sockets(self, object_id: ObjectId, tag: str | None = None) -> list[WebSocket]:
        """Open sockets of an object, optionally only those with ``tag``, oldest first."""
        sockets = self._by_object.get(object_id.hex, {})
        return [s for s in sockets.values() if not s.closed and (tag is None or tag in s.tags)]

    def count(self) -> int:
        return sum(len(sockets) for sockets in self._by_object.values())

    async def connect(
        self,
        object_id: ObjectId,
        transport: SocketTransport,
        *,
        binary: bool = False,
        params: dict[str, str] | None = None,
    ) -> WebSocket:
        """Register a new socket and run ``on_connect`` as a turn.

        Raises LimitExceeded past MAX_SOCKETS_PER_OBJECT, and whatever the turn raised (then the socket is
        not registered). If ``on_connect`` closed the socket, it is returned closed.
        """
        self._runtime.app.class_of(object_id.cls)
        sockets = self._by_object.setdefault(object_id.hex, {})
        if len(sockets) >= MAX_SOCKETS_PER_OBJECT:
            raise LimitExceeded(
                f"{object_id} has {len(sockets)} sockets; MAX_SOCKETS_PER_OBJECT is {MAX_SOCKETS_PER_OBJECT}",
                limit="MAX_SOCKETS_PER_OBJECT",
            )
        ws = WebSocket(self, object_id, f"s{next(self._ids)}", transport, binary, params)
        sockets[ws.id] = ws
        try:
            await self._runtime.run_hook(object_id, "on_connect", ws)
        except BaseException:
            self._forget(object_id, ws.id)
            raise
        return ws

    async def receive(self, object_id: ObjectId, ws: WebSocket, data: Any) -> None:
        """Run ``on_message(ws, data)`` as a turn (returns when it is durable)."""
        await self._runtime.run_hook(object_id, "on_message", ws, data)

    async def disconnect(self, object_id: ObjectId, ws: WebSocket, code: int, reason: str) -> None:
        """The connection is gone: unregister it, then run ``on_close`` as a turn (not for a socket
        closed by a move: its object is no longer here)."""
        ws.closed = True
        self._forget(object_id, ws.id)
        if not ws._moved:
            await self._runtime.run_hook(object_id, "on_close", ws, code, reason)

    def close_moved(self, object_id: ObjectId, code: int, reason: str) -> int:
        """Close every socket of an object that moved to another node with ``code`` and forget them;
        returns how many. Frames its turns queued earlier were released before (they precede the close
        on each socket)."""
        sockets = self._by_object.pop(object_id.hex, {})
        for ws in sockets.values():
            ws._moved = True
            ws.deliver((code, reason), "close")
        return len(sockets)

    def _forget(self, object_id: ObjectId, socket_id: str) -> None:
        sockets = self._by_object.get(object_id.hex)
        if sockets is not None:
            sockets.pop(socket_id, None)
            if not sockets:
                del self._by_object[object_id.hex]
