"""Alarms: one durable alarm per object, run as a turn at or after its time, at least once.

Guarantees
- The alarm lives in the object's own file (``_actors_alarm``) and is set or deleted inside the turn's
  transaction; the node's catalog indexes it (written before the object's commit, see ``_catalog.py``), so
  after a restart the scheduler fires every pending alarm without any call waking the object.
- ``alarm()`` runs as an ordinary turn: serialized with calls, its writes atomic. On success the alarm is
  deleted in the same transaction, unless ``alarm()`` set or deleted it itself.
- At least once: if ``alarm()`` raises, its writes roll back and it is retried after
  ``ALARM_RETRY_START_SECONDS * 2**n`` seconds (2, 4, 8, 16, 32, 64) for ``ALARM_MAX_RETRIES`` retries,
  about two minutes in all (workerd's schedule, without jitter so tests can assert it). After the last
  retry fails the alarm is deleted and reported through ``Hooks.alarm_finished(..., "failed")``. A
  restart forgets the retry count (the alarm is still stored and simply fires again), so a crash can add
  attempts but never lose the alarm.
- An alarm whose turn the placement gate or the fence refused with ``OwnerUnavailable`` (the object is
  moving, or the node is fenced; ``_moves.py``) never ran: that is not an attempt. It stays pending and
  is tried again after ``ALARM_REFUSED_RETRY_SECONDS``, for as long as this node holds the object; once
  the object is discarded here (moved away) it is dropped.

Mechanism: a heap of (time, id) with lazy deletion; ``_due`` holds the live entry per object. Only the
next alarms due are in memory: ``load`` reads the next ``ALARM_WINDOW`` from the catalog's alarm index,
in (time, id) order after ``_horizon``, and moves the horizon to the last one read. Every catalog alarm
up to the horizon is in memory (``set`` adds one set that early, and forgets one moved past it: the
catalog holds it, and a later load brings it back); retries and refused alarms live only in memory, so
they are kept whatever their time. When no loaded alarm is left before the horizon, the next window is
read. So a million pending alarms cost start-up one indexed read of a thousand rows, and memory only for
those. One task sleeps until the earliest entry (in trio time, so MockClock drives it) and starts each
due alarm as its own task, at most ``ALARM_CONCURRENCY`` at once.
"""

from __future__ import annotations

import heapq
import math
from typing import TYPE_CHECKING, Final

import trio

from ._ids import ObjectId
from .errors import ActorError

if TYPE_CHECKING:
    from ._runtime import Runtime

ALARM_RETRY_START_SECONDS: Final = 2.0
ALARM_MAX_RETRIES: Final = 6
#: seconds before an alarm refused by the gate or the fence is tried again (not counted as a retry)
ALARM_REFUSED_RETRY_SECONDS: Final = 1.0
#: alarms running at once (after a restart thousands may be due together)
ALARM_CONCURRENCY: Final = 64
#: alarms read from the catalog at once: the next ones due (more are read as they fire)
ALARM_WINDOW: Final = 1024


class AlarmRefused(Exception):
    """Raised by ``Runtime.run_alarm`` when the gate or the fence refused the alarm's turn before it ran."""


class AlarmScheduler:
    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime
        self._window = ALARM_WINDOW
        self._heap: list[tuple[float, str]] = []
        #: hex -> (epoch time, object id, retries so far, whether the catalog holds it)
        self._due: dict[str, tuple[float, ObjectId, int, bool]] = {}
        #: every catalog alarm up to this (time, hex) is in ``_due``; None: every one is
        self._horizon: tuple[float, str] | None = (-math.inf, "")
        self._changed = trio.Event()
        self._limiter = trio.CapacityLimiter(ALARM_CONCURRENCY)

    def __len__(self) -> int:
        """Alarms in memory: the next ones due (at most ``ALARM_WINDOW`` and the retries)."""
        return len(self._due)

    def set(
        self, object_id: ObjectId, at: float | None, *, retries: int = 0, stored: bool = True
    ) -> None:
        """Track ``object_id``'s alarm at epoch ``at`` (None: no alarm).

        ``stored``: the catalog holds this alarm, so one past the loaded window is left to a later
        load; otherwise (a retry, a refused alarm) it is kept in memory whatever its time.
        """
        hex_id = object_id.hex
        horizon = self._horizon
        if at is None or (stored and horizon is not None and (at, hex_id) > horizon):
            self._due.pop(hex_id, None)
            return
        self._due[hex_id] = (at, object_id, retries, stored)
        heapq.heappush(self._heap, (at, hex_id))
        if self._heap[0][1] == hex_id:
            self._changed.set()
        if len(self._due) > 2 * self._window:
            self._shrink()

    def _shrink(self) -> None:
        """Keep the next ``window`` stored alarms (and every unstored one); the catalog has the rest."""
        stored = heapq.nsmallest(
            self._window, ((e[0], h) for h, e in self._due.items() if e[3])
        )
        if len(stored) < self._window:
            return
        self._horizon = horizon = stored[-1]
        self._due = {h: e for h, e in self._due.items() if not e[3] or (e[0], h) <= horizon}
        self._heap = [(e[0], h) for h, e in self._due.items()]
        heapq.heapify(self._heap)

    def load(self) -> None:
        """Read the next window of alarms from the catalog (on the trio thread: one indexed read).

        TODO(perf): it waits for the catalog's lock, which a commit thread holds through an fsync;
        a load every ``ALARM_WINDOW`` alarms makes that rare."""
        horizon = self._horizon
        if horizon is None:
            return
        classes = self._runtime.app.classes
        rows = self._runtime.catalog.next_alarms(horizon, self._window)
        for at, object_id in rows:
            if object_id.cls in classes and object_id.hex not in self._due:
                self._due[object_id.hex] = (at, object_id, 0, True)
                heapq.heappush(self._heap, (at, object_id.hex))
        self._horizon = (rows[-1][0], rows[-1][1].hex) if len(rows) >= self._window else None

    def _needs_load(self) -> bool:
        horizon = self._horizon
        return horizon is not None and (not self._heap or self._heap[0] > horizon)

    def pending(self) -> dict[str, float]:
        """hex id -> epoch seconds of every alarm in memory (all of them, up to ``ALARM_WINDOW``)."""
        return {hex_id: entry[0] for hex_id, entry in self._due.items()}

    async def serve(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Fire alarms as they come due, forever."""
        clock = self._runtime.clock
        async with trio.open_nursery() as nursery:
            task_status.started()
            while True:
                self._drop_stale()
                if self._needs_load():
                    self.load()
                    continue
                self._changed = trio.Event()
                if not self._heap:
                    await self._changed.wait()
                    continue
                with trio.move_on_at(clock.to_trio(self._heap[0][0])):
                    await self._changed.wait()
                    continue
                # Compare in trio time, exactly as move_on_at did: epoch -> trio -> epoch may round
                # below ``at`` and leave a due alarm unpopped (a busy loop).
                now = trio.current_time()
                while self._heap and clock.to_trio(self._heap[0][0]) <= now:
                    at, hex_id = heapq.heappop(self._heap)
                    entry = self._due.get(hex_id)
                    if entry is None or entry[0] != at:
                        continue
                    del self._due[hex_id]
                    nursery.start_soon(self._fire, entry[1], entry[2])

    def _drop_stale(self) -> None:
        heap, due = self._heap, self._due
        while heap:
            at, hex_id = heap[0]
            entry = due.get(hex_id)
            if entry is not None and entry[0] == at:
                return
            heapq.heappop(heap)

    async def fire_all_now(self) -> None:
        """Run every pending alarm now, one after another, regardless of its time (for tests)."""
        while self._horizon is not None:
            self.load()
        entries = list(self._due.values())
        self._due.clear()
        for _, object_id, retries, _ in entries:
            await self._fire(object_id, retries, force=True)

    async def _fire(self, object_id: ObjectId, retries: int, *, force: bool = False) -> None:
        runtime = self._runtime
        async with self._limiter:
            try:
                ran = await runtime.run_alarm(object_id, retries, force=force)
            except AlarmRefused:
                # Not an attempt. Kept while this node still holds the object (a newer alarm set
                # meanwhile wins); an object discarded since has moved, and its alarm with it.
                if object_id.hex not in self._due and runtime.catalog.get(object_id.hex) is not None:
                    at = runtime.clock.now() + ALARM_REFUSED_RETRY_SECONDS
                    self.set(object_id, at, retries=retries, stored=False)
            except ActorError as exc:
                if retries < ALARM_MAX_RETRIES:
                    delay = ALARM_RETRY_START_SECONDS * 2**retries
                    if object_id.hex not in self._due:  # a newer alarm set meanwhile wins
                        self.set(object_id, runtime.clock.now() + delay, retries=retries + 1, stored=False)
                    runtime.hooks.alarm_finished(object_id.cls, "retry")
                else:
                    runtime.hooks.alarm_finished(object_id.cls, "failed")
                    runtime.log_alarm_gave_up(object_id, exc)
                    await runtime.clear_failed_alarm(object_id)
            else:
                if ran:
                    runtime.hooks.alarm_finished(object_id.cls, "ok")
