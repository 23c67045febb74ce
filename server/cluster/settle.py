"""The runtime's gate in a cluster: an object is activated only by its owner, and only once no other
node can still hold it; turns stop while this node's liveness lease may have lapsed.

Why "no other node can still hold it": objects move with their files. When the membership changes,
the new owner of a slot must not create an object empty while the old owner still has its file.
Every node publishes in etcd the slots it *may* hold objects in (``holds/<id>``: the slots it owns
under its epoch, plus those where it still stores objects it has to hand off; ``etcd_member.py``).

Guarantees (of :meth:`ClusterGate.admit`, run before an object that is not live is activated)
- The object is owned here under the current epoch (else ``OwnerUnavailable`` naming the owner and
  carrying the epoch: the caller routes again).
- Its slot is in this node's own *published* holds record, so a later owner of the slot will ask
  this node before creating anything there (a gained slot waits for the record; ``etcd_member.py``).
- Either its file is here, or every other node whose holds record lists the slot has answered
  "not held" (under an epoch at least ours: it can no longer create it) or handed it over
  (``want``, ``handoff.py``). A node that cannot be asked (down) makes the call fail with
  ``OwnerUnavailable`` naming it: its objects are never re-created empty elsewhere.
- An object this node is still handing off (its transfer's outcome unknown) is not activated here.
- A caller waiting for other nodes' answers stops waiting once the object was stored here
  (:meth:`arrived`): the sender released it (its turns finished) before it sent it, and never
  activates it again, so the copy here is the only one that may be written from then on.
- :meth:`may_write` refuses every turn while the liveness fence is down (``liveness.py``): the
  node stops writing before its lease can have expired in etcd.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Container, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Final, Protocol

import trio

from actors.errors import ActorError, OwnerUnavailable

if TYPE_CHECKING:
    from actors import ObjectId

    from .router import Cluster

__all__ = ["ClusterGate", "Fence", "slot_of"]

log = logging.getLogger("server.cluster")

#: objects remembered as settled (asked about and found nowhere else) per epoch
MAX_SETTLED: Final = 100_000
#: the operation a new owner sends to a node that may still hold an object
WANT_OPERATION: Final = "want"


def slot_of(hex_id: str) -> int:
    """The placement slot of an object id (its first 16 bits: ``actors.placement``)."""
    return int(hex_id[:4], 16)


class Fence(Protocol):
    """This node's liveness fence (``liveness.Liveness``)."""

    @property
    def writable(self) -> bool: ...


class ClusterGate:
    """The gate the runtime consults (see the module docstring)."""

    def __init__(
        self,
        router: Cluster,
        holds_here: Callable[[ObjectId], bool],
        moving: Container[str],
        fence: Fence | None = None,
    ) -> None:
        self._router = router
        self._holds_here = holds_here
        self._moving = moving
        self._fence = fence
        #: slots in this node's last published holds record (None: everything, file membership)
        self.published: Container[int] | None = None
        #: whether a holds record of this node was published since it started
        self.published_once = False
        #: every other node's holds record, by node id
        self.others: Mapping[str, Container[int]] = {}
        self._settled: dict[str, int] = {}
        self._asking: dict[str, trio.Event] = {}
        #: the asks in progress, by hex id: an arrival of the object here ends them (``arrived``)
        self._ask_scopes: dict[str, trio.CancelScope] = {}
        self._published_changed = trio.Event()

    #### What etcd_member.py tells the gate

    def set_published(self, slots: Container[int], *, initial: bool = False) -> None:
        """This node's holds record in etcd now lists ``slots`` (``initial``: none yet)."""
        self.published = slots
        self.published_once = self.published_once or not initial
        changed, self._published_changed = self._published_changed, trio.Event()
        changed.set()

    def set_others(self, holds: Mapping[str, Container[int]]) -> None:
        self.others = {node: slots for node, slots in holds.items() if node != self._router.self_id}

    #### What the receiver tells the gate

    def arrived(self, keys: Iterable[str]) -> None:
        """These objects were stored here (adopted): calls waiting for the old owner's answer about
        them go on at once, without waiting for the old owner to discard its copy and answer."""
        for key in keys:
            scope = self._ask_scopes.get(key)
            if scope is not None:
                scope.cancel()

    #### The runtime's gate

    def may_write(self) -> ActorError | None:
        fence = self._fence
        if fence is None or fence.writable:
            return None
        return OwnerUnavailable(
            f"node {self._router.self_id} cannot renew its liveness lease in etcd, so it stopped "
            "taking turns before the lease could expire (fencing); the call did not run",
            node=self._router.self_id,
        )

    def may_activate(self, object_id: ObjectId) -> ActorError | None:
        """The synchronous part of :meth:`admit`: None when the object may be activated now."""
        router = self._router
        if not router.owns(object_id):
            return router.not_owner(object_id, router.self_id)
        if object_id.hex in self._moving:
            return self._arriving(object_id, "this node is still handing it off")
        published = self.published
        if published is not None and slot_of(object_id.hex) not in published:
            return self._arriving(object_id, "this node has not published its holds for the new epoch yet")
        if self._settled.get(object_id.hex) == router.epoch or self._holds_here(object_id):
            return None
        if not self._blockers(object_id):
            return None
        return self._arriving(object_id, "another node may still hold it")

    async def admit(self, object_id: ObjectId, deadline: float) -> None:
        """Return once the object may be activated here; raise the reason it may not (see above).
        Waits (up to ``deadline``) for this node's holds record and for other nodes' answers."""
        router = self._router
        while True:
            error = self.may_activate(object_id)
            if error is None:
                return
            if not isinstance(error, OwnerUnavailable) or error.node != router.self_id:
                raise error  # another node owns it: the caller routes again
            if trio.current_time() >= deadline:
                raise error
            published = self.published
            if published is not None and slot_of(object_id.hex) not in published:
                with trio.move_on_at(deadline):
                    await self._published_changed.wait()
                continue
            if object_id.hex in self._moving:
                with trio.move_on_at(min(deadline, trio.current_time() + 0.05)):
                    await trio.sleep_forever()
                continue
            await self._ask(object_id, deadline)

    #### Asking the nodes that may hold an object

    def _blockers(self, object_id: ObjectId) -> list[str]:
        slot = slot_of(object_id.hex)
        return sorted(node for node, slots in self.others.items() if slot in slots)

    async def _ask(self, object_id: ObjectId, deadline: float) -> None:
        key = object_id.hex
        running = self._asking.get(key)
        if running is not None:  # another caller is asking already: wait for its answer
            with trio.move_on_at(deadline):
                await running.wait()
            return
        done = self._asking[key] = trio.Event()
        try:
            epoch = self._router.epoch
            failures: list[ActorError] = []
            newer = 0

            async def ask(node: str) -> None:
                nonlocal newer
                link = self._router.links.get(node)
                if link is None:  # not a member any more, yet its record lists the slot
                    failures.append(self._unreachable(object_id, node))
                    return
                kwargs = {"epoch": epoch, "cls": object_id.cls, "name": object_id.name, "id": key}
                try:
                    with trio.fail_at(deadline):
                        await link.call("", "", WANT_OPERATION, (), kwargs)
                except OwnerUnavailable as exc:
                    if exc.epoch > epoch:
                        newer = max(newer, exc.epoch)
                    else:
                        failures.append(self._unreachable(object_id, node))
                except (ActorError, trio.TooSlowError) as exc:
                    log.warning(
                        "asking a node for an object failed",
                        extra={"event": "want_failed", "peer": node, "object": key, "error": repr(exc)},
                    )
                    failures.append(self._unreachable(object_id, node))

            async with trio.open_nursery() as nursery:
                self._ask_scopes[key] = nursery.cancel_scope
                for node in self._blockers(object_id):
                    nursery.start_soon(ask, node)
            if nursery.cancel_scope.cancelled_caught:
                return  # stored here meanwhile (``arrived``): the caller finds it held
            if newer:
                await self._router.reach(newer, deadline)
                return
            if failures:
                raise failures[0]
            if self._router.epoch == epoch:
                if len(self._settled) >= MAX_SETTLED:
                    self._settled.clear()
                self._settled[key] = epoch
        finally:
            del self._asking[key]
            self._ask_scopes.pop(key, None)
            done.set()

    def _unreachable(self, object_id: ObjectId, node: str) -> OwnerUnavailable:
        return OwnerUnavailable(
            f"{object_id.cls} {object_id.name!r} may still be stored on node {node}, which did not "
            "answer; it is not re-created empty elsewhere. The call did not run",
            node=node,
        )

    def _arriving(self, object_id: ObjectId, why: str) -> OwnerUnavailable:
        me = self._router.self_id
        return OwnerUnavailable(
            f"{object_id.cls} {object_id.name!r} is moving to node {me} ({why}); the call did not run",
            node=me,
            retry_after=0.1,
        )

    def describe(self) -> dict[str, Any]:
        return {"settled_cached": len(self._settled), "asking": len(self._asking)}
