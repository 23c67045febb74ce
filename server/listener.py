"""Open connections per node: the bound (``max_connections``), and the accept loop that enforces it.

Guarantees
- A node holds at most ``max_connections`` client connections at once, of every kind: HTTP/1.1 and
  HTTP/2, idle keep-alive ones included, WebSockets (object sockets, the SDK's ``/v1/connect``,
  node links from peers), TLS or not, on every bind (the ``fd://`` shared socket of ``--workers``
  too). A connection counts from its accept until hypercorn is done with it and has closed its
  socket, however it ends (the client closes it, a timeout, the node's own close, a reset,
  cancellation at shutdown). A connection its client closed while it was idle between keep-alive
  requests is one hypercorn notices only when its keep-alive timer fires: its socket stays open
  (CLOSE_WAIT) and counted up to ``keep_alive_timeout`` longer. A client that ends with a request
  carrying ``Connection: close`` gives its slot back as soon as the reply is written.
- Past it, a new connection gets one reply, ``503`` with ``Connection: close``, ``Retry-After: 1``
  and the node's error body ``{"error": {"type": "Overloaded", "message": ..., "retry_after": 1.0}}``
  (``errors.py``), whatever it asked; then the node closes it. Connections already held are served
  as before. With TLS the reply follows the handshake; a client that chose HTTP/2 there (ALPN
  ``h2``) cannot read an HTTP/1.1 reply, and sees its connection closed.
- Refusing is bounded too: at most ``MAX_REFUSALS_IN_FLIGHT`` refused connections are being answered
  at once, each for at most ``REFUSAL_SECONDS`` (handshake, reply, and reading what the client
  still sends, so that closing does not reset the connection before the client reads the reply).
  A connection refused beyond those is closed at once with no reply. Both kinds are counted.
- ``max_connections`` stays below the open-file limit: :func:`connection_budget` lowers it (with a
  warning) to what the limit leaves after ``FD_RESERVE`` descriptors for everything else (half the
  limit, when it is that small). The limit is the soft one, which the runtime has raised to the hard
  one by then.

Mechanism. ASGI never sees a connection (only requests), so the bound lives where connections are
accepted. hypercorn's ``hypercorn.trio.serve`` builds its listeners and its per-connection handler
inside ``worker_serve`` and offers no hook for either. :func:`serve_connections` takes the same
steps with hypercorn's parts (lifespan, listeners, its per-connection ``TCPServer``, the graceful
shutdown), and one more: each accepted stream goes through :meth:`ConnectionLimit.serve_one`, which
counts it around ``TCPServer`` or refuses it. So it uses hypercorn internals (``TCPServer``,
``Lifespan``, ``WorkerContext``): pyproject pins hypercorn to the minor version it was written
against, and ``tests/server/test_connections.py`` fails if hypercorn's
``worker_serve`` changes, so an upgrade re-reads it. Monkeypatching was the alternative, and worse:
it would change every hypercorn server in the process.

XX: objects and connections share the open-file limit; each is capped alone (``max_open_files``
by the runtime), so together they can still reach it (an accept then fails with EMFILE and trio
retries it after 100 ms). Node links count like any connection: a node at its cap refuses a peer's
new link too. A socket whose client closed it while idle could be closed (and given back) at once
rather than at hypercorn's keep-alive timer, but only hypercorn knows the connection is idle then
(after a request that was read whole, a client that half-closes still gets its reply).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any, cast

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio.lifespan import Lifespan
from hypercorn.trio.statsd import StatsdLogger
from hypercorn.trio.tcp_server import TCPServer
from hypercorn.trio.worker_context import WorkerContext
from hypercorn.typing import ConnectionState, LifespanState
from hypercorn.utils import ShutdownError, raise_shutdown, repr_socket_addr, wrap_app

from actors.errors import Overloaded

from .errors import error_reply

if TYPE_CHECKING:
    from hypercorn.typing import ASGIFramework

__all__ = [
    "FD_RESERVE",
    "MAX_REFUSALS_IN_FLIGHT",
    "REFUSAL_SECONDS",
    "ConnectionLimit",
    "ConnectionStatistics",
    "connection_budget",
    "serve_connections",
]

log = logging.getLogger("server")

#: refused connections being answered at once; past it they are closed without a reply
MAX_REFUSALS_IN_FLIGHT = 64
#: seconds a refused connection may take: TLS handshake, the reply, reading until the client closes
REFUSAL_SECONDS = 1.0
#: file descriptors max_connections leaves for everything else (listening sockets, the catalog,
#: logs, threads, dialled peers); the runtime keeps the same number apart from live objects
FD_RESERVE = 1024
#: a refused client is told to come back after this many seconds (``Retry-After``)
_RETRY_AFTER = 1.0
#: bytes read at once from a refused client (and discarded)
_RECEIVE_BYTES = 65536

Stream = trio.SocketStream | trio.SSLStream[trio.SocketStream]


@dataclass(frozen=True, slots=True)
class ConnectionStatistics:
    """What :meth:`ConnectionLimit.statistics` reports (the metrics publish it at scrape time)."""

    #: connections held now (counted from the accept until hypercorn is done with them)
    open: int
    #: connections refused since the node started: answered 503, or closed at once
    refused: int
    #: the bound in force (``Config.max_connections``, perhaps lowered by ``connection_budget``)
    max_connections: int


class ConnectionLimit:
    """The open connections of one node, at most ``max_connections``; the rest are refused."""

    def __init__(self, max_connections: int) -> None:
        if max_connections < 1:
            raise ValueError("max_connections must be at least 1")
        self.max_connections = max_connections
        self._open = 0
        self._refused = 0
        self._answering = 0  # refused connections being answered (at most MAX_REFUSALS_IN_FLIGHT)
        overloaded = Overloaded(
            f"the node holds max_connections ({max_connections}) connections; try again later or"
            " another node",
            retry_after=_RETRY_AFTER,
        )
        status, body, headers = error_reply(overloaded, debug=False, report_internal=lambda *_: None)
        self.refusal = _raw_reply(status, body, headers)

    def statistics(self) -> ConnectionStatistics:
        return ConnectionStatistics(self._open, self._refused, self.max_connections)

    async def serve_one(self, stream: Stream, serve: Callable[[Stream], Awaitable[None]]) -> None:
        """Run ``serve(stream)`` counted as one open connection until it ends, or refuse ``stream``
        past the bound. There is no checkpoint between the check and the count, so the bound holds
        exactly. (hypercorn's ``TCPServer`` closes its socket as it ends.)"""
        if self._open >= self.max_connections:
            self._refused += 1
            if self._answering >= MAX_REFUSALS_IN_FLIGHT:
                await trio.aclose_forcefully(stream)
                return
            self._answering += 1
            try:
                await _refuse(stream, self.refusal)
            finally:
                self._answering -= 1
            return
        self._open += 1
        try:
            await serve(stream)
        finally:
            self._open -= 1


def _raw_reply(status: int, body: dict[str, Any], headers: list[tuple[bytes, bytes]]) -> bytes:
    """``body`` as a whole HTTP/1.1 reply that closes its connection (written before any request is
    read, so it is the same for every request and for HTTP/1.0 clients)."""
    payload = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()
    head = [
        f"HTTP/1.1 {status} Service Unavailable".encode(),
        b"content-type: application/json",
        b"content-length: " + str(len(payload)).encode(),
        *(name + b": " + value for name, value in headers),
        b"connection: close",
    ]
    return b"\r\n".join(head) + b"\r\n\r\n" + payload


async def _refuse(stream: Stream, reply: bytes) -> None:
    """Write ``reply`` and close, reading (and dropping) what the client sends until it closes: a
    close with unread bytes would reset the connection and could destroy the reply unread."""
    with trio.move_on_after(REFUSAL_SECONDS):
        try:
            if isinstance(stream, trio.SSLStream):
                await stream.do_handshake()
            await stream.send_all(reply)
            if isinstance(stream, trio.abc.HalfCloseableStream):  # TCP; TLS cannot half-close
                await stream.send_eof()
            while await stream.receive_some(_RECEIVE_BYTES):
                pass
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
    await trio.aclose_forcefully(stream)


def connection_budget(requested: int, open_files: int | None = None) -> int:
    """``requested``, lowered (with a warning) to ``open_files`` less ``FD_RESERVE`` (less half of it
    when it is under twice ``FD_RESERVE``).

    ``open_files`` is the open-file limit; by default this process's soft limit, which the runtime
    raised to the hard limit when it opened (``serve`` opens it before it accepts a connection)."""
    if open_files is None:
        open_files = _open_file_limit()
        if open_files is None:
            return requested
    kept = min(FD_RESERVE, open_files // 2)  # half of a small limit
    budget = max(1, open_files - kept)
    if budget < requested:
        log.warning(
            "max_connections lowered from %d to %d: the open-file limit is %d (ulimit -n), and %d"
            " descriptors are kept for the rest of the node",
            requested,
            budget,
            open_files,
            kept,
            extra={"event": "max_connections_lowered", "max_connections": budget, "nofile": open_files},
        )
    return min(requested, budget)


def _open_file_limit() -> int | None:
    """This process's soft RLIMIT_NOFILE; None when there is none (or no ``resource`` module)."""
    try:
        import resource
    except ImportError:
        return None
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return None if soft == resource.RLIM_INFINITY else soft


async def serve_connections(
    app: ASGIFramework,
    config: HypercornConfig,
    limit: ConnectionLimit,
    *,
    shutdown_trigger: Callable[[], Awaitable[Any]],
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """``hypercorn.trio.serve(app, config, ...)`` with each connection counted by ``limit``.

    The same steps as hypercorn 0.18's ``worker_serve`` (lifespan, listeners, ``task_status.started``
    with the bound URLs, graceful shutdown that waits up to ``config.graceful_timeout`` for the
    connections), minus what the node never configures (QUIC binds, ``max_requests``)."""
    config.set_statsd_logger_class(StatsdLogger)
    wrapped = wrap_app(app, config.wsgi_max_body_size, "asgi")
    lifespan_state: LifespanState = {}
    lifespan = Lifespan(wrapped, config, lifespan_state)
    context = WorkerContext(None)
    async with trio.open_nursery() as lifespan_nursery:
        await lifespan_nursery.start(lifespan.handle_lifespan)
        await lifespan.wait_for_startup()
        async with trio.open_nursery() as server_nursery:
            listeners, binds = await _open_listeners(config)
            tcp_server = partial(TCPServer, wrapped, config, context, ConnectionState(lifespan_state.copy()))

            async def handle(stream: Stream) -> None:
                await limit.serve_one(stream, partial(_run_tcp_server, tcp_server))

            task_status.started(binds)
            try:
                async with trio.open_nursery(strict_exception_groups=True) as nursery:
                    nursery.start_soon(raise_shutdown, shutdown_trigger)
                    serve = partial(trio.serve_listeners, handle, listeners, handler_nursery=server_nursery)
                    nursery.start_soon(serve)
            except BaseExceptionGroup as error:
                _, other_errors = error.split((ShutdownError, KeyboardInterrupt))
                if other_errors is not None:
                    raise other_errors from None
            finally:
                await context.terminated.set()  # hypercorn closes idle keep-alive connections
                server_nursery.cancel_scope.deadline = trio.current_time() + config.graceful_timeout
        await lifespan.wait_for_shutdown()
        lifespan_nursery.cancel_scope.cancel()


async def _run_tcp_server(
    tcp_server: Callable[[trio.SSLStream[trio.SocketStream]], TCPServer], stream: Stream
) -> None:
    # TCPServer's annotation says SSLStream; it takes a SocketStream as well (hypercorn serves both)
    await tcp_server(cast("trio.SSLStream[trio.SocketStream]", stream))


async def _open_listeners(config: HypercornConfig) -> tuple[list[trio.abc.Listener[Stream]], list[str]]:
    """Listeners on ``config``'s sockets (TLS ones first, as hypercorn orders them) and their URLs."""
    sockets = config.create_sockets()
    for sock in [*sockets.secure_sockets, *sockets.insecure_sockets]:
        sock.listen(config.backlog)
    listeners: list[trio.abc.Listener[Stream]] = []
    binds: list[str] = []
    ssl_context = config.create_ssl_context()  # None without a certificate: no secure sockets then
    for sock in sockets.secure_sockets:
        assert ssl_context is not None
        plain = trio.SocketListener(trio.socket.from_stdlib_socket(sock))
        listeners.append(trio.SSLListener(plain, ssl_context, https_compatible=True))
        binds.append(f"https://{repr_socket_addr(sock.family, sock.getsockname())}")
    for sock in sockets.insecure_sockets:
        listeners.append(trio.SocketListener(trio.socket.from_stdlib_socket(sock)))
        binds.append(f"http://{repr_socket_addr(sock.family, sock.getsockname())}")
    for bind in binds:
        await config.log.info(f"Running on {bind} (CTRL + C to quit)")
    return listeners, binds
