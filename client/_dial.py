"""Opening WebSockets to a node: URLs, the bearer token, and what a failed handshake means.

Every WebSocket the SDK opens goes through a :class:`Dialer` (by default :func:`dial`: TCP or TLS,
then trio-websocket's handshake over that stream), so the connection logic can be tested against an in-process
node over memory streams. :func:`refusal` turns a failed dial into the SDK's error: an HTTP refusal
is :class:`~client.errors.Rejected` (a 4xx: retrying unchanged fails again) or a transient failure
(5xx, 408, 429: the node is draining, restarting or shedding load); anything else (refused TCP
connection, DNS, TLS, timeout) is :class:`~client.errors.Unreachable`.
"""

from __future__ import annotations

import json
import os
import ssl
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, Final, Protocol
from urllib.parse import urlencode, urlsplit, urlunsplit

import trio
from trio_websocket import (
    ConnectionClosed,
    ConnectionRejected,
    ConnectionTimeout,
    HandshakeError,
    WebSocketConnection,
    wrap_client_stream,
)

from .errors import ClientError, Rejected, Unreachable

__all__ = [
    "Dialer", "auth_headers", "base_url", "describe", "dial", "is_transient", "refusal", "tls_dialer",
    "ws_url",
]  # fmt: skip

#: seconds a close handshake may take before the socket is dropped
CLOSE_TIMEOUT_SECONDS: Final = 2.0
#: bytes read from the socket at once (trio-websocket's default is 4 KiB; batches are larger)
RECEIVE_BUFFER_BYTES: Final = 64 * 1024

_SCHEMES: Final = {"http": "ws", "https": "wss", "ws": "ws", "wss": "wss"}
#: HTTP statuses of a refused handshake that may succeed later (draining, restarting, rate-limited)
_TRANSIENT_STATUSES: Final = frozenset({408, 429})


class Dialer(Protocol):
    """Opens one client WebSocket to ``url`` for the duration of an ``async with``.

    Raises trio-websocket's ``HandshakeError`` (``ConnectionRejected`` for an HTTP refusal,
    ``ConnectionTimeout`` past ``connect_timeout``) or ``OSError`` if it cannot.
    """

    def __call__(
        self,
        url: str,
        *,
        headers: list[tuple[bytes, bytes]],
        subprotocols: list[str],
        max_message_size: int,
        connect_timeout: float,
    ) -> AbstractAsyncContextManager[WebSocketConnection]: ...


@asynccontextmanager
async def dial(
    url: str,
    *,
    headers: list[tuple[bytes, bytes]],
    subprotocols: list[str],
    max_message_size: int,
    connect_timeout: float,
    ssl_context: ssl.SSLContext | None = None,
) -> AsyncIterator[WebSocketConnection]:
    """The real :class:`Dialer`: TCP (TLS for ``wss``), then the WebSocket handshake.

    TLS verifies the node's certificate and host name with ``ssl_context`` (default: the system's
    trust store; :func:`tls_dialer` makes one that trusts a given CA file). It owns the TCP stream
    and closes it whatever happens: trio-websocket's ``open_websocket_url`` leaves the socket of a
    refused handshake open (0.12).
    """
    parts = urlsplit(url)
    secure = parts.scheme == "wss"
    host = parts.hostname or ""
    port = parts.port or (443 if secure else 80)
    resource = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    try:
        with trio.fail_after(connect_timeout):
            stream: trio.SocketStream | trio.SSLStream[trio.SocketStream]
            if secure:
                context = ssl_context or ssl.create_default_context()
                stream = await trio.open_ssl_over_tcp_stream(
                    host, port, ssl_context=context, https_compatible=True
                )
            else:
                stream = await trio.open_tcp_stream(host, port)
    except trio.TooSlowError:
        raise ConnectionTimeout from None
    except OSError as exc:
        raise HandshakeError from exc
    try:
        if isinstance(stream, trio.SSLStream):  # a certificate that does not verify fails here, named
            await _tls_handshake(stream, connect_timeout)
        host_header = parts.netloc.rpartition("@")[2]
        options = (headers, subprotocols, max_message_size, connect_timeout)
        async with _websocket(stream, host_header, resource, *options) as ws:
            yield ws
    finally:
        await trio.aclose_forcefully(stream)


async def _tls_handshake(stream: trio.SSLStream[trio.SocketStream], timeout: float) -> None:
    """The TLS handshake, before the WebSocket's: trio-websocket would wait out its timeout on a
    failed one. Raises ConnectionTimeout, or HandshakeError from the ``ssl.SSLError``."""
    try:
        with trio.fail_after(timeout):
            await stream.do_handshake()
    except trio.TooSlowError:
        raise ConnectionTimeout from None
    except trio.BrokenResourceError as exc:
        raise HandshakeError from (exc.__cause__ or exc)


def tls_dialer(ca: str | os.PathLike[str] | None) -> Dialer:
    """:func:`dial`, verifying ``wss`` nodes against the PEM CA certificates in the file ``ca``
    instead of the system's trust store (``ca=None``: :func:`dial` itself). Raises OSError or
    ``ssl.SSLError`` if the file cannot be read as CA certificates."""
    if ca is None:
        return dial
    context = ssl.create_default_context(cafile=ca)

    def dial_with_ca(
        url: str,
        *,
        headers: list[tuple[bytes, bytes]],
        subprotocols: list[str],
        max_message_size: int,
        connect_timeout: float,
    ) -> AbstractAsyncContextManager[WebSocketConnection]:
        return dial(
            url,
            headers=headers,
            subprotocols=subprotocols,
            max_message_size=max_message_size,
            connect_timeout=connect_timeout,
            ssl_context=context,
        )

    return dial_with_ca


@asynccontextmanager
async def _websocket(
    stream: trio.SocketStream | trio.SSLStream[trio.SocketStream],
    host: str,
    resource: str,
    headers: list[tuple[bytes, bytes]],
    subprotocols: list[str],
    max_message_size: int,
    connect_timeout: float,
) -> AsyncIterator[WebSocketConnection]:
    """The handshake over ``stream``, its reader task, and the close; exceptions come out bare."""
    failure: BaseException | None = None
    try:
        async with trio.open_nursery() as nursery:
            try:
                ws = None
                with trio.move_on_after(connect_timeout):
                    ws = await wrap_client_stream(
                        nursery,
                        stream,
                        host,
                        resource,
                        subprotocols=subprotocols,
                        extra_headers=headers,
                        max_message_size=max_message_size,
                        receive_buffer_size=RECEIVE_BUFFER_BYTES,
                    )
                if ws is None:
                    raise ConnectionTimeout  # noqa: TRY301 (handled below like any failure here)
                try:
                    yield ws
                finally:
                    with trio.CancelScope(shield=True), trio.move_on_after(CLOSE_TIMEOUT_SECONDS):
                        await ws.aclose()
            except BaseException as exc:  # raised again outside the nursery, not in its group
                failure = exc
            nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:  # the reader task failed: a refused handshake, mostly
        raise _first_error(group) from None
    if failure is not None:
        raise failure


def _first_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The exception a group from the reader task stands for (Cancelled only if nothing else)."""
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            exc = _first_error(exc)
        if not isinstance(exc, trio.Cancelled):
            return exc
    return group.exceptions[0]


def base_url(url: str) -> str:
    """``url`` as a node's base URL (scheme, host, port and any path prefix, no trailing slash).

    Takes ``http``, ``https``, ``ws`` and ``wss``; raises ValueError for anything else.
    """
    parts = urlsplit(url)
    if parts.scheme.lower() not in _SCHEMES or not parts.netloc or parts.query or parts.fragment:
        raise ValueError(f"a node URL looks like http://host:port, not {url!r}")
    return urlunsplit((parts.scheme.lower(), parts.netloc, parts.path.rstrip("/"), "", ""))


def ws_url(base: str, path: str, params: dict[str, str] | None = None) -> str:
    """The WebSocket URL of ``path`` (already percent-encoded) on the node at ``base``."""
    parts = urlsplit(base)
    query = urlencode(params) if params else ""
    return urlunsplit((_SCHEMES[parts.scheme], parts.netloc, parts.path + path, query, ""))


def auth_headers(token: str | None) -> list[tuple[bytes, bytes]]:
    return [] if token is None else [(b"authorization", b"Bearer " + token.encode())]


def is_transient(exc: BaseException) -> bool:
    """Whether a failed dial may succeed if tried again later (everything but a 4xx refusal)."""
    if isinstance(exc, ConnectionRejected):
        return exc.status_code >= 500 or exc.status_code in _TRANSIENT_STATUSES
    return True


def refusal(exc: BaseException, url: str) -> ClientError:
    """The SDK error for a dial of ``url`` that failed with ``exc`` (see the module docstring)."""
    if isinstance(exc, ConnectionRejected) and not is_transient(exc):
        error = _error_body(exc.body)
        kind = str(error.get("type", "Rejected"))
        message = str(error.get("message", ""))
        return Rejected(
            f"{url} refused the connection with HTTP {exc.status_code}: {kind}: {message}",
            status=exc.status_code,
            type=kind,
        )
    return Unreachable(f"could not connect to {url}: {describe(exc)}")


def describe(exc: BaseException) -> str:
    """A short human account of a dial or socket failure."""
    if isinstance(exc, ConnectionRejected):
        error = _error_body(exc.body)
        detail = f": {error['type']}: {error.get('message', '')}" if "type" in error else ""
        return f"HTTP {exc.status_code}{detail}"
    if isinstance(exc, ConnectionTimeout):
        return "timed out opening the connection"
    if isinstance(exc, ConnectionClosed):
        reason = exc.reason
        if reason is None:
            return "the connection closed"
        return f"the connection closed with {reason.code}" + (f": {reason.reason}" if reason.reason else "")
    if isinstance(exc, HandshakeError | trio.BrokenResourceError) and exc.__cause__ is not None:
        return describe(exc.__cause__)
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _error_body(body: bytes | None) -> dict[str, Any]:
    """The ``error`` map of a node's JSON error body, or {} if it has none."""
    try:
        error = json.loads(body or b"null")["error"]
    except (ValueError, TypeError, KeyError):
        return {}
    return error if isinstance(error, dict) else {}
