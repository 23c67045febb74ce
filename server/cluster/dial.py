"""Opening a WebSocket to a peer node: TCP (TLS for https peers), then trio-websocket's handshake.

Guarantee: the TCP stream is closed whatever happens, a refused handshake included (trio-websocket's
``open_websocket_url`` leaves that socket open), so redialling a peer that refuses costs nothing.
Failures come out bare, not in an exception group: ``ConnectionRejected`` (an HTTP refusal, with
its status and body), ``HandshakeError``, ``OSError`` or ``trio.TooSlowError`` past ``timeout``; a
peer whose certificate does not verify is an ``ssl.SSLError`` (an OSError), at once: the TLS handshake
runs before the WebSocket's.

TLS: an ``https`` peer is verified (chain and host name) with :data:`PEER_SSL_CONTEXT`, which
``server.serve`` sets for its node from ``--tls-ca`` (the CAs of a private cluster), else the
system's trust store. A context variable rather than an argument: every task of one node inherits
it, links and relays alike, and two nodes in one process (tests) keep their own.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from contextvars import ContextVar
from urllib.parse import urlsplit

import trio
from trio_websocket import WebSocketConnection, wrap_client_stream

__all__ = ["PEER_SSL_CONTEXT", "failure_of", "open_peer_websocket", "ws_base"]

#: bytes read from the socket at once (trio-websocket's default, 4 KiB, is small for batches)
_RECEIVE_BUFFER_BYTES = 64 * 1024
_CLOSE_SECONDS = 1.0

#: how this node verifies an ``https`` peer (None: the system's trust store)
PEER_SSL_CONTEXT: ContextVar[ssl.SSLContext | None] = ContextVar("PEER_SSL_CONTEXT", default=None)


def ws_base(url: str) -> str:
    """A node's base URL ``http(s)://host:port`` as the WebSocket origin ``ws(s)://host:port``."""
    parts = urlsplit(url)
    return ("wss://" if parts.scheme == "https" else "ws://") + parts.netloc


@asynccontextmanager
async def open_peer_websocket(
    base_url: str,
    resource: str,
    *,
    headers: list[tuple[bytes, bytes]] | None = None,
    subprotocols: list[str] | None = None,
    max_message_size: int,
    timeout: float,
) -> AsyncIterator[WebSocketConnection]:
    """A client WebSocket to ``resource`` (path and query) on the node at ``base_url``."""
    parts = urlsplit(base_url)
    secure = parts.scheme == "https"
    port = parts.port or (443 if secure else 80)
    with trio.fail_after(timeout):
        if secure:
            context = PEER_SSL_CONTEXT.get() or ssl.create_default_context()
            stream: (
                trio.SocketStream | trio.SSLStream[trio.SocketStream]
            ) = await trio.open_ssl_over_tcp_stream(
                parts.hostname or "", port, ssl_context=context, https_compatible=True
            )
        else:
            stream = await trio.open_tcp_stream(parts.hostname or "", port)
    failure: BaseException | None = None
    try:
        if isinstance(stream, trio.SSLStream):  # a certificate that does not verify fails here, named
            await _tls_handshake(stream, timeout)
        async with trio.open_nursery() as nursery:
            try:
                with trio.fail_after(timeout):
                    ws = await wrap_client_stream(
                        nursery,
                        stream,
                        parts.netloc,
                        resource,
                        subprotocols=subprotocols,
                        extra_headers=headers,
                        max_message_size=max_message_size,
                        receive_buffer_size=_RECEIVE_BUFFER_BYTES,
                    )
                try:
                    yield ws
                finally:
                    with trio.CancelScope(shield=True), trio.move_on_after(_CLOSE_SECONDS):
                        await ws.aclose()
            except BaseException as exc:  # raised again below, bare rather than in a group
                failure = exc
            nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:  # the reader task failed: mostly a refused handshake
        failure = failure_of(group)
    finally:
        await trio.aclose_forcefully(stream)
    if failure is not None:
        raise failure


async def _tls_handshake(stream: trio.SSLStream[trio.SocketStream], timeout: float) -> None:
    try:
        with trio.fail_after(timeout):
            await stream.do_handshake()
    except trio.BrokenResourceError as exc:
        cause = exc.__cause__
        raise cause if isinstance(cause, OSError) else OSError(f"TLS handshake failed: {exc!r}") from None


def failure_of(exc: BaseException) -> BaseException:
    """The exception an exception group (from trio's nurseries) stands for: its first one, depth
    first, that is not ``trio.Cancelled``; ``exc`` itself if it is not a group."""
    if not isinstance(exc, BaseExceptionGroup):
        return exc
    leaves = [failure_of(inner) for inner in exc.exceptions]
    return next((leaf for leaf in leaves if not isinstance(leaf, trio.Cancelled)), leaves[0])
