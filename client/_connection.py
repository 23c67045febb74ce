"""One multiplexed WebSocket to one node: many concurrent calls on one socket, replies in any order.

Guarantees
- A call is sent at most once. It is *queued* until the writer puts it into a message, then *written*.
  A queued call survives a dropped socket and goes out on the next one; a written call whose socket
  drops before its reply fails with :class:`~client.errors.ConnectionLost` and is never sent again.
  So the SDK never applies a call twice, whatever the network does. The one exception is proof
  that the node never read it: a written call still unanswered when the node closes with
  ``wire.DRAIN_CLOSE`` (it drains: it answers every call it read before that close) fails with
  ``ShuttingDown``, which the client retries like the node's own ``ShuttingDown``.
- Every call ends exactly once: with its reply; at its deadline if still queued (``Unreachable`` if
  the socket was down, ``CallTimeout`` if it was up: either way nothing was sent); with ``ReplyTimeout``
  ``REPLY_GRACE_SECONDS`` after its deadline if written and unanswered (the node enforces the deadline
  itself and normally answers ``CallTimeout`` first); with ``ConnectionLost``; or with
  ``trio.ClosedResourceError`` once the client is closed. Never a hang.
- Bounded: at most ``max_in_flight`` calls are queued or written at once (the Welcome's value, capped
  by the caller's); further callers wait in arrival order, within their deadline. A message carries
  at most ``MAX_FRAMES_PER_MESSAGE`` frames and the node's ``max_message_bytes``; a call too big for
  one message fails at once with ``LimitExceeded`` (``max_message_bytes``) and is not sent.
- A malformed message from the node (not CBOR, not frames, a frame a node never sends, an error map
  that does not parse) closes the socket with 4400 and fails the written calls with
  ``ConnectionLost`` naming the problem; queued calls go out on the next socket.

Mechanism
    ``serve`` runs for the client's lifetime: it dials when a call (or ``hold_open``) wants the
    socket, sends Hello, waits for Welcome, then runs a reader and a writer until the socket drops,
    and dials again with backoff (``RECONNECT_*``: 50 ms doubling to 2 s, each delay drawn uniformly
    from its upper half) while calls wait. A caller appends its call to the queue, wakes the parked
    writer and parks itself (``PendingCall``); the writer packs everything queued into one message,
    so a burst of calls costs one WebSocket message, and the reader resolves replies by id from one
    dict. Deadlines are one heap (``_calls.DeadlineHeap``) watched by one task.

XX: protocol version 1 has no Cancel frame: a caller cancelled after its call was written stops
waiting, but the node still runs the call (bounded by the deadline it was sent with).
"""

from __future__ import annotations

import enum
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, final

import trio
from trio_websocket import ConnectionClosed, HandshakeError, WebSocketConnection

from actors import wire
from actors.errors import CallTimeout, OwnerUnavailable, ShuttingDown

from ._calls import CallTable, PendingCall
from ._dial import CLOSE_TIMEOUT_SECONDS, Dialer, auth_headers, describe, is_transient, refusal, ws_url
from .errors import ConnectionLost, Rejected, Unreachable

__all__ = [
    "DEFAULT_MAX_IN_FLIGHT",
    "Connection",
    "ConnectionState",
    "ConnectionStatistics",
]

#: calls in flight per connection unless the caller or the node's Welcome says fewer
DEFAULT_MAX_IN_FLIGHT: Final = 1024
#: reconnect backoff: the n-th consecutive failed dial waits uniform(d/2, d), d = min(MAX, START * 2**n)
RECONNECT_START_SECONDS: Final = 0.05
RECONNECT_MAX_SECONDS: Final = 2.0
#: in a cluster, seconds a node may stay unreachable before its calls fail with OwnerUnavailable
#: (the node's own links use the same bound: ``server/cluster/links.py``)
OWNER_WAIT_SECONDS: Final = 2.0
#: the longest redial backoff while calls fail fast (so a returning node is found again soon)
FAIL_FAST_RECONNECT_MAX_SECONDS: Final = 0.5
#: seconds one dial may take (TCP, TLS, WebSocket handshake, Hello/Welcome)
CONNECT_ATTEMPT_TIMEOUT: Final = 10.0
#: largest message accepted from the node (a batch of replies)
MAX_RECEIVE_BYTES: Final = 32 * 1024 * 1024
#: the Hello's agent string (the node logs it)
AGENT: Final = "actors-client/0.1 (python)"

#: what a dial or an open socket may fail with, short of a bug
_NETWORK_ERRORS = (HandshakeError, ConnectionClosed, OSError, trio.BrokenResourceError, trio.TooSlowError)


class ConnectionState(enum.Enum):
    IDLE = "idle"  # no socket and no call waiting for one: the next call dials
    CONNECTING = "connecting"  # dialing, or waiting for the Welcome
    OPEN = "open"  # Welcome received: the writer sends queued calls
    BACKOFF = "backoff"  # the socket dropped or a dial failed; the next dial waits a little
    CLOSED = "closed"  # the client closed: calls raise trio.ClosedResourceError


_S = ConnectionState
_TRANSITIONS: Final = {
    _S.IDLE: {_S.CONNECTING, _S.CLOSED},
    _S.CONNECTING: {_S.OPEN, _S.BACKOFF, _S.IDLE, _S.CLOSED},
    _S.OPEN: {_S.BACKOFF, _S.CLOSED},
    _S.BACKOFF: {_S.CONNECTING, _S.IDLE, _S.CLOSED},
    _S.CLOSED: set(),
}


@dataclass(frozen=True, slots=True)
class ConnectionStatistics:
    url: str  # the node's base URL
    state: str  # a ConnectionState value
    max_in_flight: int  # the cap in force (from the Welcome once one came)
    calls_queued: int  # waiting to be written (e.g. while reconnecting)
    calls_written: int  # written, waiting for their reply
    calls_waiting_for_slot: int  # callers held back by max_in_flight
    messages_sent: int  # WebSocket messages carrying calls (calls_sent / messages_sent = batching)
    calls_sent: int
    messages_received: int
    connects: int  # sockets that reached Welcome
    failed_dials: int


@final
class Connection:
    """One multiplexed WebSocket to the node at ``url`` (a base URL); see the module docstring."""

    def __init__(
        self,
        url: str,
        *,
        token: str | None,
        max_in_flight: int | None,
        dialer: Dialer,
        on_welcome: Callable[[Connection, wire.Welcome], None],
    ) -> None:
        self.url = url
        self._ws_url = ws_url(url, "/v1/connect")
        self._headers = auth_headers(token)
        self._dialer = dialer
        self._on_welcome = on_welcome
        self._state = _S.IDLE
        #: replaced (after setting the old one) on every state change
        self._changed = trio.Event()
        #: set when a call or an opener wants a socket while there is none
        self._demand = trio.Event()
        self._openers = 0
        #: why the last dial failed or the last socket ended (for error messages)
        self._last_error = "the first attempt did not finish"
        #: the permanent refusal of the last dial, until the next dial starts
        self._rejected: Rejected | None = None
        #: the socket being served ended with the node's drain close (``wire.DRAIN_CLOSE``)
        self._drained = False
        #: the caller's cap; the node's Welcome may lower it
        self._limit = max_in_flight or DEFAULT_MAX_IN_FLIGHT
        self._table = CallTable(self._limit)
        self._table.on_map = lambda welcome: self._on_welcome(self, welcome)
        self._max_message_bytes = 1024 * 1024
        #: the writer task while it is parked waiting for calls
        self._writer_parked: trio.lowlevel.Task | None = None
        #: the reader's and writer's nursery while a socket is open
        self._serving: trio.CancelScope | None = None
        self._scope = trio.CancelScope()
        #: the last Welcome (None before the first)
        self.welcome: wire.Welcome | None = None
        self._messages_sent = self._calls_sent = self._messages_received = 0
        self._connects = self._failed_dials = 0
        #: in a cluster of several nodes: calls fail with OwnerUnavailable (naming ``node``) once the
        #: node has been unreachable for ``OWNER_WAIT_SECONDS``, instead of waiting for their deadline
        self.fail_fast = False
        self.node = url
        #: when the node became unreachable (a failed dial or a dropped socket); None while open
        self._down_since: float | None = None

    @property
    def state(self) -> ConnectionState:
        return self._state

    def statistics(self) -> ConnectionStatistics:
        table = self._table
        return ConnectionStatistics(
            self.url, self._state.value, table.cap, table.queued, len(table.written), len(table.waiters),
            self._messages_sent, self._calls_sent, self._messages_received, self._connects,
            self._failed_dials,
        )  # fmt: skip

    #### Calls

    async def call(
        self, cls: str, name: str, method: str, args: list[Any], kwargs: dict[str, Any], deadline: float
    ) -> Any:
        """Send the call once and return its result, or raise (see the module docstring)."""
        table = self._table
        if self.fail_fast and self._given_up():
            self._demand.set()  # dial in the background: calls work again once the node is back
            raise self._owner_unavailable()
        if self._state is _S.CLOSED or not table.try_acquire():
            await self._acquire_slot(deadline, f"{cls}/{name}.{method}")
        call = PendingCall(table, cls, name, method, args, kwargs, deadline)
        table.add(call)
        writer = self._writer_parked
        if writer is not None:
            self._writer_parked = None
            trio.lowlevel.reschedule(writer)
        elif self._state is not _S.OPEN:
            self._demand.set()
        return await trio.lowlevel.wait_task_rescheduled(call.abort)

    async def _acquire_slot(self, deadline: float, label: str) -> None:
        """Wait in line for a slot (CallTimeout at ``deadline``: the call was never sent)."""
        table = self._table
        granted = self._state is not _S.CLOSED and await table.acquire(deadline)
        if self._state is _S.CLOSED:
            if granted:
                table.release()
            raise trio.ClosedResourceError("the client is closed")
        if not granted:
            raise CallTimeout(
                f"{label}: waited for one of max_in_flight ({table.cap}) slots until the deadline; "
                "it was never sent"
            )

    #### Opening and closing

    def hold_open(self) -> None:
        """Want a socket even with no call to send (dial now), until ``release_open``."""
        self._openers += 1
        self._demand.set()

    def release_open(self) -> None:
        self._openers -= 1

    async def wait_open(self, deadline: float) -> None:
        """Wait for the Welcome (call ``hold_open`` first). Raises Unreachable at ``deadline``,
        Rejected as soon as a dial is refused, ClosedResourceError once the client closes."""
        with trio.move_on_at(deadline):
            while self._state is not _S.OPEN:
                if self._state is _S.CLOSED:
                    raise trio.ClosedResourceError("the client is closed")
                await self._changed.wait()
                if self._rejected is not None:
                    raise self._rejected
            return
        raise Unreachable(f"could not connect to {self.url} in time: {self._last_error}")

    def close_nowait(self) -> None:
        """Close: fail every call (written ones with ConnectionLost) and end the socket (1000)."""
        if self._state is _S.CLOSED:
            return
        self._set_state(_S.CLOSED)
        self._table.fail_queued(trio.ClosedResourceError("the client is closed; the call was never sent"))
        self._lose_written("the client was closed")
        self._table.waiters.unpark_all()
        if self._serving is not None:
            self._serving.cancel()  # ``serve`` then closes the socket with 1000 and returns
        else:
            self._scope.cancel()

    def _set_state(self, state: ConnectionState) -> None:
        if state not in _TRANSITIONS[self._state]:
            raise RuntimeError(f"connection state {self._state.name} -> {state.name} is not allowed")
        self._state = state
        changed, self._changed = self._changed, trio.Event()
        changed.set()

    def _lose_written(self, why: str) -> None:
        self._table.fail_written(
            lambda call: ConnectionLost(
                f"{call.label}: {why} after the call was sent and before its reply; "
                "it may or may not have been applied"
            )
        )

    def _given_up(self) -> bool:
        return self._down_since is not None and trio.current_time() - self._down_since >= OWNER_WAIT_SECONDS

    def _owner_unavailable(self) -> OwnerUnavailable:
        return OwnerUnavailable(
            f"node {self.node} ({self.url}) has been unreachable for {OWNER_WAIT_SECONDS:g} s or more "
            f"({self._last_error}); the call was never sent",
            node=self.node,
        )

    def _not_sent(self, call: PendingCall) -> Exception:
        if self._state is _S.OPEN:
            return CallTimeout(f"{call.label}: the deadline passed before the call was sent; it never ran")
        return Unreachable(
            f"{call.label}: could not connect to {self.url} within the timeout; the call was never sent "
            f"(last error: {self._last_error})"
        )

    #### The connection's life

    async def serve(self) -> None:
        """Run until ``close_nowait``: dial on demand, serve the socket, redial with backoff."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._serve_deadlines)
            with self._scope:
                await self._supervise()
            nursery.cancel_scope.cancel()

    async def _supervise(self) -> None:
        failures = 0
        while True:
            while not (self._openers or self._table.queued):
                self._demand = trio.Event()
                await self._demand.wait()
            self._rejected = None
            self._set_state(_S.CONNECTING)
            try:
                await self._connect_and_serve()
                failures = 0
            except Rejected as exc:
                self._failed_dials += 1
                self._last_error = exc.message
                self._rejected = exc
                self._table.fail_queued(exc)
                # Dial again only for a call or opener that comes after the refusal; those waiting
                # now (woken by the state change) raise it.
                self._demand = trio.Event()
                self._set_state(_S.IDLE)
                await self._demand.wait()
                continue
            except _DialFailed as exc:
                self._failed_dials += 1
                self._last_error = exc.reason
                failures += 1
            if self._state is _S.CLOSED:
                return
            if self._down_since is None:
                self._down_since = trio.current_time()
            limit = RECONNECT_MAX_SECONDS
            if self.fail_fast:
                limit = FAIL_FAST_RECONNECT_MAX_SECONDS
                if self._given_up():
                    self._table.fail_queued(self._owner_unavailable())
            if self._state is not _S.BACKOFF:
                self._set_state(_S.BACKOFF)
            delay = min(limit, RECONNECT_START_SECONDS * 2 ** min(failures, 16))
            await trio.sleep(random.uniform(delay / 2, delay))
            if not (self._openers or self._table.queued):
                self._set_state(_S.IDLE)

    async def _connect_and_serve(self) -> None:
        """One socket: dial, Hello/Welcome, then serve it until it ends.

        Raises Rejected (a permanent refusal) or _DialFailed before the Welcome; returns once an open
        socket has ended (its written calls failed with ConnectionLost).
        """
        opened = False
        try:
            async with self._dialer(
                self._ws_url,
                headers=self._headers,
                subprotocols=[],
                max_message_size=MAX_RECEIVE_BYTES,
                connect_timeout=CONNECT_ATTEMPT_TIMEOUT,
            ) as ws:
                self._opened(await self._handshake(ws))
                opened = True
                await self._serve_open(ws)
        except _NETWORK_ERRORS as exc:
            if not opened:
                if not is_transient(exc):
                    raise refusal(exc, self.url) from None
                raise _DialFailed(describe(exc)) from None
            # else closing the ended socket failed too; it is gone either way

    async def _handshake(self, ws: WebSocketConnection) -> wire.Welcome:
        await ws.send_message(wire.encode((wire.Hello(wire.SUPPORTED_VERSIONS, AGENT),)))
        data: bytes | str | None = None
        with trio.move_on_after(CONNECT_ATTEMPT_TIMEOUT):
            data = await ws.get_message()
        if data is None:
            raise _DialFailed(f"the node sent no Welcome within {CONNECT_ATTEMPT_TIMEOUT} s")
        if type(data) is not bytes:
            raise _DialFailed("the node answered Hello with a text message")
        try:
            frames = wire.decode(data)
        except wire.ProtocolError as exc:
            raise _DialFailed(f"the node answered Hello with a malformed message: {exc}") from None
        frame = frames[0] if len(frames) == 1 else None
        if type(frame) is wire.Welcome and frame.version in wire.SUPPORTED_VERSIONS:
            return frame
        if type(frame) is wire.Error and frame.id is None:
            kind, message = frame.error["type"], frame.error["message"]
            raise Rejected(f"{self.url} refused the connection: {kind}: {message}", type=kind)
        names = [type(f).__name__ for f in frames]
        raise _DialFailed(f"the node answered Hello with {names}, not one Welcome")

    def _opened(self, welcome: wire.Welcome) -> None:
        self.welcome = welcome
        self._max_message_bytes = welcome.max_message_bytes
        self._connects += 1
        self._down_since = None
        self._set_state(_S.OPEN)
        self._table.set_cap(max(1, min(self._limit, welcome.max_in_flight)))
        self._on_welcome(self, welcome)

    async def _serve_open(self, ws: WebSocketConnection) -> None:
        """Run the reader and the writer until either sees the socket end (or the client closes)."""
        ended = "the connection was closed"
        self._drained = False
        try:
            async with trio.open_nursery() as nursery:
                self._serving = nursery.cancel_scope
                nursery.start_soon(self._serve_writer, ws, nursery.cancel_scope)
                ended = await self._serve_reader(ws)
                nursery.cancel_scope.cancel()
        finally:
            self._serving = None
            self._writer_parked = None
            if self._state is not _S.CLOSED:
                self._last_error = ended
                self._set_state(_S.BACKOFF)
                if self._drained:
                    self._table.fail_written(
                        lambda call: ShuttingDown(
                            f"{call.label}: the node closed for a restart before reading this call; "
                            "it never ran"
                        )
                    )
                else:
                    self._lose_written(f"the connection ended ({ended})")

    async def _serve_writer(self, ws: WebSocketConnection, scope: trio.CancelScope) -> None:
        table = self._table
        try:
            while True:
                message = table.next_message(trio.current_time(), self._max_message_bytes, self._not_sent)
                if message is None:
                    self._writer_parked = trio.lowlevel.current_task()
                    await trio.lowlevel.wait_task_rescheduled(self._unpark_writer)
                    continue
                await ws.send_message(message)
                self._messages_sent += 1
                self._calls_sent += table.last_message_calls
        except ConnectionClosed as exc:
            self._note_close(exc)
            scope.cancel()  # the reader sees the same close and names it

    def _note_close(self, exc: ConnectionClosed) -> None:
        """Remember whether the socket ended with the node's drain close (reader or writer saw it)."""
        reason = exc.reason
        if reason is not None and (reason.code, reason.reason) == wire.DRAIN_CLOSE:
            self._drained = True

    def _unpark_writer(self, _: Any) -> trio.lowlevel.Abort:
        self._writer_parked = None
        return trio.lowlevel.Abort.SUCCEEDED

    async def _serve_reader(self, ws: WebSocketConnection) -> str:
        """Resolve replies until the socket ends; returns why it ended."""
        table = self._table
        try:
            while True:
                table.resolve_message(await ws.get_message())
                self._messages_received += 1
        except ConnectionClosed as exc:
            self._note_close(exc)
            return describe(exc)
        except wire.ProtocolError as exc:
            reason = f"the node sent a malformed message ({exc})"
            with trio.move_on_after(CLOSE_TIMEOUT_SECONDS):
                await ws.aclose(4400, reason.encode()[:120].decode(errors="ignore"))
            return reason

    async def _serve_deadlines(self) -> None:
        deadlines = self._table.deadlines
        while True:
            deadlines.changed = trio.Event()
            when = deadlines.next_time()
            if when is None:
                await deadlines.changed.wait()
                continue
            with trio.move_on_at(when):
                await deadlines.changed.wait()
                continue
            self._table.expire(trio.current_time(), self._not_sent, self.url)


class _DialFailed(Exception):
    """A dial that may succeed if tried again; ``reason`` says what happened."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
