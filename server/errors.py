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
      404  UnknownClass, UnknownMethod, ObjectNotFound, NotFound (no such route)
      405  MethodNotAllowed       (with an ``Allow`` header)
      406  NotAcceptable          the result cannot be written as JSON (bytes, NaN): ask for CBOR
      409  Deadlock
      413  LimitExceeded with ``limit = "max_body_bytes"`` (the request body)
      500  UserError              ``type`` is the user's exception class (traceback: debug only)
      500  InternalError          ``"internal error; reference = <id>"``, details only in the log
      503  Overloaded             (with ``Retry-After`` in whole seconds, rounded up), ObjectReset,
                                  ShuttingDown
      504  CallTimeout

- Internal details never reach the caller: an exception that is not an :class:`ActorError` is logged
  with a fresh reference, counted through ``Hooks.internal_error``, and the caller sees only the
  reference.
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
    UserError,
)

__all__ = [
    "BODY_LIMIT",
    "MethodNotAllowed",
    "NotAcceptable",
    "NotFound",
    "Unauthorized",
    "body_too_large",
    "error_reply",
    "status_of",
]

log = logging.getLogger("server")

#: the ``limit`` named by a request body over ``Config.max_body_bytes``
BODY_LIMIT = "max_body_bytes"

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
    if not isinstance(exc, ActorError):
        reference = secrets.token_hex(6)
        log.error(
            "internal error",
            exc_info=exc,
            extra={"event": "internal_error", "reference": reference},
        )
        report_internal(reference, repr(exc))
        exc = InternalError(f"internal error; reference = {reference}", reference=reference)
    body = exc.to_dict()
    headers: Headers = []
    if isinstance(exc, UserError):
        log.warning(
            "user code raised",
            extra={"event": "user_error", "type": exc.type, "error": exc.message},
        )
        if debug and exc.traceback:
            body["traceback"] = exc.traceback
    elif isinstance(exc, Overloaded):
        headers.append((b"retry-after", str(max(1, math.ceil(exc.retry_after))).encode()))
    elif isinstance(exc, MethodNotAllowed):
        headers.append((b"allow", ", ".join(exc.allow).encode()))
    elif isinstance(exc, Unauthorized):
        headers.append((b"www-authenticate", b"Bearer"))
    return status_of(exc), {"error": body}, headers
