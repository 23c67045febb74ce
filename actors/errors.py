"""Every error the runtime raises, as one tree.

Each class has a stable ``type`` string (its class name; the node and the SDK put it on the wire) and a
``status_hint`` (the HTTP status the node answers with). ``server/errors.py`` is the only table that maps
these to statuses and frames; the SDK re-raises the same classes on the client side.

    ActorError
    ├── CallerError                  the caller's fault: do not retry unchanged
    │   ├── InvalidArgument          400  malformed arguments, not CBOR-able values, bad ids
    │   ├── LimitExceeded            413  a named limit (``limit`` attribute) was exceeded
    │   ├── UnknownClass             404  no such object class in the App
    │   ├── UnknownMethod            404  no such public async method (private names, hooks, attributes)
    │   ├── ObjectNotFound           404  the object has no storage (admin export of a never-written object)
    │   ├── SqlNotAllowed            400  user SQL touched what the runtime owns (BEGIN, internal tables)
    │   └── Deadlock                 409  the call would close a cycle of turns waiting on each other
    ├── WorldError                   not the caller's fault: a retry later may succeed
    │   ├── Overloaded               503  the object's queue is full (``retry_after`` seconds)
    │   ├── CallTimeout              504  the call's deadline passed before its turn committed
    │   ├── ObjectReset              503  the instance was discarded (commit failed, activation lost)
    │   ├── ShuttingDown             503  the runtime is draining and takes no new calls
    │   ├── OwnerUnavailable         503  the node that owns the object cannot be reached (``node``)
    │   ├── OwnerLost                502  the link to the owner dropped after the call was sent
    │   └── InternalError            500  a bug of ours; the message is only ``reference = <id>``
    └── UserError                    500  the object's own code raised (``type`` = its exception class)
        ├── ActivationFailed         500  ``on_start`` raised; the next call tries a fresh activation
        └── ResultNotSerializable    500  the method returned something that is not a plain value

Retrying is safe only for failures that provably never reached the object: ``Overloaded``,
``ShuttingDown``, ``OwnerUnavailable`` and ``ObjectReset`` raised for a call still in the queue.
``OwnerLost`` says the opposite: the call was handed to its owner and may or may not have run.
``CallTimeout`` is raised only when the call's turn did not commit (a turn whose commit has begun runs
to its reply), so its writes were not applied.
"""

from __future__ import annotations

from typing import Any, ClassVar

__all__ = [
    "ActivationFailed",
    "ActorError",
    "CallTimeout",
    "CallerError",
    "Deadlock",
    "InternalError",
    "InvalidArgument",
    "LimitExceeded",
    "ObjectNotFound",
    "ObjectReset",
    "Overloaded",
    "OwnerLost",
    "OwnerUnavailable",
    "ResultNotSerializable",
    "ShuttingDown",
    "SqlNotAllowed",
    "UnknownClass",
    "UnknownMethod",
    "UserError",
    "WorldError",
    "error_from_wire",
]


class ActorError(Exception):
    """Base of every runtime error: a stable ``type``, a human ``message``, an HTTP ``status_hint``."""

    status_hint: ClassVar[int] = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    @property
    def type(self) -> str:
        return type(self).__name__

    def to_dict(self) -> dict[str, Any]:
        """The error as a plain value, the body of an error reply or frame."""
        return {"type": self.type, "message": self.message}

    def __str__(self) -> str:
        return self.message

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r})"


#### The caller's fault


class CallerError(ActorError):
    """The request itself is wrong; sending it again unchanged fails again."""

    status_hint = 400


class InvalidArgument(CallerError):
    """Arguments, ids or values that the runtime cannot accept (the message says where)."""


class LimitExceeded(CallerError):
    """A named limit was exceeded; ``limit`` is the constant's name in :mod:`actors.limits`."""

    status_hint = 413

    def __init__(self, message: str, *, limit: str) -> None:
        super().__init__(message)
        self.limit = limit

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "limit": self.limit}


class UnknownClass(CallerError):
    status_hint = 404


class UnknownMethod(CallerError):
    status_hint = 404


class ObjectNotFound(CallerError):
    """The object has no storage: it was never written, or everything was deleted."""

    status_hint = 404


class SqlNotAllowed(CallerError):
    """User SQL tried to manage transactions or touch the runtime's own tables."""


class Deadlock(CallerError):
    """Waiting for this call would close a cycle of turns that wait on each other.

    Raised at once in the turn that would close the cycle, instead of letting every member of the cycle
    hang until its deadline.
    """

    status_hint = 409


#### The world's fault


class WorldError(ActorError):
    """Not the caller's fault; the same call may succeed later."""

    status_hint = 503


class Overloaded(WorldError):
    """The object's queue is at its cap; the call was refused without reaching the object."""

    def __init__(self, message: str, *, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "retry_after": self.retry_after}


class CallTimeout(WorldError):
    """The call's deadline passed before its turn committed; none of its writes were applied."""

    status_hint = 504


class ObjectReset(WorldError):
    """The object's instance was discarded (its commit failed); its in-flight and queued calls fail."""


class ShuttingDown(WorldError):
    """The runtime is closing and accepts no new calls."""


class OwnerUnavailable(WorldError):
    """The node that owns the object cannot be reached (down, or not reached yet); the call did not run.

    ``node`` names the owner; ``retry_after`` is a hint in seconds. Only that node's objects fail
    this way: every other object keeps working. ``epoch`` (when not 0) is the membership epoch under
    which the sender of this error decided: a node refusing a call for an object it does not own
    says so, and a caller holding an older epoch adopts the newer membership and routes again.
    """

    def __init__(self, message: str, *, node: str, retry_after: float = 1.0, epoch: int = 0) -> None:
        super().__init__(message)
        self.node = node
        self.retry_after = retry_after
        self.epoch = epoch

    def to_dict(self) -> dict[str, Any]:
        body = {**super().to_dict(), "node": self.node, "retry_after": self.retry_after}
        if self.epoch:
            body["epoch"] = self.epoch
        return body


class OwnerLost(WorldError):
    """The call was handed to the owner node and the link dropped before its reply: the call may or
    may not have run (the node-to-node analogue of a dropped connection). Not retried automatically."""

    status_hint = 502


class InternalError(WorldError):
    """A failure inside the runtime; details are logged under ``reference``, never shown to callers."""

    status_hint = 500

    def __init__(self, message: str, *, reference: str = "") -> None:
        super().__init__(message)
        self.reference = reference


#### The object's own code raised


class UserError(ActorError):
    """The object's code raised; ``type`` is the exception's class name, ``message`` its text.

    The turn's writes were rolled back. ``traceback`` holds the formatted traceback (for logs and debug
    modes only; never sent to callers by default).
    """

    status_hint = 500

    def __init__(self, type: str, message: str, *, traceback: str = "") -> None:
        super().__init__(message)
        self._type = type
        self.traceback = traceback

    @property
    def type(self) -> str:
        return self._type

    def __repr__(self) -> str:
        return f"UserError({self._type!r}, {self.message!r})"


class ActivationFailed(UserError):
    """``on_start`` raised, so the object could not be activated; no call ran."""

    def __init__(self, message: str, *, traceback: str = "") -> None:
        super().__init__("ActivationFailed", message, traceback=traceback)


class ResultNotSerializable(UserError):
    """The method returned a value that is not a plain CBOR-able value; its writes were rolled back."""

    def __init__(self, message: str) -> None:
        super().__init__("ResultNotSerializable", message)


_BY_TYPE: dict[str, type[ActorError]] = {
    cls.__name__: cls
    for cls in (
        InvalidArgument,
        UnknownClass,
        UnknownMethod,
        ObjectNotFound,
        SqlNotAllowed,
        Deadlock,
        CallTimeout,
        ObjectReset,
        ShuttingDown,
        OwnerLost,
    )
}


def _seconds(value: Any) -> float:
    return float(value) if type(value) in (int, float) and 0 <= value < 3600 else 1.0


def error_from_wire(body: dict[str, Any]) -> ActorError:
    """Rebuild the named error from its ``to_dict()`` form (unknown types become :class:`UserError`)."""
    type_ = str(body.get("type", "InternalError"))
    message = str(body.get("message", ""))
    if type_ == "LimitExceeded":
        return LimitExceeded(message, limit=str(body.get("limit", "")))
    if type_ == "Overloaded":
        return Overloaded(message, retry_after=float(body.get("retry_after", 1.0)))
    if type_ == "InternalError":
        return InternalError(message)
    if type_ == "OwnerUnavailable":
        epoch = body.get("epoch", 0)
        return OwnerUnavailable(
            message,
            node=str(body.get("node", "")),
            retry_after=_seconds(body.get("retry_after")),
            epoch=epoch if type(epoch) is int and epoch > 0 else 0,
        )
    if type_ == "ActivationFailed":
        return ActivationFailed(message)
    if type_ == "ResultNotSerializable":
        return ResultNotSerializable(message)
    cls = _BY_TYPE.get(type_)
    if cls is not None:
        return cls(message)
    return UserError(type_, message)
