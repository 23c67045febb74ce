"""The table of live activations: at most one per object id in the process.

Guarantees
- Single live instance: ``get`` returns the one ACTIVATING/ACTIVE activation of an id, or creates it. While
  an activation is EVICTING, callers wait for it to finish closing its file before a new one opens it, so
  two instances never hold the same file.
- Placement: with a gate set (``Runtime.set_gate``, see ``_moves.py``), an object that is not live is
  activated only if ``gate.may_activate`` allows it; otherwise ``gate.admit`` waits until it does
  (bounded by the caller's deadline) or raises its error to the caller, and
  nothing is created, opened or activated. Live activations are not affected.
- Bounded memory: at most ``max_live_objects`` activations. Making room evicts the least recently active
  idle object; if every live object is busy, the caller waits (until its deadline) for the first one to
  go idle, which then leaves at once.

- Idle eviction: an activation with nothing queued, running or waiting for its sync leaves once it has
  been idle for ``idle_timeout``, at exactly that (trio) time.

Order is kept in an OrderedDict (least recently active first), so finding an eviction candidate is a scan
from the front that stops at the first idle activation. Idle deadlines are one heap for the table (the
idle watch, ``serve_idle``) instead of a cancel scope per wait of every worker: a worker arms its entry
when it starts waiting, unless one is armed already, and an entry found stale when it comes due (the
object worked since) is pushed back with its new deadline, so a busy object costs one heap entry per
``idle_timeout``, not one per call.
"""

from __future__ import annotations

import collections
import heapq
import itertools
import math
from typing import TYPE_CHECKING

import trio

from ._activation import Activation
from ._ids import ObjectId
from ._lifecycle import ActivationState
from .errors import CallTimeout

if TYPE_CHECKING:
    from ._runtime import Runtime


class Table:
    def __init__(self, runtime: Runtime, nursery: trio.Nursery) -> None:
        self._runtime = runtime
        self._nursery = nursery
        self.live: collections.OrderedDict[str, Activation] = collections.OrderedDict()
        #: set (and replaced) whenever an activation leaves; callers waiting for room wait on it
        self._any_evicted: trio.Event | None = None
        #: callers waiting for room at the cap
        self.room_waiters = 0
        self._idle_timeout = runtime.settings.idle_timeout
        #: (idle deadline, tie-breaker, activation), earliest first; one entry per armed activation
        self._idle: list[tuple[float, int, Activation]] = []
        self._idle_order = itertools.count()
        #: the idle watch's wait, to move its deadline earlier when an earlier entry arrives
        self._idle_wait: trio.CancelScope | None = None
        nursery.start_soon(self.serve_idle)

    async def get(self, object_id: ObjectId, deadline: float = math.inf) -> Activation:
        """The live activation of ``object_id``, activating it if needed.

        At the cap, waits for an eviction to finish rather than overshooting (evictions close files
        in threads; a spread workload could otherwise outrun them by thousands of objects). If every
        live object is busy, the next one to go idle leaves at once; past ``deadline`` the caller
        gets CallTimeout.
        """
        while True:
            activation = self.live.get(object_id.hex)
            if activation is None:
                gate = self._runtime.gate
                if gate is not None:
                    refused = gate.may_activate(object_id)  # placement: single writer across nodes
                    if refused is not None:
                        await gate.admit(object_id, deadline)  # waits, or raises why not
                        continue
                if len(self.live) < self._runtime.max_live_objects:
                    return self._activate(object_id)
                self._make_room()
                if self._any_evicted is None:
                    self._any_evicted = trio.Event()
                self.room_waiters += 1
                try:
                    with trio.move_on_at(deadline):
                        await self._any_evicted.wait()
                finally:
                    self.room_waiters -= 1
                if trio.current_time() >= deadline:
                    raise CallTimeout(
                        f"{object_id}: no room among the {self._runtime.max_live_objects} live objects "
                        "(max_live_objects) before the deadline; it never ran"
                    )
                continue
            if activation.state is not ActivationState.EVICTING:
                return activation
            await activation.evicted.wait()

    def find(self, object_id: ObjectId) -> Activation | None:
        return self.live.get(object_id.hex)

    def _activate(self, object_id: ObjectId) -> Activation:
        runtime = self._runtime
        activation = Activation(runtime, object_id, runtime.app.class_of(object_id.cls))
        self.live[object_id.hex] = activation
        self._nursery.start_soon(activation.serve)
        return activation

    def _make_room(self) -> None:
        """Ask the least recently used idle object to leave; Overloaded if every object is busy."""
        evicting = 0
        for activation in self.live.values():  # least recently active first
            if activation.state is ActivationState.EVICTING or activation.eviction_requested:
                evicting += 1
            elif activation.is_idle:
                activation.request_eviction("capacity")  # one per caller waiting for room
                return
        # Nothing idle now: every live object is busy. The waiters are counted (room_waiters); each
        # activation that finds its queue empty while someone waits leaves at once.

    #### The idle watch

    def arm_idle(self, activation: Activation) -> None:
        """Watch ``activation`` (which starts waiting for work) for its idle deadline."""
        activation.idle_armed = True
        deadline = activation.last_active + self._idle_timeout
        heapq.heappush(self._idle, (deadline, next(self._idle_order), activation))
        wait = self._idle_wait
        if wait is not None and deadline < wait.deadline:
            wait.deadline = deadline

    async def serve_idle(self) -> None:
        """Wake each activation that has been idle for ``idle_timeout``; it then leaves."""
        idle, timeout = self._idle, self._idle_timeout
        while True:
            with trio.CancelScope(deadline=idle[0][0] if idle else math.inf) as self._idle_wait:
                await trio.sleep_forever()
            self._idle_wait = None
            now = trio.current_time()
            while idle and idle[0][0] <= now:
                _, _, activation = heapq.heappop(idle)
                activation.idle_armed = False
                if activation.state is not ActivationState.ACTIVE:
                    continue  # leaving or gone; a new activation arms its own entry
                since = activation.idle_since
                if since is None:
                    if activation.is_parked:
                        self.arm_idle_at(activation, now + timeout)  # waits for its sync: not idle yet
                    continue  # working: it re-arms when it waits again
                if since + timeout > now:
                    self.arm_idle_at(activation, since + timeout)  # it worked since: a later deadline
                else:
                    activation.wake()  # it sees that it has been idle long enough, and leaves

    def arm_idle_at(self, activation: Activation, deadline: float) -> None:
        activation.idle_armed = True
        heapq.heappush(self._idle, (deadline, next(self._idle_order), activation))

    def touch(self, activation: Activation) -> None:
        if self.live.get(activation.id.hex) is activation:
            self.live.move_to_end(activation.id.hex)

    def remove(self, activation: Activation) -> None:
        if self.live.get(activation.id.hex) is activation:
            del self.live[activation.id.hex]
        waiting, self._any_evicted = self._any_evicted, None
        if waiting is not None:
            waiting.set()
