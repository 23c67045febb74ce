"""The table of live activations: at most one per object id in the process.

Guarantees
- Single live instance: ``get`` returns the one ACTIVATING/ACTIVE activation of an id, or creates it. While
  an activation is EVICTING, callers wait for it to finish closing its file before a new one opens it, so
  two instances never hold the same file.
- Bounded memory: at most ``max_live_objects`` activations. Making room evicts the least recently active
  idle object; if every live object is busy the new activation is refused with Overloaded.

Order is kept in an OrderedDict (least recently active first), so finding an eviction candidate is a scan
from the front that stops at the first idle activation.
"""

from __future__ import annotations

import collections
from typing import TYPE_CHECKING

import trio

from ._activation import Activation
from ._ids import ObjectId
from ._lifecycle import ActivationState
from .errors import Overloaded

if TYPE_CHECKING:
    from ._runtime import Runtime


class Table:
    def __init__(self, runtime: Runtime, nursery: trio.Nursery) -> None:
        self._runtime = runtime
        self._nursery = nursery
        self.live: collections.OrderedDict[str, Activation] = collections.OrderedDict()

    async def get(self, object_id: ObjectId) -> Activation:
        """The live activation of ``object_id``, activating it if needed."""
        while True:
            activation = self.live.get(object_id.hex)
            if activation is None:
                return self._activate(object_id)
            if activation.state is not ActivationState.EVICTING:
                return activation
            await activation.evicted.wait()

    def find(self, object_id: ObjectId) -> Activation | None:
        return self.live.get(object_id.hex)

    def _activate(self, object_id: ObjectId) -> Activation:
        runtime = self._runtime
        if len(self.live) >= runtime.max_live_objects:
            self._make_room()
        activation = Activation(runtime, object_id, runtime.app.class_of(object_id.cls))
        self.live[object_id.hex] = activation
        self._nursery.start_soon(activation.serve)
        return activation

    def _make_room(self) -> None:
        evicting = 0
        for activation in self.live.values():
            if activation.state is ActivationState.EVICTING:
                evicting += 1
            elif activation.is_idle:
                activation.request_eviction("capacity")
                return
        if evicting:
            return  # room is being made; allow the brief overshoot rather than refusing
        limit = self._runtime.max_live_objects
        raise Overloaded(
            f"all {limit} live objects are busy (max_live_objects); try again shortly",
            retry_after=0.1,
        )

    def touch(self, activation: Activation) -> None:
        if self.live.get(activation.id.hex) is activation:
            self.live.move_to_end(activation.id.hex)

    def remove(self, activation: Activation) -> None:
        if self.live.get(activation.id.hex) is activation:
            del self.live[activation.id.hex]
