"""Per-call deadlines, enforced by one task for the whole runtime.

Guarantee: a call whose deadline passes while it is queued fails at that moment with CallTimeout and never
runs; a call whose deadline passes during its turn has the turn cancelled, its writes rolled back, and
fails with CallTimeout. A turn whose commit has begun is never cancelled: it replies normally.

Why not a cancel scope per call: a trio CancelScope costs 7-10 µs to enter and leave, more than the rest
of a turn. Instead every call is pushed on one heap (0.3 µs); a single task sleeps until the earliest
deadline, and only a call that actually overruns costs anything more. Finished calls are dropped lazily:
from the top at every push (calls mostly share one timeout, so the oldest is on top and usually done),
when the watcher wakes, and by a compaction whenever the heap doubles. So the heap stays about as large
as the number of calls in flight, and a finished call is freed at once rather than after many garbage
collector generations (keeping tens of thousands alive made every full collection slow).
"""

from __future__ import annotations

import heapq
import itertools
from typing import TYPE_CHECKING, Final

import trio

from ._work import WorkState
from .errors import CallTimeout

if TYPE_CHECKING:
    from ._activation import Activation
    from ._work import Work

_MIN_COMPACT = 1024
_FINISHED: Final = WorkState.FINISHED


class DeadlineWatch:
    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Work, Activation]] = []
        self._seq = itertools.count()
        self._compact_at = _MIN_COMPACT
        self._changed: trio.Event = trio.Event()

    def watch(self, work: Work, activation: Activation) -> None:
        """Enforce ``work.deadline`` for ``work`` queued on ``activation``."""
        heap = self._heap
        while heap and heap[0][2].state is _FINISHED:
            heapq.heappop(heap)
        entry = (work.deadline, next(self._seq), work, activation)
        heapq.heappush(heap, entry)
        if heap[0] is entry:
            self._changed.set()
        if len(heap) > self._compact_at:
            self._compact()

    def _compact(self) -> None:
        self._heap = [e for e in self._heap if e[2].state is not _FINISHED]
        heapq.heapify(self._heap)
        self._compact_at = max(_MIN_COMPACT, 2 * len(self._heap))

    async def serve(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            heap = self._heap
            while heap and heap[0][2].state in (WorkState.FINISHED, WorkState.ABANDONED):
                heapq.heappop(heap)
            self._changed = trio.Event()
            if not heap:
                await self._changed.wait()
                continue
            with trio.move_on_at(heap[0][0]):
                await self._changed.wait()
                continue
            now = trio.current_time()
            while heap and heap[0][0] <= now:
                _, _, work, activation = heapq.heappop(heap)
                if work.state is WorkState.QUEUED:
                    work.state = WorkState.ABANDONED
                    work.fail(CallTimeout(f"{work.label}: deadline passed while queued; it never ran"))
                elif work.state is WorkState.RUNNING:
                    activation.cancel_turn(work)
