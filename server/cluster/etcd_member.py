"""A node's life in a membership kept in etcd: join, follow every change, publish holds, leave.

Guarantees
- **Joining.** Before the node adds itself to the membership record, it publishes the slots of the
  objects it already stores (``holds/<id>``), so no node creates one of them empty meanwhile. A node
  id an operator removed with ``--discard-data`` may not join again (``MembershipRefused``: the
  node stops with exit 2).
- **Following.** Every change of the record is adopted by the router in epoch order (a watch that
  survives etcd restarts and compactions), and every node's holds record reaches the gate.
- **Publishing holds.** After each adopted epoch, this node publishes the slots it owns under that
  epoch plus those where it still stores objects to hand off; only once etcd took the record does
  the gate let objects of newly gained slots be activated (``settle.py``). As objects leave, the
  record shrinks (at most every ``PUBLISH_EVERY_SECONDS``), so their new owners stop asking.
- **Liveness and fencing** are ``liveness.py``'s: the gate refuses turns while the fence is down.
- **Leaving.** When the record marks this node leaving (``actors cluster leave``), it owns nothing:
  the mover hands every object off; once none is left, the node removes itself from the record
  (and its holds record) and stops (exit 0). SIGTERM is not a leave: the node keeps its membership
  and its files, and serves them again when it restarts.
- **Removed.** If the record no longer lists this node (``actors cluster remove --discard-data``),
  it stops serving at once (the router no longer maps anything here) and exits.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Final

import trio

from .etcd import Etcd, EtcdError, EtcdUnavailable
from .liveness import LeaseSettings, Liveness
from .membership import Member, Membership
from .registry import Registry, SlotSet, View

if TYPE_CHECKING:
    from .handoff import Mover
    from .router import Cluster
    from .settle import ClusterGate

__all__ = ["EtcdMember"]

log = logging.getLogger("server.cluster")

#: the shrinking holds record is written at most this often
PUBLISH_EVERY_SECONDS: Final = 0.5


class EtcdMember:
    """This node as a member of an etcd membership (see the module docstring)."""

    def __init__(self, etcd: Etcd, node_id: str, url: str, secret: bytes, lease: LeaseSettings) -> None:
        self.etcd = etcd
        self.registry = Registry(etcd)
        self.node_id = node_id
        self.url = url
        self._secret = secret
        # not the URL: nodes may reach one etcd cluster through different endpoints
        self._source = f"etcd {etcd.prefix}"
        self.liveness = Liveness(etcd, node_id, lease)
        #: set when this node has finished leaving, or was removed: the node stops
        self.done = trio.Event()
        self.outcome = ""
        self._published: tuple[int, frozenset[int]] | None = None

    def membership(self, view: View) -> Membership:
        return Membership(
            tuple(Member(m.id, m.url) for m in view.members),
            self._secret,
            self.node_id,
            epoch=view.epoch,
            leaving=frozenset(m.id for m in view.members if m.state == "leaving"),
            source=self._source,
        )

    async def read(self) -> Membership:
        return self.membership(await self.registry.read())

    async def join(self, stored_slots: Iterable[int]) -> Membership:
        """Publish the slots of the objects stored here, then join; the membership joined."""
        view = await self.registry.read()
        slots = set(stored_slots)
        me = view.member(self.node_id)
        if me is not None:  # a restart: it may hold its share of the current epoch too
            slots |= set(self.membership(view).cluster_map().slots_of(self.node_id))
        await self.registry.publish_holds(self.node_id, view.epoch, SlotSet.from_slots(slots))
        view = await self.registry.join(self.node_id, self.url)
        log.info("joined", extra={"event": "joined", "epoch": view.epoch, "node": self.node_id})
        return self.membership(view)

    async def run(
        self, router: Cluster, gate: ClusterGate, mover: Mover, live_slots: Callable[[], set[int]]
    ) -> None:
        """Follow the membership and the holds records, publish ours, keep the lease (until cancelled)."""
        republish = trio.Event()
        republish.set()

        def changed(old: Membership, new: Membership) -> None:
            republish.set()
            if new.member(self.node_id) is None and self.node_id in old.leaving:
                self.outcome = "left"  # its own removal once every object was handed off (``_leave``)
                self.done.set()
            elif new.member(self.node_id) is None:
                self.outcome = "removed"
                log.error(
                    "this node was removed from the cluster; stopping",
                    extra={"event": "removed", "epoch": new.epoch},
                )
                self.done.set()

        router.listen(changed)
        mover.on_empty = lambda: republish.set()

        async def follow_members() -> None:
            async for view in self.registry.watch(router.epoch):
                router.adopt(self.membership(view))

        async def follow_holds() -> None:
            async for holds in self.registry.watch_holds():
                gate.set_others({node: record.slots for node, record in holds.items()})

        async def publish() -> None:
            nonlocal republish
            while True:
                await republish.wait()
                republish = trio.Event()
                await self._publish(router, gate, mover, live_slots)
                if self.node_id in router.membership.leaving and mover.done:
                    await self._leave(router)
                    return
                await trio.sleep(PUBLISH_EVERY_SECONDS)

        async def publish_progress() -> None:  # the record shrinks as objects leave
            while True:
                await trio.sleep(PUBLISH_EVERY_SECONDS)
                if (
                    self._published is None
                    or self._wanted_slots(router, mover, live_slots) != self._published[1]
                ):
                    republish.set()

        async with trio.open_nursery() as nursery:
            await nursery.start(self.liveness.run)
            nursery.start_soon(follow_members)
            nursery.start_soon(follow_holds)
            nursery.start_soon(publish)
            nursery.start_soon(publish_progress)

    def _wanted_slots(
        self, router: Cluster, mover: Mover, live_slots: Callable[[], set[int]]
    ) -> frozenset[int]:
        owned = router.map.slots_of(self.node_id) if self.node_id not in router.membership.leaving else []
        return frozenset(owned) | mover.foreign_slots() | live_slots()

    async def _publish(
        self, router: Cluster, gate: ClusterGate, mover: Mover, live_slots: Callable[[], set[int]]
    ) -> None:
        while True:
            epoch = router.epoch
            await mover.wait_scanned(epoch)  # what it still stores of others' is known only then
            if router.epoch != epoch:
                continue
            slots = self._wanted_slots(router, mover, live_slots)
            try:
                await self.registry.publish_holds(self.node_id, epoch, SlotSet.from_slots(slots))
            except (EtcdUnavailable, EtcdError) as exc:
                log.warning("publishing holds failed", extra={"event": "holds_failed", "error": str(exc)})
                await trio.sleep(0.5)
                continue
            if router.epoch == epoch:  # else publish again for the newer epoch
                self._published = (epoch, slots)
                gate.set_published(slots)
                return

    async def _leave(self, router: Cluster) -> None:
        while True:
            try:
                await self.registry.remove(self.node_id, discard_data=False)
                break
            except (EtcdUnavailable, EtcdError) as exc:
                log.warning("leaving failed; retrying", extra={"event": "leave_failed", "error": str(exc)})
                await trio.sleep(0.5)
        log.info(
            "left the cluster: every object was handed off", extra={"event": "left", "epoch": router.epoch}
        )
        self.outcome = "left"
        self.done.set()
