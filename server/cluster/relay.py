"""A WebSocket that reached a node which does not own its object, relayed both ways to the owner.

A browser never needs to know which node owns its room: the entry node checks the handshake as
usual (path, Origin, token, route, draining; ``websocket.py``), then opens the same path and query
on the owner and joins the two sockets.

Guarantees
- The browser is accepted only once the owner accepted, with the subprotocol the owner chose; if the
  owner refuses, the browser gets the owner's HTTP status and JSON body; if the owner cannot be
  reached, 503 ``OwnerUnavailable`` naming it.
- Messages pass through in order, text as text and binary as binary, each direction awaiting the
  other side's send (backpressure end to end, no buffering without bound).
- Closes pass through with their codes and reasons: the owner's close reaches the browser as it
  was sent, the browser's close reaches the owner (1000 when the browser's code is not one a close
  frame may carry). If the owner's connection drops without a close frame, the browser gets 1011
  ``OWNER_LOST_REASON`` and reconnects like after any other failure.
- A relayed handshake carries ``RELAYED_BY_HEADER``; a node that receives one for an object it does
  not own refuses it (503 ``OwnerUnavailable``) instead of relaying again, so a socket crosses at
  most one extra hop even while two nodes disagree. The header can only restrict, never grant,
  so it needs no secret: the owner checks the Origin-free handshake's token like any other.
- The entry node's drain closes relayed sockets with 1001 like its own.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Final

import trio
from trio_websocket import ConnectionClosed, ConnectionRejected, WebSocketConnection

from actors.errors import OwnerUnavailable

from .dial import open_peer_websocket

if TYPE_CHECKING:
    from ..websocket import Receive, Send
    from .links import PeerLink

__all__ = ["OWNER_LOST_REASON", "RELAYED_BY_HEADER", "Relay"]

log = logging.getLogger("server.cluster")

#: the header that marks a relayed handshake (its value: the entry node's id)
RELAYED_BY_HEADER: Final = b"x-actors-relayed-by"
#: the reason of the 1011 close a browser gets when the owner's connection drops without a close
OWNER_LOST_REASON: Final = "the node that owns this object went away; reconnect"
#: seconds to reach the owner and finish its handshake
RELAY_DIAL_SECONDS: Final = 5.0

_SENDABLE_CLOSE = frozenset(range(3000, 5000)) | {1000, 1001, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013}


class Relay:
    """One relayed socket: the browser's ASGI side and a client WebSocket to the owner."""

    def __init__(self, link: PeerLink, self_id: str, max_message_bytes: int) -> None:
        self.link = link
        self._self_id = self_id
        self._max_message_bytes = max_message_bytes
        self._scope: trio.CancelScope | None = None
        self._close: tuple[int, str] | None = None

    def close_nowait(self, code: int, reason: str) -> None:
        """Close both sides with ``code`` (the node drains)."""
        self._close = (code, reason)
        if self._scope is not None:
            self._scope.cancel()

    async def serve(self, scope: dict[str, Any], receive: Receive, send: Send, refuse: Any) -> int | None:
        """Relay until either side closes; returns the close code the browser saw (None: refused)."""
        peer = self.link.peer
        resource = scope.get("raw_path") or scope["path"].encode()
        if scope.get("query_string"):
            resource += b"?" + scope["query_string"]
        headers = [(RELAYED_BY_HEADER, self._self_id.encode())]
        headers += [(k, v) for k, v in scope["headers"] if k == b"authorization"]
        try:
            async with open_peer_websocket(
                peer.url,
                resource.decode("latin-1"),
                headers=headers,
                subprotocols=list(scope.get("subprotocols") or []),
                max_message_size=self._max_message_bytes,
                timeout=RELAY_DIAL_SECONDS,
            ) as owner:
                await send({"type": "websocket.accept", "subprotocol": owner.subprotocol})
                return await self._pipe(owner, receive, send)
        except ConnectionRejected as exc:
            body = exc.body or b""
            kept = [(k, v) for k, v in exc.headers if k.lower() in (b"content-type", b"retry-after")]
            headers = [*kept, (b"content-length", str(len(body)).encode())]
            await send(
                {"type": "websocket.http.response.start", "status": exc.status_code, "headers": headers}
            )
            await send({"type": "websocket.http.response.body", "body": body})
            return None
        except (OSError, trio.TooSlowError) as exc:
            log.info("relay failed", extra={"event": "relay_failed", "peer": peer.id, "error": repr(exc)})
            await refuse(
                send,
                OwnerUnavailable(
                    f"the object's owner, node {peer.id} ({peer.url}), is unreachable", node=peer.id
                ),
            )
            return None
        except Exception as exc:  # the owner's handshake failed some other way
            if isinstance(exc, BaseExceptionGroup):
                raise
            await refuse(
                send, OwnerUnavailable(f"node {peer.id} did not accept the socket: {exc!r}", node=peer.id)
            )
            return None

    async def _pipe(self, owner: WebSocketConnection, receive: Receive, send: Send) -> int:
        code, reason = 1011, OWNER_LOST_REASON
        with trio.CancelScope() as cancel_scope:
            self._scope = cancel_scope
            if self._close is not None:
                cancel_scope.cancel()
            async with trio.open_nursery() as nursery:

                async def from_browser() -> None:
                    nonlocal code, reason
                    while True:
                        message = await receive()
                        kind = message["type"]
                        if kind == "websocket.receive":
                            text = message.get("text")
                            await owner.send_message(text if text is not None else message["bytes"])
                        elif kind == "websocket.disconnect":
                            got = int(message.get("code") or 1000)
                            code, reason = got, str(message.get("reason") or "")
                            await owner.aclose(got if got in _SENDABLE_CLOSE else 1000, reason)
                            nursery.cancel_scope.cancel()
                            return

                nursery.start_soon(from_browser)
                try:
                    while True:
                        data = await owner.get_message()
                        key = "text" if isinstance(data, str) else "bytes"
                        await send({"type": "websocket.send", key: data})
                except ConnectionClosed as exc:
                    closed = exc.reason
                    if closed is not None and closed.code in _SENDABLE_CLOSE:
                        code, reason = closed.code, closed.reason or ""
                    else:
                        code, reason = 1011, OWNER_LOST_REASON
                    with trio.CancelScope(shield=True):
                        await _close_browser(send, code, reason)
                    nursery.cancel_scope.cancel()
        if self._close is not None:
            code, reason = self._close
            with trio.CancelScope(shield=True):
                await _close_browser(send, code, reason)
                with trio.move_on_after(1.0):
                    await owner.aclose(code, reason)
        return code


async def _close_browser(send: Send, code: int, reason: str) -> None:
    try:
        await send({"type": "websocket.close", "code": code, "reason": reason})
    except Exception:  # the browser is gone already (hypercorn refuses sends after its close)
        pass
