"""WebSockets at the node: the routes, the handshake checks, and one loop per connection that drives
the runtime's socket hub (``runtime.sockets``, see ``actors/_sockets.py``).

Routes (``{x}`` is one path segment, percent-decoded as UTF-8)::

    /v1/objects/{Class}/{name}/ws   any class of the App
    /chat/{room}                    ChatRoom  (protocol in server/rooms/_chat.py: the benchmark contract)
    /presence/{room}                Presence  (protocol in server/rooms/_presence.py)
    /counter/{name}/ws              Counter   ({"type": "value", "value": n} on join and after each change)

``/v1/connect``, the SDK's multiplexed calls, is served by ``rpc.py`` with the same Origin and
token checks (``check_access``); it is not an object's socket.

The handshake is checked in this order; a failed check is refused before accept with an HTTP reply
carrying the JSON error body of ``errors.py`` (a browser only learns that the connection failed):

    400  the path is not UTF-8, or ``?format=`` is neither ``json`` nor ``cbor``
    403  Forbidden: a browser ``Origin`` that ``Config.allowed_origins`` does not allow. A page of
         another site could otherwise open sockets with its visitor's network position (cross-site
         WebSocket hijacking). No ``Origin`` (not a browser) and the node's own origin always pass;
         with an empty list, any origin passes while the node binds a loopback host.
    401  Unauthorized: the node has a token and neither ``Authorization: Bearer <token>`` nor the
         query parameter ``?token=<token>`` carries it. The query form exists because browsers
         cannot set headers on a WebSocket; URLs end up in proxy logs, so use the header if you can.
    404  NotFound: no WebSocket route has this path
    503  ShuttingDown: the node is draining; Overloaded: it holds ``Config.max_websockets`` sockets
         (object sockets, relays and SDK connections, counted from the handshake; ``Retry-After``)

Then the node accepts, resolves the object id (close 4400 or 4404 if it cannot) and registers the
socket with ``runtime.sockets.connect``, which runs ``on_connect`` as a turn (close 1011 if it
raised, 1013 past ``MAX_SOCKETS_PER_OBJECT``). Every close code is in the table of ``errors.py``.

The object sees the URL's query parameters as ``ws.params`` (e.g. a signed token that
``on_connect`` verifies), without ``format`` and, on a node with a token, without ``token``.

Formats: text frames carry JSON, binary frames CBOR, in both directions. Plain values the object
sends go out as JSON text frames unless the client asked for CBOR, with the subprotocol ``cbor``
(``Sec-WebSocket-Protocol: cbor``) or ``?format=cbor``; the subprotocol ``json`` is accepted too.

Guarantees
- Per socket, messages reach ``on_message`` in arrival order, one turn at a time: the reader awaits
  each turn's commit before it reads the next frame. That is the backpressure too: a client sending
  faster than its object commits is slowed by TCP (hypercorn stops reading once its small per-
  connection queue is full), never buffered without bound.
- A message that does not decode (JSON, JSON with a string that is not text, CBOR, or CBOR that is
  not a plain value) gets an error frame
  ``{"type": "error", "error": "InvalidArgument", "message": ...}`` and never reaches the object; a
  message whose turn failed (the object raised, Overloaded, CallTimeout) gets an error frame naming
  that error. Either way the socket stays open.
- Limits: a message over ``Config.max_frame_bytes`` closes the socket with 1009 (hypercorn enforces it
  while reassembling, so a larger message is never held whole). At most ``MAX_SEND_QUEUE_FRAMES``
  frames of at most ``Config.max_send_queue_bytes`` in all wait for one client (one frame alone may
  be larger); a client that falls further behind is closed with 1013 and its queued frames are
  dropped, so one slow reader costs bounded memory and never holds up its object. A client that
  stopped reading altogether cannot take even the close: the kernel aborts its connection once
  what was sent stays unacknowledged for ``Config.send_timeout`` (``transport.py``).
- ``runtime.sockets.disconnect`` runs exactly once for every socket that ``connect`` registered: when
  the client closes, when the connection drops, or when a close the node started completes or
  times out (``CLOSE_TIMEOUT_SECONDS``).
- Protocol pings are answered by hypercorn (wsproto) below the ASGI layer. They never reach this
  module, so they never wake a hibernating object.
- Drain: ``close_all`` (called as shutdown begins) closes every socket with 1001 while the runtime
  is still open, so the ``on_close`` turns run and commit before the runtime closes.

Memory: an idle socket whose object hibernates costs the node about 27 KB of RSS
(``tests/benchmarks/bench_idle_sockets.py``); about 21 KB of that is hypercorn's and trio's own per
connection (a bare ASGI app that only awaits ``receive`` measures that much).
TODO(perf): start the writer task only while frames wait, and let it exit after a quiet period
(about 3 KB less per idle socket: its task and the connection's nursery).

XX: hypercorn 0.18 reports every close the client started as 1006 (pgjones/hypercorn#127), losing
the client's code. ``on_close`` gets the node's own code when the node closed, else 1006.
XX: hypercorn shields its socket writes, so a writer blocked on a client that stopped reading
cannot be cancelled: the object forgets the socket after ``CLOSE_TIMEOUT_SECONDS``, and the
connection's memory is held until ``Config.send_timeout`` has the kernel abort it.
"""

from __future__ import annotations

import hmac
import json
import logging
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, final
from urllib.parse import parse_qs

import cbor2
import trio

from actors import plain_value_problem, wire
from actors.errors import ActorError, InvalidArgument, LimitExceeded, Overloaded, ShuttingDown

from . import codec
from .cluster.relay import RELAYED_BY_HEADER, Relay
from .config import normalize_origin
from .errors import (
    FRAME_LIMIT,
    SEND_QUEUE_BYTES_LIMIT,
    SEND_QUEUE_LIMIT,
    Forbidden,
    NotFound,
    Unauthorized,
    as_actor_error,
    close_code_of,
    close_reason,
    error_frame,
    error_reply,
)

if TYPE_CHECKING:
    from actors import ObjectId, Runtime, WebSocket

    from .cluster import Cluster
    from .cluster.links import PeerLink
    from .config import Config
    from .metrics import Metrics

__all__ = ["CLOSE_TIMEOUT_SECONDS", "MAX_SEND_QUEUE_FRAMES", "WS_ROUTES", "WebSockets", "match"]

log = logging.getLogger("server")

Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

#: frames that may wait for one client; past it the client is too slow and is closed with 1013.
#: Room for a burst of fan-out (a chat room of 1,000 members all posting at once). A broadcast frame
#: is one string shared by every member's queue, so a full queue mostly holds references.
MAX_SEND_QUEUE_FRAMES: Final = 1024

#: seconds a close the node started may take (flushing queued frames, the client's reply) before
#: the socket is given up and ``disconnect`` runs anyway
CLOSE_TIMEOUT_SECONDS: Final = 5.0

#: the close of a draining node
GOING_AWAY: Final = wire.DRAIN_CLOSE  # (1001, "node shutting down"), on every socket


@dataclass(frozen=True, slots=True)
class WsRoute:
    pattern: tuple[str, ...]  # literal segments, "{class}" and "{name}"
    cls: str | None  # the class served; None: the ``{class}`` segment names it

    @property
    def name(self) -> str:
        """The pattern as a path: a bounded metrics label."""
        return "/" + "/".join(self.pattern)


WS_ROUTES: tuple[WsRoute, ...] = (
    WsRoute(("v1", "objects", "{class}", "{name}", "ws"), None),
    WsRoute(("chat", "{name}"), "ChatRoom"),
    WsRoute(("presence", "{name}"), "Presence"),
    WsRoute(("counter", "{name}", "ws"), "Counter"),
)


def match(segments: tuple[str, ...]) -> tuple[WsRoute, str, str]:
    """The route for the path ``segments``, with the class and object name it names (NotFound)."""
    for route in WS_ROUTES:
        if len(route.pattern) != len(segments):
            continue
        params: dict[str, str] = {}
        for want, got in zip(route.pattern, segments, strict=True):
            if want[0] == "{":
                params[want] = got
            elif want != got:
                break
        else:
            return route, route.cls or params["{class}"], params["{name}"]
    raise NotFound("no WebSocket route: /" + "/".join(segments))


@dataclass(frozen=True, slots=True)
class _Handshake:
    """What an accepted handshake asked for."""

    route: WsRoute
    cls: str
    name: str
    binary: bool  # the client asked for CBOR
    subprotocol: str | None  # the one accepted, of those the client offered
    params: dict[str, str]  # the query parameters the object sees (``ws.params``)


@final
class WebSockets:
    """Every WebSocket connection of one node (``Node.websockets``); see the module docstring."""

    def __init__(
        self, runtime: Runtime, config: Config, metrics: Metrics, router: Cluster | None = None
    ) -> None:
        self.runtime = runtime
        #: the cluster (None: one node): sockets for objects another node owns are relayed there
        self.router = router
        self._relays: set[Relay] = set()
        #: WebSockets held now, counted from their handshake (``reserve``; ``max_websockets``)
        self.held = 0
        self.config = config
        self.metrics = metrics
        #: set by ``close_all``; new handshakes get 503 from then on
        self.draining = False
        self._connections: set[_Connection] = set()
        self._token = None if config.auth_token is None else config.auth_token.encode()
        #: opens every route the call token opens (there are no admin WebSocket routes)
        self._admin_token = None if config.admin_token is None else config.admin_token.encode()
        self._origins = frozenset(
            normalize_origin(origin) for origin in config.allowed_origins if origin != "*"
        )
        self._any_origin = "*" in config.allowed_origins or (
            not config.allowed_origins and config.binds_loopback
        )

    def close_all(self, code: int = GOING_AWAY[0], reason: str = GOING_AWAY[1]) -> None:
        """Start closing every open socket with ``code`` and refuse new ones (never blocks)."""
        self.draining = True
        for connection in list(self._connections):
            connection.close_nowait(code, reason)
        for relay in list(self._relays):
            relay.close_nowait(code, reason)

    async def serve(
        self, scope: Message, segments: tuple[str, ...] | None, receive: Receive, send: Send
    ) -> None:
        """Serve one WebSocket connection to its end. ``segments`` is the decoded path (None: not UTF-8)."""
        if (await receive())["type"] != "websocket.connect":
            return
        try:
            handshake = self._check_handshake(scope, segments)
            owner = self._owner_link(scope, handshake)
            self.reserve()
        except Exception as exc:
            await self.refuse(send, exc)
            return
        try:
            await self._serve_checked(handshake, owner, scope, receive, send)
        finally:
            self.held -= 1

    def reserve(self) -> None:
        """Count one more WebSocket held by this node (object sockets, relays, SDK connections), or
        refuse it with Overloaded (503, ``Retry-After``) at ``max_websockets``; the caller gives it
        back with ``held -= 1`` when the socket ends (it is counted from before the accept, so
        handshakes in progress cannot overshoot the bound)."""
        limit = self.config.max_websockets
        if self.held >= limit:
            raise Overloaded(
                f"the node holds max_websockets ({limit}) WebSockets; try again later or another node",
                retry_after=1.0,
            )
        self.held += 1

    async def _serve_checked(
        self, handshake: _Handshake, owner: PeerLink | None, scope: Message, receive: Receive, send: Send
    ) -> None:
        route_name = handshake.route.name
        if owner is not None:
            await self._relay(owner, route_name, scope, receive, send)
            return
        # No checkpoint since the draining check: close_all cannot miss this connection.
        connection = _Connection(send, handshake.binary, self.metrics, self.config.max_send_queue_bytes)
        self._connections.add(connection)
        try:
            await send({"type": "websocket.accept", "subprotocol": handshake.subprotocol})
            self.metrics.request_finished(route_name, 101)
            self.metrics.websocket_connections += 1
            try:
                code = await self._serve_accepted(connection, handshake, receive)
            finally:
                self.metrics.websocket_connections -= 1
            self.metrics.websocket_closes[code] += 1
            if log.isEnabledFor(logging.DEBUG):
                log.debug(
                    "websocket closed",
                    extra={"event": "websocket_closed", "route": route_name, "code": code},
                )
        finally:
            self._connections.discard(connection)

    def _owner_link(self, scope: Message, handshake: _Handshake) -> PeerLink | None:
        """The link to the object's owner if another node owns it (None: serve it here). A socket
        another node relayed here for an object this node does not own is refused (OwnerUnavailable)."""
        router = self.router
        if router is None:
            return None
        try:
            object_id = self.runtime.app.id_from_name(handshake.cls, handshake.name)
        except Exception:
            return None  # closed with its error after the accept, as on a single node
        link = router.link_for(object_id)
        if link is not None:
            relayed_by = next((v for k, v in scope["headers"] if k == RELAYED_BY_HEADER), None)
            if relayed_by is not None:
                raise router.not_owner(object_id, relayed_by.decode("latin-1"))
        return link

    async def _relay(
        self, owner: PeerLink, route_name: str, scope: Message, receive: Receive, send: Send
    ) -> None:
        """Relay the socket to its owner (``server/cluster/relay.py``) until it closes."""
        assert self.router is not None
        relay = Relay(owner, self.router.self_id, self.config.max_frame_bytes)
        self._relays.add(relay)  # no checkpoint since the draining check: close_all sees it
        self.metrics.relayed(owner.peer.id)
        self.metrics.websocket_connections += 1
        try:
            code = await relay.serve(scope, receive, send, self.refuse)
        finally:
            self.metrics.websocket_connections -= 1
            self._relays.discard(relay)
        if code is not None:
            self.metrics.request_finished(route_name, 101)
            self.metrics.websocket_closes[code] += 1

    def _check_handshake(self, scope: Message, segments: tuple[str, ...] | None) -> _Handshake:
        """What the handshake asks for, or the error that refuses it (in the order of the docstring)."""
        if segments is None:
            raise InvalidArgument("the path is not valid percent-encoded UTF-8")
        query = _parse_query(scope["query_string"])
        binary, subprotocol = _negotiate(scope.get("subprotocols") or [], query.get("format"))
        origin, host, authorization = _access_headers(scope)
        self._check_origin(origin, host)
        self._check_token(authorization, query.get("token"))
        route, cls, object_name = match(segments)
        if self.draining or self.runtime.closing:
            raise ShuttingDown("the node is shutting down")
        # The object sees the query parameters except the ones the node consumed (the node's token
        # is not the object's business; without a node token, ``token`` is the object's own).
        query.pop("format", None)
        if self._token is not None:
            query.pop("token", None)
        return _Handshake(route, cls, object_name, binary, subprotocol, query)

    async def _serve_accepted(self, connection: _Connection, handshake: _Handshake, receive: Receive) -> int:
        """Register the socket, read until it closes, unregister it; returns the close code."""
        hub = self.runtime.sockets
        object_id: ObjectId | None = None
        ws: WebSocket | None = None
        code, reason = 1006, ""
        async with trio.open_nursery() as nursery:
            connection.attach(nursery.cancel_scope)  # a close started bounds the rest in time
            nursery.start_soon(connection.serve_writer, self._internal_error)
            try:
                try:
                    object_id = self.runtime.app.id_from_name(handshake.cls, handshake.name)
                    ws = await hub.connect(
                        object_id, connection, binary=connection.binary, params=handshake.params
                    )
                except Exception as exc:
                    error = as_actor_error(exc, report_internal=self._internal_error)
                    connection.close_nowait(close_code_of(error), close_reason(error.message))
                code, reason = await self._read(connection, object_id, ws, receive)
            finally:
                if connection.close_code is not None:  # the node closed: hypercorn cannot tell
                    code, reason = connection.close_code, connection.close_reason
                if ws is not None and object_id is not None:
                    with trio.CancelScope(shield=True):  # bounded by call_timeout
                        await self._disconnect(object_id, ws, code, reason)
                nursery.cancel_scope.cancel()
        return code

    async def _disconnect(self, object_id: ObjectId, ws: WebSocket, code: int, reason: str) -> None:
        """Unregister the socket and run ``on_close``. An ``on_close`` refused with Overloaded never
        reached the object, so it is retried after ``retry_after`` until ``call_timeout`` (a crowd
        leaving at once, as in a drain, can outnumber ``max_queue_depth``); other failures are logged:
        ``on_close`` has no caller to tell."""
        hub, deadline = self.runtime.sockets, trio.current_time() + self.config.call_timeout
        while True:
            try:
                await hub.disconnect(object_id, ws, code, reason)  # unregisters first, every time
                return
            except Overloaded as exc:
                if trio.current_time() + exc.retry_after < deadline:
                    await trio.sleep(exc.retry_after)
                    continue
                failure: ActorError = exc
            except ShuttingDown:
                return  # the runtime closes only after hypercorn gave up on this connection
            except ActorError as exc:  # on_close raised
                failure = exc
            log.warning(
                "on_close failed",
                extra={"event": "on_close_failed", "type": failure.type, "error": failure.message},
            )
            return

    async def _read(
        self, connection: _Connection, object_id: ObjectId | None, ws: WebSocket | None, receive: Receive
    ) -> tuple[int, str]:
        """Deliver each message as a turn, in order, until the client's close; returns its code."""
        hub, metrics, limit = self.runtime.sockets, self.metrics, self.config.max_frame_bytes
        while True:
            message = await receive()
            kind = message["type"]
            if kind == "websocket.disconnect":
                return int(message.get("code") or 1005), str(message.get("reason") or "")
            if kind != "websocket.receive":
                continue
            metrics.websocket_messages_in += 1
            if ws is None or object_id is None or connection.close_code is not None:
                continue  # closing: the object hears nothing more from this socket
            try:
                text = message.get("text")
                data = _decode_json(text, limit) if text is not None else _decode_cbor(message["bytes"])
                await hub.receive(object_id, ws, data)
            except Exception as exc:
                self._message_failed(connection, exc)

    def _message_failed(self, connection: _Connection, exc: Exception) -> None:
        """A message did not decode or its turn failed: an error frame, or a close for the errors that
        end the socket (the node is draining, the message was over the size limit)."""
        if isinstance(exc, ShuttingDown) or (isinstance(exc, LimitExceeded) and exc.limit == FRAME_LIMIT):
            connection.close_nowait(close_code_of(exc), close_reason(exc.message))
            return
        frame = error_frame(exc, debug=self.config.debug, report_internal=self._internal_error)
        try:
            data = codec.encode(frame, cbor=connection.binary)
            connection.send_nowait(data if connection.binary else data.decode())
        except Exception as encode_exc:  # a frame is strings and numbers; a last resort
            self._internal_error("error frame", repr(encode_exc))

    def _internal_error(self, reference: str, message: str) -> None:
        self.metrics.internal_error(reference, message)

    def check_access(self, scope: Message) -> dict[str, str]:
        """The handshake's query parameters, once its Origin and token pass (InvalidArgument for a
        query that is not UTF-8, Forbidden, Unauthorized); the SDK's route (``rpc.py``) shares them."""
        query = _parse_query(scope["query_string"])
        origin, host, authorization = _access_headers(scope)
        self._check_origin(origin, host)
        self._check_token(authorization, query.get("token"))
        return query

    def _check_origin(self, origin: str | None, host: str | None) -> None:
        if origin is None or self._any_origin:
            return  # not a browser, or every origin is allowed
        normalized = normalize_origin(origin)
        if normalized is not None and (
            normalized in self._origins or (host is not None and _same_origin(normalized, host))
        ):
            return
        raise Forbidden(f"origin {origin!r} may not open WebSockets here (allowed_origins)")

    def _check_token(self, authorization: bytes | None, query_token: str | None) -> None:
        if self._token is None:
            return
        for token in (self._token, self._admin_token):
            if token is None:
                continue
            if authorization is not None and hmac.compare_digest(authorization, b"Bearer " + token):
                return
            if query_token is not None and hmac.compare_digest(query_token.encode(), token):
                return
        raise Unauthorized("missing or wrong bearer token (Authorization: Bearer <token>, or ?token=)")

    async def refuse(self, send: Send, exc: Exception) -> None:
        """Answer the handshake with the HTTP error reply of ``exc`` instead of accepting it."""
        status, body, headers = error_reply(
            exc, debug=self.config.debug, report_internal=self._internal_error
        )
        data = codec.encode(body, cbor=False)
        headers = [(b"content-type", codec.JSON), (b"content-length", str(len(data)).encode()), *headers]
        await send({"type": "websocket.http.response.start", "status": status, "headers": headers})
        await send({"type": "websocket.http.response.body", "body": data})
        self.metrics.request_finished("<none>", status)


@final
class _Connection:
    """One accepted WebSocket: the ``SocketTransport`` the hub delivers to, and its writer's queue.

    ``send_nowait`` and ``close_nowait`` only queue (the hub calls them as a turn's commit releases
    its frames); ``serve_writer`` writes the queue in order and then the close, if one was started.
    Kept small: thousands of these sit idle while their objects hibernate.
    """

    __slots__ = (
        "_deadline", "_max_bytes", "_parked", "_pending", "_pending_bytes", "_queue", "_scope", "_send",
        "binary", "close_code", "close_reason", "metrics",
    )  # fmt: skip

    def __init__(self, send: Send, binary: bool, metrics: Metrics, max_bytes: int) -> None:
        self._send = send
        #: frames not yet taken by the writer (a list the writer swaps out: cheaper than a deque idle)
        self._queue: list[str | bytes] = []
        #: frames queued and not yet written (the queue plus the writer's batch), and their size
        #: (characters for text frames); both 0 once the backlog is dropped
        self._pending = 0
        self._pending_bytes = 0
        self._max_bytes = max_bytes
        #: the writer, while it waits for a frame
        self._parked: trio.lowlevel.Task | None = None
        #: the connection's cancel scope, once it runs; a close started sets its deadline
        self._scope: trio.CancelScope | None = None
        self._deadline = math.inf
        self.binary = binary
        self.metrics = metrics
        #: the code of the close the node started; None while open or if only the client closed
        self.close_code: int | None = None
        self.close_reason = ""

    def attach(self, scope: trio.CancelScope) -> None:
        """``scope`` ends the connection; a close started later (or earlier) bounds it in time."""
        scope.deadline = self._deadline
        self._scope = scope

    def send_nowait(self, data: str | bytes) -> None:
        if self.close_code is not None:
            return
        size = len(data)
        if self._pending >= MAX_SEND_QUEUE_FRAMES:
            self._fell_behind(f"{MAX_SEND_QUEUE_FRAMES} frames", SEND_QUEUE_LIMIT)
            return
        if self._pending and self._pending_bytes + size > self._max_bytes:
            self._fell_behind(f"{self._pending_bytes + size} bytes", SEND_QUEUE_BYTES_LIMIT)
            return
        self._queue.append(data)
        self._pending += 1
        self._pending_bytes += size
        self._wake()

    def _fell_behind(self, how_far: str, limit: str) -> None:
        """The client cannot keep up: drop the backlog (the writer drops its batch) and close."""
        self._queue = []
        self._pending = self._pending_bytes = 0
        error = LimitExceeded(f"the client fell {how_far} behind", limit=limit)
        self.close_nowait(close_code_of(error), error.message)

    def close_nowait(self, code: int, reason: str) -> None:
        if self.close_code is not None:
            return
        self.close_code, self.close_reason = code, reason
        self._give_up_after(CLOSE_TIMEOUT_SECONDS)
        self._wake()

    def _give_up_after(self, seconds: float) -> None:
        self._deadline = min(self._deadline, trio.current_time() + seconds)
        if self._scope is not None:
            self._scope.deadline = self._deadline

    def _wake(self) -> None:
        task = self._parked
        if task is not None:
            self._parked = None
            trio.lowlevel.reschedule(task)

    def _abort(self, _: Any) -> trio.lowlevel.Abort:
        self._parked = None
        return trio.lowlevel.Abort.SUCCEEDED

    async def serve_writer(self, report_internal: Callable[[str, str], None]) -> None:
        """Write queued frames in order, then the close; park (no task switch per frame) when idle."""
        send, metrics = self._send, self.metrics
        try:
            while True:
                batch, self._queue = self._queue, []
                for data in batch:
                    if self._pending == 0:
                        break  # dropped (perhaps while the last send waited): the client fell behind
                    if type(data) is str:
                        await send({"type": "websocket.send", "text": data})
                    else:
                        await send({"type": "websocket.send", "bytes": data})
                    if self._pending:
                        self._pending -= 1
                        self._pending_bytes -= len(data)
                    metrics.websocket_messages_out += 1
                if self._queue:
                    continue
                if self.close_code is not None:
                    code, reason = self.close_code, self.close_reason
                    await send({"type": "websocket.close", "code": code, "reason": reason})
                    return
                self._parked = trio.lowlevel.current_task()
                await trio.lowlevel.wait_task_rescheduled(self._abort)
        except Exception as exc:  # hypercorn refused a message: a bug; give the socket up soon
            as_actor_error(exc, report_internal=report_internal)
            self.close_code = self.close_code or 1011
            self._give_up_after(CLOSE_TIMEOUT_SECONDS)


#### Decoding


def _decode_json(text: str, limit: int) -> Any:
    # hypercorn's size limit counts characters; a text frame may still be up to 4x as many bytes
    if len(text) > limit // 4 and len(text.encode()) > limit:
        raise LimitExceeded(f"message is over max_frame_bytes ({limit})", limit=FRAME_LIMIT)
    try:
        value = _decode_json_text(text)
    except (ValueError, RecursionError) as exc:
        raise InvalidArgument(f"malformed JSON message: {exc}") from None
    codec.refuse_lone_surrogates(value, text, "message")  # wsproto checked the frame is UTF-8
    return value


def _not_json(constant: str) -> Any:
    """Python's json reads NaN and Infinity; JSON has neither, and a browser could not read them back."""
    raise ValueError(f"{constant} is not JSON")


#: json.loads with an option builds a new decoder for every message; this one is made once
_decode_json_text = json.JSONDecoder(parse_constant=_not_json).decode


def _decode_cbor(data: bytes) -> Any:
    try:
        value = cbor2.loads(data)
    except Exception as exc:  # cbor2 raises several types for malformed input
        raise InvalidArgument(f"malformed CBOR message: {exc}") from None
    problem = plain_value_problem(value, "message")
    if problem:
        raise InvalidArgument(problem)
    return value


#### Handshake


def _parse_query(query: bytes) -> dict[str, str]:
    if not query:
        return {}
    try:
        parsed = parse_qs(query.decode("ascii"), keep_blank_values=True, errors="strict")
    except UnicodeDecodeError:
        raise InvalidArgument("the query string is not valid percent-encoded UTF-8") from None
    return {key: values[-1] for key, values in parsed.items()}


def _access_headers(scope: Message) -> tuple[str | None, str | None, bytes | None]:
    """The handshake's ``Origin``, ``Host`` and ``Authorization`` headers (None when absent)."""
    origin = host = authorization = None
    for name, value in scope["headers"]:
        if name == b"origin":
            origin = value.decode("latin-1")
        elif name == b"host":
            host = value.decode("latin-1")
        elif name == b"authorization":
            authorization = value
    return origin, host, authorization


def _negotiate(subprotocols: list[str], format: str | None) -> tuple[bool, str | None]:
    """Whether the client asked for CBOR, and the subprotocol to accept (one it offered, or None)."""
    if format not in (None, "json", "cbor"):
        raise InvalidArgument(f"format must be json or cbor, not {format!r}")
    subprotocol = "cbor" if "cbor" in subprotocols else "json" if "json" in subprotocols else None
    return subprotocol == "cbor" or format == "cbor", subprotocol


def _same_origin(origin: str, host: str) -> bool:
    """Whether the normalized ``origin`` names the host the browser connected to (``Host``)."""
    scheme = origin.partition("://")[0]
    return normalize_origin(f"{scheme}://{host}") == origin
