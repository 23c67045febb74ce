"""The calls of one connection: in-flight slots, the send queue, the written map, deadlines. No I/O.

Guarantees (the connection's, see ``_connection.py``, rest on these)
- A call moves QUEUED -> WRITTEN -> DONE, or QUEUED -> DONE; never back. Only ``next_message`` makes a
  call WRITTEN, and only a QUEUED call goes into a message, so no call is ever sent twice.
- Exactly one outcome is delivered to each call's caller, and its slot is freed exactly once.
- At most ``cap`` calls hold a slot (queued or written); waiting callers get freed slots in arrival
  order, handed over directly so a newcomer cannot overtake them.

Mechanism
    A call is a small record plus the caller's task, parked in ``wait_task_rescheduled`` until
    ``reschedule`` hands it its outcome: no task, event or cancel scope per call. A trio CancelScope
    costs several microseconds to enter and leave (``actors/_deadlines.py`` measured 7-10 µs), more
    than the rest of a call's client-side work, so deadlines live on one heap per connection, watched
    by one task (the runtime's ``DeadlineWatch`` design): finished calls are dropped from it lazily,
    and it is compacted whenever it doubles, so it stays about as large as the calls in flight.
    Calls that end while still queued (deadline, cancellation) stay in the deque, marked DONE, until
    the writer passes them or the dead outnumber the live.
"""

from __future__ import annotations

import collections
import enum
import heapq
from collections.abc import Callable
from typing import Any, Final, final

import outcome
import trio

from actors import wire
from actors.errors import LimitExceeded

from .errors import ReplyTimeout, remote_error

__all__ = [
    "MAX_HEADER_BYTES",
    "REPLY_GRACE_SECONDS",
    "CallState",
    "CallTable",
    "DeadlineHeap",
    "PendingCall",
    "message_header",
]

#: seconds past a written call's deadline before the SDK stops waiting for the node's answer
REPLY_GRACE_SECONDS: Final = 1.0

#: heap entries below which the deadline heap is never compacted
_MIN_COMPACT: Final = 1024
#: dead entries below which the queue is never compacted
_MIN_QUEUE_COMPACT: Final = 64
#: the longest header ``message_header`` makes
MAX_HEADER_BYTES: Final = 3


class CallState(enum.Enum):
    QUEUED = "queued"  # in the send queue, not yet in a message: may still go out on a new socket
    WRITTEN = "written"  # in a message handed to the socket: never sent again, whatever happens
    DONE = "done"  # its outcome was delivered (or its caller stopped waiting)


@final
class PendingCall:
    """A call from the moment it holds a slot until its outcome is delivered."""

    __slots__ = ("args", "cls", "deadline", "id", "kwargs", "method", "name", "state", "table", "task")

    def __init__(
        self,
        table: CallTable,
        cls: str,
        name: str,
        method: str,
        args: list[Any],
        kwargs: dict[str, Any],
        deadline: float,
    ) -> None:
        self.table = table
        self.id = table.next_id()
        self.cls = cls
        self.name = name
        self.method = method
        self.args = args
        self.kwargs = kwargs
        #: trio time by which the node must have answered (the node is told the time left)
        self.deadline = deadline
        self.state = CallState.QUEUED
        #: the caller, parked until the table reschedules it with the outcome
        self.task = trio.lowlevel.current_task()

    @property
    def label(self) -> str:
        return f"{self.cls}/{self.name}.{self.method}"

    def frame(self, now: float) -> wire.Call:
        """This call's frame, telling the node the time left at ``now``."""
        return wire.Call(*self.fields(now))

    def fields(self, now: float) -> wire.CallFields:
        """This call's frame as ``wire.encode_calls`` takes it (no Call object on the hot path)."""
        return (self.id, self.cls, self.name, self.method, self.args, self.kwargs, self.deadline - now)

    def abort(self, _: Any) -> trio.lowlevel.Abort:
        """The caller was cancelled: forget the call (a written call still runs on the node)."""
        self.table.settle(self)
        return trio.lowlevel.Abort.SUCCEEDED


def message_header(frames: int) -> bytes:
    """The CBOR array header of a message of ``frames`` frames (at most MAX_FRAMES_PER_MESSAGE)."""
    if frames < 24:
        return bytes((0x80 | frames,))
    if frames < 256:
        return bytes((0x98, frames))
    return b"\x99" + frames.to_bytes(2, "big")


@final
class DeadlineHeap:
    """Calls by the time at which something must happen to them (see the module docstring)."""

    __slots__ = ("_compact_at", "_heap", "changed")

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, PendingCall]] = []
        self._compact_at = _MIN_COMPACT
        #: set when the earliest time moved earlier; the watcher replaces it each time it sleeps
        self.changed = trio.Event()

    def __len__(self) -> int:
        return len(self._heap)

    def push(self, when: float, call: PendingCall) -> None:
        heap = self._heap
        entry = (when, call.id, call)
        heapq.heappush(heap, entry)
        if heap[0] is entry:
            self.changed.set()
        if len(heap) > self._compact_at:
            heap[:] = [e for e in heap if e[2].state is not CallState.DONE]
            heapq.heapify(heap)
            self._compact_at = max(_MIN_COMPACT, 2 * len(heap))

    def next_time(self) -> float | None:
        """The earliest time of a call not yet done (None if there is none)."""
        heap = self._heap
        while heap and heap[0][2].state is CallState.DONE:
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def pop_due(self, now: float) -> list[tuple[float, PendingCall]]:
        """Every entry due at ``now`` whose call is not done, earliest first."""
        heap, due = self._heap, []
        while heap and heap[0][0] <= now:
            when, _, call = heapq.heappop(heap)
            if call.state is not CallState.DONE:
                due.append((when, call))
        return due


@final
class CallTable:
    """Every call of one connection that holds a slot, and the callers waiting for one."""

    def __init__(self, cap: int) -> None:
        #: slots in all; lowered or raised by the node's Welcome (``set_cap``)
        self.cap = cap
        #: slots held: calls queued or written
        self.used = 0
        self.waiters = trio.lowlevel.ParkingLot()
        self.queue: collections.deque[PendingCall] = collections.deque()
        #: calls in ``queue`` that are DONE; the writer skips them
        self.queue_dead = 0
        self.written: dict[int, PendingCall] = {}
        self.deadlines = DeadlineHeap()
        #: calls in the last message ``next_message`` made
        self.last_message_calls = 0
        #: a Welcome after the first one is a newer cluster map (the membership changed)
        self.on_map: Callable[[wire.Welcome], None] | None = None
        self._next_id = 1

    def next_id(self) -> int:
        call_id = self._next_id
        self._next_id += 1
        return call_id

    @property
    def queued(self) -> int:
        return len(self.queue) - self.queue_dead

    #### Slots

    def try_acquire(self) -> bool:
        """Take a slot if one is free and nobody waits for one."""
        if self.used < self.cap and not self.waiters:
            self.used += 1
            return True
        return False

    async def acquire(self, deadline: float) -> bool:
        """Wait in line until a slot is handed over (True) or ``deadline`` passes (False)."""
        with trio.move_on_at(deadline):
            await self.waiters.park()
            return True
        return False

    def set_cap(self, cap: int) -> None:
        self.cap = cap
        self._grant()

    def release(self) -> None:
        """Give back a slot that ``try_acquire`` or ``acquire`` took and no call holds."""
        self.used -= 1
        if self.waiters:
            self._grant()

    def _grant(self) -> None:
        """Hand free slots straight to waiting callers, first come first served."""
        while self.used < self.cap and self.waiters:
            self.used += 1
            self.waiters.unpark()

    #### Outcomes

    def add(self, call: PendingCall) -> None:
        self.queue.append(call)
        self.deadlines.push(call.deadline, call)

    def deliver(self, call: PendingCall, result: outcome.Outcome[Any]) -> None:
        """End ``call`` (already out of the queue and the written map) with ``result``."""
        call.state = CallState.DONE
        self.release()
        trio.lowlevel.reschedule(call.task, result)

    def settle(self, call: PendingCall) -> bool:
        """Take ``call`` out of wherever it is and free its slot; False if it was done already."""
        if call.state is CallState.DONE:
            return False
        if call.state is CallState.WRITTEN:
            del self.written[call.id]
        else:
            self.queue_dead += 1
            if self.queue_dead > _MIN_QUEUE_COMPACT and 2 * self.queue_dead > len(self.queue):
                live = [c for c in self.queue if c.state is CallState.QUEUED]
                self.queue.clear()
                self.queue.extend(live)
                self.queue_dead = 0
        call.state = CallState.DONE
        self.release()
        return True

    def fail(self, call: PendingCall, exc: BaseException) -> None:
        if self.settle(call):
            trio.lowlevel.reschedule(call.task, outcome.Error(exc))

    def resolve(self, call_id: int, result: outcome.Outcome[Any]) -> None:
        """The reply to ``call_id`` came; a reply to a call given up on is dropped."""
        call = self.written.pop(call_id, None)
        if call is not None:
            self.deliver(call, result)

    def resolve_message(self, data: bytes | str) -> None:
        """Deliver every reply of one message from the node.

        Raises ProtocolError (before delivering anything) for a text message or one that does not
        decode; while delivering, for a frame a node must not send, for ``Error(None)`` (the node
        reports our fault and closes) and for an error map that does not parse.
        """
        if type(data) is not bytes:
            raise wire.ProtocolError("a text message (frames travel in binary messages)")
        for frame in wire.decode(data):
            if type(frame) is wire.Result:
                self.resolve(frame.id, outcome.Value(frame.value))
            elif type(frame) is wire.Welcome:
                if self.on_map is not None:
                    self.on_map(frame)
            else:
                self.resolve(*_reply_error(frame))

    def expire(self, now: float, not_sent: Callable[[PendingCall], Exception], url: str) -> None:
        """Act on every deadline due at ``now``: a queued call fails with ``not_sent(call)``; a
        written one gets ``REPLY_GRACE_SECONDS`` more for the node's own CallTimeout, then fails
        with ReplyTimeout."""
        for when, call in self.deadlines.pop_due(now):
            if call.state is CallState.QUEUED:
                self.fail(call, not_sent(call))
            elif when == call.deadline:
                self.deadlines.push(call.deadline + REPLY_GRACE_SECONDS, call)
            else:
                message = (
                    f"{call.label}: no reply from {url} within the timeout plus {REPLY_GRACE_SECONDS} s; "
                    "it may or may not have been applied"
                )
                self.fail(call, ReplyTimeout(message))

    def fail_queued(self, exc: BaseException) -> None:
        for call in list(self.queue):
            self.fail(call, exc)

    def fail_written(self, make: Callable[[PendingCall], BaseException]) -> None:
        for call in list(self.written.values()):
            self.fail(call, make(call))

    #### Writing

    def next_message(
        self, now: float, max_bytes: int, not_sent: Callable[[PendingCall], Exception]
    ) -> bytes | None:
        """Take queued calls into one message, marking them written; None if none is queued.

        A call past its deadline fails with ``not_sent(call)`` instead (the node refuses a timeout
        of 0); one that does not encode, or is too big for any message, fails with its error. The
        batch is encoded in one go; only a batch over ``max_bytes`` (or one that does not encode) is
        packed frame by frame, and the calls that did not fit go back to the front of the queue.
        """
        batch = self._take(now, not_sent)
        if not batch:
            return None
        try:
            data: bytes | None = wire.encode_calls([call.fields(now) for call in batch])
        except Exception:  # InvalidArgument: a value cbor2 cannot encode; find out which below
            data = None
        if data is None or len(data) > max_bytes:
            data, batch = self._pack(batch, now, max_bytes)
            if data is None:
                return None
        written = self.written
        for call in batch:
            call.state = CallState.WRITTEN
            written[call.id] = call
        self.last_message_calls = len(batch)
        return data

    def _take(self, now: float, not_sent: Callable[[PendingCall], Exception]) -> list[PendingCall]:
        """Pop up to MAX_FRAMES_PER_MESSAGE live calls (failing those past their deadline)."""
        queue = self.queue
        batch: list[PendingCall] = []
        while queue and len(batch) < wire.MAX_FRAMES_PER_MESSAGE:
            call = queue.popleft()
            if call.state is not CallState.QUEUED:
                self.queue_dead -= 1
            elif call.deadline <= now:
                self.deliver(call, outcome.Error(not_sent(call)))
            else:
                batch.append(call)
        return batch

    def _pack(
        self, batch: list[PendingCall], now: float, max_bytes: int
    ) -> tuple[bytes | None, list[PendingCall]]:
        """Encode ``batch`` frame by frame into one message of at most ``max_bytes``; calls that do
        not encode or can never fit fail, calls that do not fit this time are queued again."""
        limit = max_bytes - MAX_HEADER_BYTES
        chunks: list[bytes] = []
        packed: list[PendingCall] = []
        size = 0
        for index, call in enumerate(batch):
            try:
                data = wire.encode((call.frame(now),))[1:]  # a one-frame message is 0x81 + the frame
            except Exception as exc:  # InvalidArgument
                self.deliver(call, outcome.Error(exc))
                continue
            if len(data) > limit:
                error = LimitExceeded(
                    f"{call.label}: the call is {len(data)} bytes encoded; the node takes messages of "
                    f"at most max_message_bytes ({max_bytes})",
                    limit="max_message_bytes",
                )
                self.deliver(call, outcome.Error(error))
                continue
            if size + len(data) > limit:
                self.queue.extendleft(reversed(batch[index:]))
                break
            chunks.append(data)
            packed.append(call)
            size += len(data)
        if not chunks:
            return None, []
        return message_header(len(chunks)) + b"".join(chunks), packed


def _reply_error(frame: wire.Frame) -> tuple[int, outcome.Error]:
    """The call id and outcome of an Error frame; ProtocolError for anything else (see
    ``CallTable.resolve_message``)."""
    if type(frame) is not wire.Error:
        raise wire.ProtocolError(f"a {type(frame).__name__} frame")
    if frame.id is None:
        error = frame.error
        raise wire.ProtocolError(f"the node reports a fault: {error['type']}: {error['message']}")
    try:
        return frame.id, outcome.Error(remote_error(frame.error))
    except (TypeError, ValueError, OverflowError) as exc:  # e.g. a retry_after that is not a number
        raise wire.ProtocolError(f"an error map that does not parse: {exc}") from None
