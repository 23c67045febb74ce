"""The SDK's own errors, and how errors the node reports become exceptions.

A call through the SDK raises one of three families, and which one tells you whether the call ran:

    actors.errors.ActorError         the node answered: the named error of ``actors.errors``, rebuilt
    │                                from the Error frame (type and message preserved)
    └── UserError
        └── RemoteError              the object's own code raised an exception the runtime does not
                                     name (``.type`` = "ValueError"); its writes were rolled back
    ClientError                      the SDK could not get an answer
    ├── Unreachable                  no connection within the timeout; the call was never sent
    ├── Rejected                     the node refused the connection (wrong token, no such route,
    │                                no common protocol version); the call was never sent
    ├── OutcomeUnknown               the call was sent and no answer came: it may or may not have run
    │   ├── ConnectionLost           the connection dropped before the reply
    │   └── ReplyTimeout             the node did not answer by the deadline plus REPLY_GRACE_SECONDS
    └── SocketClosed                 an object WebSocket (``Client.websocket``) was closed; ``.code``

``ClientError`` is deliberately not an ``ActorError``: an ActorError is an answer from the node, with
a known effect (``CallTimeout``: nothing was applied; ``UserError``: rolled back), while an
``OutcomeUnknown`` is the absence of an answer. Never retry an ``OutcomeUnknown`` blindly: the first
attempt may have been applied (an increment would count twice).
"""

from __future__ import annotations

from typing import Any, final

from actors.errors import ActorError, UserError, error_from_wire

__all__ = [
    "ClientError",
    "ConnectionLost",
    "OutcomeUnknown",
    "Rejected",
    "RemoteError",
    "ReplyTimeout",
    "SocketClosed",
    "Unreachable",
    "remote_error",
]


@final
class RemoteError(UserError):
    """The object's code raised ``type`` (e.g. "ValueError") with ``message``; its writes rolled back.

    A subclass of :class:`actors.errors.UserError`, so ``except UserError`` catches it too.
    """

    def __repr__(self) -> str:
        return f"RemoteError({self.type!r}, {self.message!r})"


class ClientError(Exception):
    """Base of the SDK's own errors: the node gave no answer (see the module docstring)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r})"


@final
class Unreachable(ClientError):
    """No connection to the node could be made within the call's timeout; nothing was sent."""


@final
class Rejected(ClientError):
    """The node refused the connection: ``status`` is the handshake's HTTP status (None when the
    refusal came as a protocol Error frame), ``type`` the error's type ("Unauthorized", "NotFound",
    "InvalidArgument" for no common protocol version). Nothing was sent; retrying unchanged fails
    the same way."""

    def __init__(self, message: str, *, status: int | None = None, type: str = "Rejected") -> None:
        super().__init__(message)
        self.status = status
        self.type = type


class OutcomeUnknown(ClientError):
    """The call was sent and no answer came back: it may or may not have been applied."""


@final
class ConnectionLost(OutcomeUnknown):
    """The connection dropped after the call was sent and before its reply arrived.

    The call may have run (and committed) on the node. The SDK never sends it again.
    """


@final
class ReplyTimeout(OutcomeUnknown):
    """The node sent no reply by the call's deadline plus ``REPLY_GRACE_SECONDS``.

    The node enforces the deadline itself and answers ``CallTimeout`` (nothing applied) in time; this
    error means that answer never came (a stalled node or network), so the outcome is unknown.
    """


@final
class SocketClosed(ClientError):
    """An object WebSocket is closed: ``code`` and ``reason`` are the close frame's (1006: no close
    frame, the connection dropped). The close-code table is in ``server/errors.py``."""

    def __init__(self, code: int, reason: str = "") -> None:
        super().__init__(f"the WebSocket was closed with {code}" + (f": {reason}" if reason else ""))
        self.code = code
        self.reason = reason


def remote_error(body: dict[str, Any]) -> ActorError:
    """The exception an Error frame's ``error`` map stands for.

    Named runtime errors come back as themselves (:func:`actors.errors.error_from_wire`); a type the
    runtime does not name (the user's own exception) as :class:`RemoteError`.
    """
    error = error_from_wire(body)
    if type(error) is UserError:
        return RemoteError(error.type, error.message)
    return error
