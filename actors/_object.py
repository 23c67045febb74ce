"""What a user subclasses: :class:`DurableObject`, with ``self.id``, ``self.env`` and ``self.storage``.

Guarantees
- An instance exists only inside its activation; the runtime builds it (users never call the
  constructor with arguments) and binds ``id``, ``env`` and ``storage`` before ``__init__`` runs, so a
  user ``__init__(self)`` may read them (but should leave storage work to ``on_start``).
- ``self.env.get(cls, name)`` returns a :class:`Stub` at once, with no round trip; the object is activated
  by the first call through it. Awaiting a stub method from inside a turn carries the turn's call chain,
  which is how reentrant calls (A calls B calls A) are recognised.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol

from ._ids import ObjectId

if TYPE_CHECKING:
    from ._sockets import SocketHub, WebSocket
    from ._storage import Storage

__all__ = ["LIFECYCLE_HOOKS", "DurableObject", "Env", "Stub"]

#: methods the runtime calls itself; never callable from outside
LIFECYCLE_HOOKS = frozenset({"on_start", "alarm", "on_connect", "on_message", "on_close"})


class Caller(Protocol):
    """What a stub needs from the runtime (the runtime in-process; the SDK implements it remotely)."""

    async def call(
        self,
        object_id: ObjectId,
        method: str,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
        *,
        timeout: float | None = None,
    ) -> Any: ...


class Stub:
    """A handle on one object: ``await stub.method(*args, **kwargs)`` calls it."""

    __slots__ = ("_caller", "_methods", "id")

    def __init__(self, caller: Caller, object_id: ObjectId) -> None:
        self._caller = caller
        self._methods: dict[str, Callable[..., Awaitable[Any]]] = {}
        self.id = object_id

    def __getattr__(self, method: str) -> Callable[..., Awaitable[Any]]:
        if method.startswith("__"):
            raise AttributeError(method)
        found = self._methods.get(method)
        if found is not None:
            return found
        caller, object_id = self._caller, self.id

        async def call(*args: Any, **kwargs: Any) -> Any:
            return await caller.call(object_id, method, args, kwargs)

        call.__name__ = method
        if len(self._methods) < 64:  # a stub used with many made-up names must not grow without bound
            self._methods[method] = call
        return call

    async def call(
        self, method: str, *args: Any, timeout: float | None = None, **kwargs: Any
    ) -> Any:
        """Call ``method`` by name, with an optional per-call ``timeout`` in seconds."""
        return await self._caller.call(self.id, method, args, kwargs, timeout=timeout)

    def __repr__(self) -> str:
        return f"<Stub {self.id}>"


class Env:
    """How an object reaches other objects."""

    __slots__ = ("_caller", "_ids", "_now")

    def __init__(self, caller: Caller, ids: Any, now: Callable[[], float]) -> None:
        self._caller = caller
        self._ids = ids  # the App: id_from_name / new_unique_id
        self._now = now

    def now(self) -> float:
        """Epoch seconds, from the runtime's clock: virtual under MockClock, like every timer of ours.

        Use this rather than ``time.time()`` so alarms, rate limits and timeouts in your objects can be
        tested in virtual time.
        """
        return self._now()

    def get(self, cls: str | type[DurableObject], name: str) -> Stub:
        """A stub for object ``name`` of class ``cls`` (no activation until the first call)."""
        return Stub(self._caller, self._ids.id_from_name(cls, name))

    def get_by_id(self, object_id: ObjectId) -> Stub:
        return Stub(self._caller, object_id)

    def new_unique_id(self, cls: str | type[DurableObject]) -> ObjectId:
        return self._ids.new_unique_id(cls)  # type: ignore[no-any-return]


class DurableObject:
    """Subclass this; its public ``async def`` methods become callable.

    Lifecycle hooks (all optional, each runs as a turn; see also on_connect/on_message/on_close):
    - ``async on_start(self)``: once per activation, before any call. If it raises, no call runs: the
      queued calls fail with ActivationFailed and the next call tries a fresh activation.
    - ``async alarm(self)``: when the alarm set with ``storage.set_alarm`` is due. If it raises it is
      retried with backoff (2 s doubling, 6 retries); see ``_alarms.py``.
    """

    id: ObjectId
    env: Env
    storage: Storage
    _hub: SocketHub

    async def on_start(self) -> None:
        """Runs once per activation before any call; override to load caches or migrate tables."""

    async def alarm(self) -> None:
        """Runs when the alarm is due; override to use alarms."""

    async def on_connect(self, ws: WebSocket) -> None:
        """A WebSocket opened to this object. Accepts by default; ``ws.close(code)`` refuses it."""

    async def on_message(self, ws: WebSocket, data: Any) -> None:
        """A frame arrived: text frames JSON-decoded, binary frames CBOR-decoded. Ignored by default."""

    async def on_close(self, ws: WebSocket, code: int, reason: str) -> None:
        """The socket closed (either side); it is no longer in ``self.sockets()``."""

    def sockets(self, tag: str | None = None) -> list[WebSocket]:
        """This object's open sockets (with ``tag``, if given), oldest first; they survive eviction."""
        return self._hub.sockets(self.id, tag)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {getattr(self, 'id', '?')}>"
