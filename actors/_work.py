"""One call to run as a turn (``Work``), and where it is in its life (``WorkState``).

Guarantees
- ``finish`` runs once per call, after its outcome is final and durable: it releases the socket
  frames the turn queued (only if the turn succeeded, in the order it queued them), then wakes the
  one waiting caller, or calls ``callback`` for a caller that does not wait (``Runtime.start_call``).
- A call abandoned while queued never runs and is never finished.
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from ._object import DurableObject

__all__ = ["TurnFn", "Work", "WorkState"]

TurnFn = Callable[[DurableObject], Awaitable[Any]]


class WorkState(enum.Enum):
    QUEUED = "queued"  # waiting in the queue
    RUNNING = "running"  # its turn started; it will finish (and commit or roll back)
    FINISHED = "finished"  # outcome set, reply may be read
    ABANDONED = "abandoned"  # the caller gave up while it was queued; it will never run


class Work:
    """One call to be run as a turn: ``await fn(instance)``, or (``fn`` None) the public method named
    ``label`` with ``args`` and ``kwargs`` (no closure and no extra coroutine per call)."""

    __slots__ = (
        "_waiter", "args", "callback", "chain", "check_result", "deadline", "error", "fn", "kwargs",
        "label", "outbox", "result", "solo", "state",
    )  # fmt: skip

    def __init__(
        self,
        fn: TurnFn | None,
        label: str,
        deadline: float,
        chain: object,
        check_result: bool,
        args: tuple[Any, ...] | list[Any] = (),
        kwargs: dict[str, Any] | None = None,
    ):
        self.fn = fn
        self.label = label
        self.args = args
        self.kwargs = kwargs
        self.deadline = deadline
        self.chain = chain  # identity of the call chain this call belongs to
        self.check_result = check_result
        self.state = WorkState.QUEUED
        self.result: Any = None
        self.error: BaseException | None = None
        self._waiter: trio.lowlevel.Task | None = None
        #: socket frames and closes the turn queued; released by finish() only if it succeeded
        self.outbox: list[Any] | None = None
        #: runs alone, after everything before it committed, with no transaction open (snapshots)
        self.solo = False
        #: called with this work once finished, for a caller that does not wait (``Runtime.start_call``)
        self.callback: Callable[[Work], None] | None = None

    def finish(self) -> None:
        """The outcome is final and durable: release the reply and what the turn queued for sockets."""
        self.state = WorkState.FINISHED
        if self.outbox is not None:
            if self.error is None:
                for ws, kind, frame in self.outbox:  # in the order the turn queued them
                    ws.deliver(frame, kind)
            self.outbox = None
        waiter, self._waiter = self._waiter, None
        if waiter is not None:
            trio.lowlevel.reschedule(waiter)
        elif self.callback is not None:
            self.callback(self)

    def abandon(self) -> None:
        """The caller went away: if still queued, never run it (and never finish it)."""
        if self.state is WorkState.QUEUED:
            self.state = WorkState.ABANDONED

    @property
    def finished(self) -> bool:
        return self.state is WorkState.FINISHED

    def wait(self) -> Awaitable[None]:
        """Wait until finished (one waiter: the caller). Cheaper than a trio.Event on the hot path.

        Not itself a coroutine: it returns trio's, so a parked caller's stack is one frame shorter
        (every frame of it is walked when the caller parks and again when it resumes).
        """
        if self.state is WorkState.FINISHED:
            return trio.lowlevel.checkpoint()  # noqa: ASYNC105 (the caller awaits it)
        self._waiter = trio.lowlevel.current_task()
        return trio.lowlevel.wait_task_rescheduled(self._abort)  # noqa: ASYNC105 (the caller awaits it)

    def _abort(self, _: Any) -> trio.lowlevel.Abort:
        self._waiter = None
        return trio.lowlevel.Abort.SUCCEEDED

    def fail(self, error: BaseException) -> None:
        self.error = error
        self.finish()

    def outcome(self) -> Any:
        if self.error is not None:
            raise self.error
        return self.result
