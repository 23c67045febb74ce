"""Node-to-node links: one persistent, multiplexed, authenticated WebSocket from this node to each peer.

Guarantees
- One link per ordered pair of nodes: this node dials each peer once (``GET /v1/peer``) and sends
  its forwarded calls there as the SDK's Call frames; the peer answers with Result and Error frames
  as the calls finish. Calls ready together leave in one message (batching, as in the SDK).
- Authenticated both ways before any call is written (``handshake.py``); a refused link is logged
  with its reason and retried with backoff, and none of its calls run.
- Every call started gets exactly one reply through its callback:
  - the peer's Result or Error;
  - ``OwnerUnavailable`` (naming the peer) if the call was never written: the link is down, or did
    not come up within ``OWNER_WAIT_SECONDS`` of going down (calls wait for it that long, bounded
    by their deadline; after that they fail at once until the link is back). Never ran: safe to retry.
  - ``OwnerLost`` if the call was written and the link dropped before its reply: it may have run.
- A dead peer is noticed within ``HEARTBEAT_TIMEOUT_SECONDS`` even when no TCP reset arrives: a
  ping every ``HEARTBEAT_SECONDS`` must be answered in time, or the link is dropped.
- The link redials forever with backoff (``REDIAL_MIN_SECONDS`` doubling to ``REDIAL_MAX_SECONDS``),
  so a peer that returns is used again with no restart of this node.

Mechanism: a link task per peer (dial, handshake, then a reader, a writer and a heartbeat until the
connection breaks); calls are appended to an outbox as field tuples (``wire.encode_calls``) and a
parked writer is woken, as in ``server/rpc.py`` and the SDK's connection.
"""

from __future__ import annotations

import enum
import hmac
import itertools
import logging
from collections.abc import Callable, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, Final, Protocol

import trio
from trio_websocket import ConnectionClosed, WebSocketConnection

from actors import wire
from actors.errors import ActorError, InvalidArgument, OwnerLost, OwnerUnavailable
from actors.wire import MAX_FRAMES_PER_MESSAGE, Error, Result

from . import handshake
from .dial import failure_of, open_peer_websocket
from .handshake import Auth, HandshakeRefused

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from .membership import Member, Membership

__all__ = [
    "EPOCH_OPERATION",
    "HEARTBEAT_SECONDS",
    "HEARTBEAT_TIMEOUT_SECONDS",
    "OWNER_WAIT_SECONDS",
    "PEER_PATH",
    "Abandonable",
    "LinkState",
    "PeerLink",
]

log = logging.getLogger("server.cluster")

#: the route a node serves its peers on
PEER_PATH: Final = "/v1/peer"
#: the node operation that announces the sender's epoch on a link (``router.py``, the epoch rule)
EPOCH_OPERATION: Final = "epoch"
#: seconds calls wait for a link that is down to come back before failing with OwnerUnavailable
OWNER_WAIT_SECONDS: Final = 2.0
#: a ping every this many seconds while the link is up
HEARTBEAT_SECONDS: Final = 1.0
#: a ping unanswered this long drops the link
HEARTBEAT_TIMEOUT_SECONDS: Final = 3.0
#: seconds one dial (TCP, WebSocket and link handshake) may take
DIAL_TIMEOUT_SECONDS: Final = 2.0
REDIAL_MIN_SECONDS: Final = 0.05
REDIAL_MAX_SECONDS: Final = 0.5
#: seconds between dials to a peer that refused the link (wrong secret, other membership): an
#: operator must fix it, and each refusal is logged on both sides
REFUSED_REDIAL_SECONDS: Final = 5.0

#: reply(value, error): exactly one of them is meaningful
ReplyCallback = Callable[[Any, "ActorError | None"], None]


class Abandonable(Protocol):
    """A call in progress whose caller may stop waiting (``Work`` of the runtime, ``_Pending`` here)."""

    def abandon(self) -> None: ...


class LinkState(enum.Enum):
    CONNECTING = "connecting"  # not up yet, or lost less than OWNER_WAIT_SECONDS ago: calls wait
    UP = "up"  # calls are written at once
    DOWN = "down"  # unreachable for OWNER_WAIT_SECONDS or more: calls fail at once


class LinkMetrics(Protocol):
    """What a link reports (``server/metrics.py`` implements it with Prometheus)."""

    def link_state(self, peer: str, up: bool) -> None: ...
    def forwarded(self, peer: str, seconds: float) -> None: ...


class _Pending:
    __slots__ = ("reply", "started", "written")

    def __init__(self, reply: ReplyCallback, started: float) -> None:
        self.reply: ReplyCallback | None = reply
        self.started = started
        self.written = False

    def abandon(self) -> None:
        """Nobody waits for the reply any more (the caller's connection is gone)."""
        self.reply = None


class PeerLink:
    """This node's link to one peer (see the module docstring)."""

    def __init__(
        self, membership: Membership, peer: Member, metrics: LinkMetrics, *, max_message_bytes: int
    ) -> None:
        self.membership = membership
        self.peer = peer
        self._metrics = metrics
        self._max_message_bytes = max_message_bytes
        self.state = LinkState.CONNECTING
        #: set the first time the link comes up (readiness)
        self.reached = trio.Event()
        self._give_up_at = trio.current_time() + OWNER_WAIT_SECONDS
        self._ids = itertools.count(1)
        self._pending: dict[int, _Pending] = {}
        self._outbox: list[wire.CallFields] = []
        self._wake = trio.Event()

    @property
    def up(self) -> bool:
        return self.state is LinkState.UP

    #### Calls

    def start_call(
        self,
        cls: str,
        name: str,
        method: str,
        args: list[Any],
        kwargs: dict[str, Any],
        timeout: float | None,
        reply: ReplyCallback,
    ) -> _Pending:
        """Send a call to the peer; ``reply`` is called once with its outcome. Raises OwnerUnavailable
        at once while the link is DOWN (nothing was sent)."""
        state = self.state
        if state is LinkState.DOWN or (
            state is LinkState.CONNECTING and trio.current_time() >= self._give_up_at
        ):
            raise self._unavailable()  # (the link task fails the calls already waiting soon after)
        call_id = next(self._ids)
        pending = _Pending(reply, trio.current_time())
        self._pending[call_id] = pending
        self._outbox.append((call_id, cls, name, method, args, kwargs, timeout))
        self._wake.set()
        return pending

    async def call(
        self,
        cls: str,
        name: str,
        method: str,
        args: Sequence[Any] = (),
        kwargs: dict[str, Any] | None = None,
        timeout: float | None = None,
    ) -> Any:
        """Await one call's outcome (the peer's value or error, OwnerUnavailable, OwnerLost)."""
        done = trio.Event()
        outcome: list[Any] = []

        def reply(value: Any, error: ActorError | None) -> None:
            outcome.append((value, error))
            done.set()

        pending = self.start_call(cls, name, method, list(args), dict(kwargs or {}), timeout, reply)
        try:
            await done.wait()
        finally:
            pending.abandon()
        value, error = outcome[0]
        if error is not None:
            raise error
        return value

    def announce_epoch(self, epoch: int) -> None:
        """Tell the peer this node's epoch, ahead of every call sent after this (the peer adopts a
        newer epoch before it acts on those calls; ``router.py``)."""
        if self.state is not LinkState.UP:
            return  # a link that comes up announces the epoch of that moment first
        self._append_announcement(epoch)

    def _append_announcement(self, epoch: int, *, first: bool = False) -> None:
        call_id = next(self._ids)
        self._pending[call_id] = _Pending(_ignore_reply, trio.current_time())
        fields: wire.CallFields = (call_id, "", "", EPOCH_OPERATION, [], {"epoch": epoch}, None)
        if first:
            self._outbox.insert(0, fields)
        else:
            self._outbox.append(fields)
        self._wake.set()

    def close(self, reason: str) -> None:
        """The peer left the membership: fail every call waiting for it (the task is cancelled)."""
        self._lose_written()
        self._set_state(LinkState.DOWN)
        self._fail_unwritten()
        log.info("peer link closed", extra={"event": "peer_removed", "peer": self.peer.id, "reason": reason})

    def _unavailable(self) -> OwnerUnavailable:
        peer = self.peer
        return OwnerUnavailable(
            f"the object's owner, node {peer.id} ({peer.url}), is unreachable; the call did not run",
            node=peer.id,
            retry_after=1.0,
        )

    def _lose_written(self) -> None:
        """The connection broke: written calls lost (OwnerLost), unwritten ones wait or fail."""
        lost = OwnerLost(
            f"the link to node {self.peer.id} dropped before the reply; the call may or may not have run"
        )
        written = [call_id for call_id, p in self._pending.items() if p.written]
        for call_id in written:
            self._finish(call_id, None, lost)

    def _fail_unwritten(self) -> None:
        self._outbox.clear()
        error = self._unavailable()
        for call_id in [call_id for call_id, p in self._pending.items() if not p.written]:
            self._finish(call_id, None, error)

    def _finish(self, call_id: int, value: Any, error: ActorError | None) -> None:
        pending = self._pending.pop(call_id, None)
        if pending is None:
            return
        if pending.written:
            self._metrics.forwarded(self.peer.id, trio.current_time() - pending.started)
        reply = pending.reply
        if reply is not None:
            reply(value, error)

    #### The link task

    async def run(self) -> None:
        """Keep the link up forever (the node's nursery cancels it at shutdown)."""
        backoff = REDIAL_MIN_SECONDS
        while True:
            try:
                async with self._open() as ws:
                    backoff = REDIAL_MIN_SECONDS
                    # before anything queued while the link was down
                    self._append_announcement(self.membership.epoch, first=True)
                    self._set_state(LinkState.UP)
                    self.reached.set()
                    await self._serve(ws)
            except Exception as exc:  # a link never takes the node down: it is dropped and redialled
                failure = failure_of(exc)
                self._lost(failure)
                if isinstance(failure, HandshakeRefused) or _refused(failure):
                    backoff = REFUSED_REDIAL_SECONDS
            if self.state is LinkState.UP:
                self._lost(None)
            if self.state is LinkState.CONNECTING and trio.current_time() >= self._give_up_at:
                self._set_state(LinkState.DOWN)
                self._fail_unwritten()
            await trio.sleep(backoff)
            backoff = min(backoff * 2, max(backoff, REDIAL_MAX_SECONDS))

    def _lost(self, exc: BaseException | None) -> None:
        was_up = self.state is LinkState.UP
        self._lose_written()
        if was_up:
            log.warning(
                "peer link down",
                extra={"event": "peer_down", "peer": self.peer.id, "error": _describe(exc)},
            )
            self._give_up_at = trio.current_time() + OWNER_WAIT_SECONDS
            self._set_state(LinkState.CONNECTING)
        elif isinstance(exc, HandshakeRefused) or _refused(exc):
            log.warning(
                "peer link refused",
                extra={"event": "peer_refused", "peer": self.peer.id, "error": _describe(exc)},
            )

    def _set_state(self, state: LinkState) -> None:
        if state is self.state:
            return
        self.state = state
        self._metrics.link_state(self.peer.id, state is LinkState.UP)
        if state is LinkState.UP:
            log.info("peer link up", extra={"event": "peer_up", "peer": self.peer.id})

    @asynccontextmanager
    async def _open(self) -> AsyncIterator[WebSocketConnection]:
        """Dial the peer and run the handshake (HandshakeRefused, HandshakeError, OSError)."""
        async with open_peer_websocket(
            self.peer.url,
            PEER_PATH,
            max_message_size=_LINK_MAX_MESSAGE_BYTES,
            timeout=DIAL_TIMEOUT_SECONDS,
        ) as ws:
            with trio.fail_after(DIAL_TIMEOUT_SECONDS):
                await self._authenticate(ws)
            yield ws

    async def _authenticate(self, ws: WebSocketConnection) -> None:
        membership, peer = self.membership, self.peer
        challenge = handshake.parse(await ws.get_message(), "challenge")
        if challenge["node"] != peer.id:
            raise HandshakeRefused(f"the node at {peer.url} is {challenge['node']!r}, not {peer.id!r}")
        nonce = handshake.new_nonce()
        secret, me, digest = membership.secret, membership.self_id, membership.link_digest
        mac = handshake.dial_mac(secret, challenge["nonce"], nonce, me, peer.id, digest)
        await ws.send_message(handshake.auth_message(Auth(me, membership.link_epoch, digest, nonce, mac)))
        accept = handshake.parse(await ws.get_message(), "accept")
        expected = handshake.accept_mac(secret, challenge["nonce"], nonce, me, peer.id, digest)
        if not hmac.compare_digest(accept["mac"], expected):
            raise HandshakeRefused(f"node {peer.id} could not prove the cluster secret")

    async def _serve(self, ws: WebSocketConnection) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._write, ws)
            nursery.start_soon(self._heartbeat, ws)
            try:
                while True:
                    self._read(await ws.get_message())
            finally:
                nursery.cancel_scope.cancel()

    def _read(self, data: str | bytes) -> None:
        if not isinstance(data, bytes):
            raise HandshakeRefused("the peer sent a text message")
        for frame in wire.decode(data):
            if isinstance(frame, Result):
                self._finish(frame.id, frame.value, None)
            elif isinstance(frame, Error) and frame.id is not None:
                self._finish(frame.id, None, frame.exception())
            else:
                raise HandshakeRefused(f"the peer sent an unexpected frame: {frame!r:.200}")

    async def _write(self, ws: WebSocketConnection) -> None:
        pending = self._pending
        while True:
            if not self._outbox:
                self._wake = trio.Event()
                await self._wake.wait()
                continue
            batch, self._outbox = self._outbox, []
            for calls in _chunks(batch, MAX_FRAMES_PER_MESSAGE):
                for fields in calls:
                    entry = pending.get(fields[0])
                    if entry is not None:
                        entry.written = True
                for data in self._encode(calls):
                    await ws.send_message(data)

    def _encode(self, calls: list[wire.CallFields]) -> list[bytes]:
        """The calls as messages within ``max_message_bytes`` (a lone call over it fails at once)."""
        try:
            data = wire.encode_calls(calls)
        except InvalidArgument as exc:
            if len(calls) == 1:
                self._finish(calls[0][0], None, exc)
                return []
            data = None
        if data is not None and len(data) <= self._max_message_bytes:
            return [data]
        if len(calls) == 1:
            self._finish(calls[0][0], None, InvalidArgument("the call is over the node link's message limit"))
            return []
        half = len(calls) // 2
        return self._encode(calls[:half]) + self._encode(calls[half:])

    async def _heartbeat(self, ws: WebSocketConnection) -> None:
        while True:
            await trio.sleep(HEARTBEAT_SECONDS)
            with trio.move_on_after(HEARTBEAT_TIMEOUT_SECONDS):
                await ws.ping()
                continue
            raise HandshakeRefused(
                f"node {self.peer.id} did not answer a ping in {HEARTBEAT_TIMEOUT_SECONDS:g} s"
            )


#: the largest message a peer may send on a link (replies are cut to ``max_frame_bytes`` by the peer)
_LINK_MAX_MESSAGE_BYTES: Final = 64 * 1024 * 1024


def _ignore_reply(value: Any, error: ActorError | None) -> None:
    """An epoch announcement's reply carries nothing (an error: the link drops and announces again)."""


def _chunks(items: list[Any], size: int) -> list[list[Any]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def _refused(exc: BaseException | None) -> bool:
    return (
        isinstance(exc, ConnectionClosed)
        and exc.reason is not None
        and exc.reason.code
        in (
            handshake.AUTH_FAILED,
            handshake.MEMBERSHIP_DIFFERS,
        )
    )


def _describe(exc: BaseException | None) -> str:
    if exc is None:
        return "closed"
    if isinstance(exc, ConnectionClosed) and exc.reason is not None:
        return f"closed {exc.reason.code} {exc.reason.reason or ''}".strip()
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
