"""The only table from errors to HTTP replies: status, JSON/CBOR body and headers.

Guarantees
- Every failure of a request becomes one reply ``{"error": {"type": ..., "message": ...}}`` (plus
  the error's own fields from ``to_dict``: ``limit``, ``retry_after``), never a dropped connection
  or a framework's HTML page.
- The status is the error's ``status_hint`` from :mod:`actors.errors`, except where this table says
  otherwise, and it says so in one place (``_STATUS_OVERRIDES``, ``_LIMIT_STATUS``):

      400  InvalidArgument, SqlNotAllowed, malformed JSON/CBOR or body shape
      400  LimitExceeded (a name, key or value over a named limit; ``limit`` names it)
      401  Unauthorized           missing or wrong bearer token
      403  Forbidden              a WebSocket handshake from an Origin not allowed (allowed_origins)
      404  UnknownClass, UnknownMethod, ObjectNotFound, NotFound (no such route)
      405  MethodNotAllowed       (with an ``Allow`` header)
      406  NotAcceptable          the result cannot be written as JSON (bytes, NaN): ask for CBOR
      409  Deadlock
      413  LimitExceeded with ``limit = "max_body_bytes"`` (the request body)
      500  UserError              ``type`` is the user's exception class (traceback: debug only)
      500  InternalError          ``"internal error; reference = <id>"``, details only in the log
      503  Overloaded, OwnerUnavailable (with ``Retry-After`` in whole seconds, rounded up), ObjectReset,
                                  ShuttingDown; Overloaded also answers a new connection past
                                  ``max_connections`` (``listener.py``), before any request is read
      502  OwnerLost              a forwarded call's link to its owner dropped before the reply
      504  CallTimeout

- Internal details never reach the caller: an exception that is not an :class:`ActorError` is logged
  with a fresh reference, counted through ``Hooks.internal_error``, and the caller sees only the
  reference.

WebSockets (``websocket.py``) use the same table twice. A handshake refused before accept gets the
HTTP status above (401 Unauthorized, 403 Forbidden for an Origin, 404 NotFound, 503 ShuttingDown)
with the same JSON body. After accept, an error either becomes an error frame
``{"type": "error", "error": <type>, "message": ...}`` (plus ``limit``/``retry_after``; the socket
stays open) or closes the socket with the code of ``close_code_of`` (``_CLOSE_CODES``,
``_LIMIT_CLOSE_CODES``; RFC 6455 section 7.4, 4000-4999 are ours):

      1000  the object called ``ws.close()`` (its own code, 1000 or 3000-4999, passes through)
      1001  ShuttingDown           the node is draining (SIGTERM): every socket is closed with it
                                   (``/v1/connect``: once its calls in flight are answered)
      1009  LimitExceeded ``max_frame_bytes``: a message over ``Config.max_frame_bytes``
      1011  UserError, ActivationFailed: ``on_connect`` (or ``on_start``) raised; CallTimeout,
            ObjectReset, InternalError while connecting (``/v1/connect``: a failure of the node's own)
      1013  LimitExceeded ``MAX_SOCKETS_PER_OBJECT``; Overloaded while connecting; LimitExceeded
            ``MAX_SEND_QUEUE_FRAMES`` or ``max_send_queue_bytes`` (the client reads too slowly;
            see ``websocket.py``)
      4400  InvalidArgument and every other CallerError (a bad name, a name over a limit);
            ``/v1/connect``: a malformed message or no protocol version in common
      4408  ``/v1/connect`` only: no Hello within ``rpc.HELLO_TIMEOUT_SECONDS`` of the accept
      4404  UnknownClass           no such class in the App (generic route)

The close reason is the error's message, cut to the 123 bytes a close frame can carry.

The SDK's ``/v1/connect`` (``rpc.py``) carries the same ``to_dict`` body in the wire protocol's
Error frames (``actors/wire.py``) instead of JSON error frames, and uses the same close codes.
"""

from __future__ import annotations

import logging
import math
import secrets
from collections.abc import Callable
from typing import Any

from actors.errors import (
    ActorError,
    CallerError,
    InternalError,
    LimitExceeded,
    Overloaded,
    OwnerUnavailable,
    ShuttingDown,
    UnknownClass,
    UserError,
    WorldError,
)

__all__ = [
    "BODY_LIMIT",
    "FRAME_LIMIT",
    "SEND_QUEUE_BYTES_LIMIT",
    "SEND_QUEUE_LIMIT",
    "Conflict",
    "Forbidden",
    "MethodNotAllowed",
    "NotAcceptable",
    "NotFound",
    "Unauthorized",
    "as_actor_error",
    "body_too_large",
    "close_code_of",
    "close_reason",
    "error_frame",
    "error_reply",
    "status_of",
]

log = logging.getLogger("server")

#: the ``limit`` named by a request body over ``Config.max_body_bytes``
BODY_LIMIT = "max_body_bytes"
#: the ``limit`` named by a WebSocket message over ``Config.max_frame_bytes``
FRAME_LIMIT = "max_frame_bytes"
#: the ``limit`` named when a socket's send queue is full (``websocket.MAX_SEND_QUEUE_FRAMES``)
SEND_QUEUE_LIMIT = "MAX_SEND_QUEUE_FRAMES"
#: the ``limit`` named when a socket's send queue holds too many bytes (``Config.max_send_queue_bytes``)
SEND_QUEUE_BYTES_LIMIT = "max_send_queue_bytes"

Headers = list[tuple[bytes, bytes]]


#### Errors the node raises before a request reaches the runtime


class NotFound(CallerError):
    """No route matches the path."""

    status_hint = 404


class MethodNotAllowed(CallerError):
    """The path exists but not for this HTTP method; ``allow`` lists the methods it takes."""

    status_hint = 405

    def __init__(self, message: str, *, allow: tuple[str, ...]) -> None:
        super().__init__(message)
        self.allow = allow


class Unauthorized(CallerError):
    """The node has an auth token and the request did not carry it as ``Authorization: Bearer``."""

    status_hint = 401


class Forbidden(CallerError):
    """The request is understood and refused: a WebSocket handshake from an Origin not allowed."""

    status_hint = 403


class Conflict(CallerError):
    """The request conflicts with the node's state (an applied membership older than the one it runs,
    or another one under the same epoch)."""

    status_hint = 409


class NotAcceptable(CallerError):
    """The reply cannot be encoded in the requested content type (bytes or NaN in JSON)."""

    status_hint = 406


def body_too_large(max_body_bytes: int) -> LimitExceeded:
    return LimitExceeded(f"request body is over max_body_bytes ({max_body_bytes})", limit=BODY_LIMIT)


#### The table

#: statuses that differ from the error's ``status_hint`` (looked up along the class's MRO)
_STATUS_OVERRIDES: dict[type[ActorError], int] = {
    # "Over a limit is a 400 that names it": a too-long name or too-big value is a bad request.
    LimitExceeded: 400,
}

#: LimitExceeded whose ``limit`` is one of these gets this status instead
_LIMIT_STATUS: dict[str, int] = {BODY_LIMIT: 413}


def status_of(error: ActorError) -> int:
    """The HTTP status of ``error`` (see the table in the module docstring)."""
    if isinstance(error, LimitExceeded) and error.limit in _LIMIT_STATUS:
        return _LIMIT_STATUS[error.limit]
    for cls in type(error).__mro__:
        status = _STATUS_OVERRIDES.get(cls)
        if status is not None:
            return status
    return error.status_hint


def as_actor_error(exc: BaseException, *, report_internal: Callable[[str, str], None]) -> ActorError:
    """``exc`` itself if it is an ActorError; else an InternalError naming only a fresh reference,
    after logging ``exc`` under that reference and reporting it with ``report_internal``."""
    if isinstance(exc, ActorError):
        return exc
    reference = secrets.token_hex(6)
    log.error(
        "internal error",
        exc_info=exc,
        extra={"event": "internal_error", "reference": reference},
    )
    report_internal(reference, repr(exc))
    return InternalError(f"internal error; reference = {reference}", reference=reference)


def error_reply(
    exc: BaseException,
    *,
    debug: bool,
    report_internal: Callable[[str, str], None],
) -> tuple[int, dict[str, Any], Headers]:
    """Status, body and extra headers for ``exc``; unexpected exceptions are logged and reported.

    ``report_internal(reference, message)`` is called for failures that are not an ActorError (the
    node passes ``Hooks.internal_error`` so they are counted).
    """
    exc = as_actor_error(exc, report_internal=report_internal)
    body = exc.to_dict()
    headers: Headers = []
    if isinstance(exc, UserError):
        log.warning(
            "user code raised",
            extra={"event": "user_error", "type": exc.type, "error": exc.message},
        )
        if debug and exc.traceback:
            body["traceback"] = exc.traceback
    elif isinstance(exc, (Overloaded, OwnerUnavailable)):
        headers.append((b"retry-after", str(max(1, math.ceil(exc.retry_after))).encode()))
    elif isinstance(exc, MethodNotAllowed):
        headers.append((b"allow", ", ".join(exc.allow).encode()))
    elif isinstance(exc, Unauthorized):
        headers.append((b"www-authenticate", b"Bearer"))
    return status_of(exc), {"error": body}, headers


#### WebSockets: error frames and close codes

#: close codes by error class (looked up along the MRO; the table in the module docstring)
_CLOSE_CODES: dict[type[ActorError], int] = {
    ShuttingDown: 1001,
    Overloaded: 1013,
    WorldError: 1011,
    UserError: 1011,
    UnknownClass: 4404,
    CallerError: 4400,
}

#: LimitExceeded whose ``limit`` is one of these closes with this code instead of 4400
_LIMIT_CLOSE_CODES: dict[str, int] = {
    FRAME_LIMIT: 1009,
    "MAX_SOCKETS_PER_OBJECT": 1013,
    SEND_QUEUE_LIMIT: 1013,
    SEND_QUEUE_BYTES_LIMIT: 1013,
}

#: bytes of UTF-8 a close frame's reason can carry (RFC 6455: 125-byte payload, 2 for the code)
_MAX_CLOSE_REASON_BYTES = 123


def close_code_of(error: ActorError) -> int:
    """The WebSocket close code for ``error`` (see the table in the module docstring)."""
    if isinstance(error, LimitExceeded) and error.limit in _LIMIT_CLOSE_CODES:
        return _LIMIT_CLOSE_CODES[error.limit]
    for cls in type(error).__mro__:
        code = _CLOSE_CODES.get(cls)
        if code is not None:
            return code
    return 1011


def close_reason(message: str) -> str:
    """``message`` cut to what a close frame carries, never splitting a UTF-8 sequence."""
    data = message.encode()
    if len(data) <= _MAX_CLOSE_REASON_BYTES:
        return message
    return data[: _MAX_CLOSE_REASON_BYTES - 3].decode(errors="ignore") + "..."


def error_frame(
    exc: BaseException,
    *,
    debug: bool,
    report_internal: Callable[[str, str], None],
) -> dict[str, Any]:
    """The error frame ``{"type": "error", "error": <type>, "message": ...}`` for ``exc``.

    Logged and reported exactly as :func:`error_reply` does (an unexpected exception is shown only
    by reference; a user traceback only with ``debug``).
    """
    _, body, _ = error_reply(exc, debug=debug, report_internal=report_internal)
    fields = dict(body["error"])
    return {"type": "error", "error": fields.pop("type"), **fields}
