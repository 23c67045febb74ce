"""The node's one ASGI callable: :class:`Node` turns HTTP requests and WebSockets into runtime calls.

Guarantees
- Every HTTP request gets exactly one reply, with ``Content-Length``, unless the client disconnected
  first; failures become the JSON/CBOR error body of ``errors.py``.
- Order of checks, cheapest and least revealing first: path decoding (400), bearer token (401, so an
  unauthenticated client cannot probe which routes exist; the call or the admin token), route
  (404/405), the admin token on an admin route when the node has one (``http.py``: 403 for the call
  token, 401 for none or a wrong one), declared body size (413,
  decided from ``Content-Length`` before a byte of the body is read), then the body as it streams
  (413 as soon as the running total passes ``max_body_bytes``; the rest is never buffered).
- Keep-alive never loses a request: a body the reply did not need (a 400, 401, 404 or 405, or a
  route that takes no body) is read to its end and dropped before the reply, while it is within
  ``max_body_bytes``, so the connection can carry the next request. When the node will close the
  connection instead (a 413: the rest of the body is never read), the reply says
  ``Connection: close``.
- Tokens are compared in constant time and never logged; each refused one is logged once (WARNING,
  ``event=unauthorized``) with the peer's address and the path.
- Readiness: ``ready`` turns false as soon as shutdown begins (before hypercorn stops accepting and
  the runtime drains), so a load balancer stops sending new work while in-flight calls finish.

WebSocket connections go to ``websocket.py`` (:class:`~server.websocket.WebSockets`): the same
path decoding, then their own checks (Origin, token, route) and one loop per connection; the SDK's
``/v1/connect`` goes to ``rpc.py`` with the same checks. ``begin_drain`` flips readiness, closes
every socket with 1001 and lets SDK connections answer their calls in flight before theirs.
"""

from __future__ import annotations

import collections
import hmac
import logging
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote_to_bytes

import trio

from actors.errors import ActorError, InvalidArgument
from actors.placement import ClusterMap
from actors.wire import Call

from . import codec, http
from .cluster import operations
from .cluster.accept import serve_peer
from .cluster.links import PEER_PATH
from .cluster.router import routed_call
from .errors import Forbidden, Unauthorized, body_too_large, error_reply
from .rpc import RPC_PATH, Rpc
from .websocket import WebSockets

if TYPE_CHECKING:
    from collections.abc import Sequence

    from actors import ObjectId, Runtime

    from .cluster import Cluster
    from .cluster.file_member import FileMember
    from .cluster.handoff import Mover
    from .cluster.receiver import Receiver
    from .config import Config
    from .metrics import Metrics

__all__ = ["Node"]

log = logging.getLogger("server")

Scope = dict[str, Any]
Receive = Any
Send = Any


#: the node link's path, as decoded segments
PEER_SEGMENTS = tuple(PEER_PATH[1:].split("/"))


class _Disconnected(Exception):
    """The client went away while its body was being read; there is no one to reply to."""


class Node:
    """The ASGI application of one node (hypercorn calls it once per connection event)."""

    def __init__(
        self, runtime: Runtime, config: Config, metrics: Metrics, cluster: Cluster | None = None
    ) -> None:
        self.runtime = runtime
        #: the cluster this node belongs to (None: a single node that owns every object)
        self.router = cluster
        #: in a cluster: hands objects stored here to their new owners, and receives them
        self.mover: Mover | None = None
        self.receiver: Receiver | None = None
        #: with a file membership: takes ``actors cluster apply``'s changes
        self.file_member: FileMember | None = None
        self.config = config
        self.metrics = metrics
        #: set when shutdown begins; /readyz answers 503 from then on
        self.draining = False
        #: HTTP requests whose handler runs now, by route (what a slow drain waits for)
        self.http_in_flight: collections.Counter[str] = collections.Counter()
        token, admin = config.auth_token, config.admin_token
        self._authorization = None if token is None else b"Bearer " + token.encode()
        self._admin_authorization = None if admin is None else b"Bearer " + admin.encode()
        self.websockets = WebSockets(runtime, config, metrics, cluster)
        #: the SDK's route, /v1/connect (``rpc.py``)
        self.rpc = Rpc(self)
        self.advertise(f"{config.scheme}://{config.bind}")

    def advertise(self, bound_url: str) -> None:
        """Name this node in the cluster map, now that ``bound_url`` is known (``serve`` calls it
        with hypercorn's URL, which has the real port when ``Config.port`` is 0)."""
        #: this node's name and base URL, as clients see them (Welcome, /v1/cluster)
        if self.router is not None:  # names and URLs come from the membership
            self.node_name, self.url = self.router.self_id, self.router.membership.me.url
            return
        self.node_name, self.url = self.config.cluster_node(bound_url)
        #: the cluster as clients see it: one node, epoch 0
        self._single = ClusterMap(((self.node_name, self.url),))

    @property
    def cluster(self) -> ClusterMap:
        """The cluster map in force (it changes with an etcd membership)."""
        return self._single if self.router is None else self.router.map

    @property
    def ready(self) -> bool:
        """Serving, and in a cluster every peer has been reached once."""
        reached = self.router is None or self.router.reached
        return reached and not self.draining and not self.runtime.closing

    async def call(
        self, object_id: ObjectId, method: str, args: Sequence[Any] = (), kwargs: dict[str, Any] | None = None
    ) -> Any:
        """Call ``method`` on the object wherever it lives: here, or forwarded to its owner."""
        router = self.router
        if router is None:
            return await self.runtime.call(object_id, method, tuple(args), kwargs)
        assert object_id.name is not None  # ids without names are not routed over HTTP
        call = Call(0, object_id.cls, object_id.name, method, list(args), dict(kwargs or {}))
        return await routed_call(router, self.runtime, object_id, call)

    async def node_operation(self, operation: str, kwargs: dict[str, Any]) -> Any:
        """A peer asks for this node's part of a cluster-wide operation (``cluster/operations.py``)."""
        return await operations.node_operation(self, operation, kwargs)

    def begin_drain(self) -> None:
        """Shutdown begins: /readyz turns 503, new WebSockets are refused and open ones closed with
        1001 (their ``on_close`` turns still run: the runtime closes only after the connections end;
        SDK connections first answer their calls in flight)."""
        self.draining = True
        self.websockets.close_all()
        self.rpc.close_all()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "websocket":
            try:
                segments: tuple[str, ...] | None = _segments(scope.get("raw_path") or scope["path"].encode())
            except InvalidArgument:
                segments = None  # refused with 400 by the WebSocket layer, after the ASGI handshake
            if segments == RPC_PATH:
                await self.rpc.serve(scope, receive, send)
            elif segments == PEER_SEGMENTS:
                await serve_peer(self, scope, receive, send)
            else:
                await self.websockets.serve(scope, segments, receive, send)
        elif kind == "lifespan":
            await _lifespan(receive, send)

    #### HTTP

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        content_type = accept = authorization = content_length = None
        chunked = False
        for name, value in scope["headers"]:
            if name == b"content-type":
                content_type = value
            elif name == b"accept":
                accept = value
            elif name == b"authorization":
                authorization = value
            elif name == b"content-length":
                content_length = value
            elif name == b"transfer-encoding":
                chunked = True
        # the request has a body that is not read yet
        unread = chunked or (content_length is not None and content_length != b"0")
        cbor = content_type is not None and content_type.startswith(codec.CBOR)
        reply_cbor = cbor or (accept is not None and codec.CBOR in accept)
        route_name = "<none>"
        started = trio.current_time()
        try:
            segments = _segments(scope.get("raw_path") or scope["path"].encode())
            admin = self._is_admin(authorization)
            if self._authorization is not None and segments not in http.UNAUTHENTICATED and not admin:
                self._check_token(authorization, scope)
            route, params = http.match(scope["method"], segments)
            route_name = route.name
            if route.admin and self._admin_authorization is not None and not admin:
                self._refuse_admin(authorization, scope)
            body = b""
            if route.reads_body:
                body = await self._read_body(receive, content_length)
                unread = False
            request = http.Request(scope["method"], params, scope["query_string"], body, cbor, reply_cbor)
            in_flight = self.http_in_flight
            in_flight[route_name] += 1
            try:
                reply = await route.handler(self, request)
            finally:
                in_flight[route_name] -= 1
        except _Disconnected:
            return
        except Exception as exc:
            reply = self._error_reply(exc, reply_cbor)
        # A body left unread (answered before reading it, or by a route that takes none) is read to
        # its end and dropped while it is within max_body_bytes: hypercorn closes a connection whose
        # request was not read to its end, and a keep-alive client would lose its next request to
        # that silent close. Past the limit (413) the node closes, and says so.
        close = reply.status == 413
        if unread and not close:
            try:
                await self._read_body(receive, content_length, keep=False)
            except _Disconnected:
                return
            except ActorError:  # over max_body_bytes, or a Content-Length that is not a number
                close = True
        headers = [
            (b"content-type", reply.content_type),
            (b"content-length", str(len(reply.body)).encode()),
            *reply.headers,
        ]
        if close:
            headers.append((b"connection", b"close"))
        await send({"type": "http.response.start", "status": reply.status, "headers": headers})
        await send({"type": "http.response.body", "body": reply.body})
        self.metrics.request_finished(route_name, reply.status)
        if log.isEnabledFor(logging.DEBUG):
            log.debug(
                "request",
                extra={
                    "event": "request",
                    "method": scope["method"],
                    "path": scope["path"],
                    "status": reply.status,
                    "ms": round((trio.current_time() - started) * 1000, 3),
                },
            )

    def _is_admin(self, authorization: bytes | None) -> bool:
        """Whether the request carries the admin token (compared in constant time)."""
        expected = self._admin_authorization
        return (
            expected is not None
            and authorization is not None
            and hmac.compare_digest(authorization, expected)
        )

    def _check_token(self, authorization: bytes | None, scope: Scope) -> None:
        expected = self._authorization
        assert expected is not None
        if authorization is None or not hmac.compare_digest(authorization, expected):
            _log_refused(scope, authorization)
            raise Unauthorized("missing or wrong bearer token (Authorization: Bearer <token>)")

    def _refuse_admin(self, authorization: bytes | None, scope: Scope) -> None:
        """An admin route without the admin token: 403 for the call token, else 401."""
        call = self._authorization
        if call is not None and authorization is not None and hmac.compare_digest(authorization, call):
            raise Forbidden(
                "this is an admin route: it needs the admin token (Authorization: Bearer <admin token>);"
                " the call token does not open it"
            )
        _log_refused(scope, authorization)
        raise Unauthorized(
            "this is an admin route: it needs the admin token (Authorization: Bearer <admin token>)"
        )

    async def _read_body(self, receive: Receive, content_length: bytes | None, *, keep: bool = True) -> bytes:
        """The whole request body (``keep=False``: read to its end, dropped, ``b""`` returned).

        Raises LimitExceeded past ``max_body_bytes`` (declared or streamed), InvalidArgument for a
        Content-Length that is not a number, _Disconnected if the client went away.
        """
        limit = self.config.max_body_bytes
        if content_length is not None:
            try:
                declared = int(content_length)
            except ValueError:
                raise InvalidArgument("Content-Length is not a number") from None
            if declared > limit:
                raise body_too_large(limit)
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise _Disconnected
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise body_too_large(limit)
            if keep:
                chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    def _error_reply(self, exc: Exception, reply_cbor: bool) -> http.Reply:
        status, body, headers = error_reply(
            exc, debug=self.config.debug, report_internal=self.metrics.internal_error
        )
        try:
            data = codec.encode(body, cbor=reply_cbor)
        except Exception:  # an error body is plain strings and numbers; this is a last resort
            data = b'{"error":{"type":"InternalError","message":"internal error"}}'
            reply_cbor = False
        return http.Reply(status, data, codec.CBOR if reply_cbor else codec.JSON, headers)


def _log_refused(scope: Scope, authorization: bytes | None) -> None:
    """One line per refused token, naming the peer and the path, never the token."""
    client = scope.get("client")
    log.warning(
        "refused: missing or wrong token",
        extra={
            "event": "unauthorized",
            "peer": f"{client[0]}:{client[1]}" if client else None,
            "path": scope["path"],
            "token_given": authorization is not None,
        },
    )


def _segments(raw_path: bytes) -> tuple[str, ...]:
    """The path's segments, each percent-decoded as UTF-8 (``%2F`` stays inside its segment)."""
    if not raw_path.startswith(b"/"):
        return (raw_path.decode("latin-1"),)  # "*" or an absolute URI: matches no route
    try:
        return tuple(
            (unquote_to_bytes(part) if b"%" in part else part).decode("utf-8")
            for part in raw_path[1:].split(b"/")
        )
    except UnicodeDecodeError:
        raise InvalidArgument("the path is not valid percent-encoded UTF-8") from None


async def _lifespan(receive: Receive, send: Send) -> None:
    """Acknowledge startup and shutdown: the runtime is opened and closed by ``serve`` around us."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
