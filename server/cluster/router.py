"""The router: this node's view of the cluster, the link to each peer, and the epoch rule.

Guarantees
- Every node and the SDK compute an object's owner the same way: ``actors.placement`` over the ids
  of the members that own a share (members leaving own none), from the same membership.
- ``link_for(id)`` is None exactly when this node owns the object under its current epoch; only
  then may it be activated here (``settle.py`` adds: and no other node may still hold it). A call
  for an object this node does not own is forwarded over that owner's link, never run here; a peer's
  call for an object this node does not own is refused with ``OwnerUnavailable`` carrying this
  node's epoch, so a call is never forwarded twice and the sender learns of a newer membership.
- **The epoch rule.** Epochs only grow: :meth:`adopt` ignores a membership whose epoch is not newer
  than the current one. Each link announces this node's epoch to the peer when it comes up and
  again after every change, ahead of every call forwarded under that epoch (a link is one ordered
  stream), so each forwarded call is tagged with its sender's epoch by its position; a node that
  reads a newer epoch from a peer reads the membership (linearizable) and adopts it before it acts
  on the calls that follow (``rpc.py``, peer mode). A refusal carries the refuser's epoch; a sender
  with an older one adopts the newer membership and routes again.
- Membership from a file never changes (epoch 1). From etcd it changes by joins and leaves, and
  every change is adopted here in epoch order; listeners (the mover, SDK connections) hear of each.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any, Final, Protocol

import trio

from actors.errors import OwnerUnavailable

from .links import LinkMetrics, PeerLink
from .membership import ClusterFileError, Membership

if TYPE_CHECKING:
    from actors import ObjectId, Runtime
    from actors.wire import Call

__all__ = ["MAX_REROUTES", "Cluster", "MembershipSource", "routed_call"]

log = logging.getLogger("server.cluster")


class MembershipSource(Protocol):
    """Where a membership that changes comes from (``etcd_member.py``)."""

    async def read(self) -> Membership:
        """The newest membership (a linearizable read)."""
        ...


class Cluster:
    """This node's view of the cluster: the placement map and a link to each peer."""

    def __init__(self, membership: Membership, metrics: LinkMetrics, *, max_message_bytes: int) -> None:
        self.membership = membership
        self.self_id = membership.self_id
        self.map = membership.cluster_map()
        self._metrics = metrics
        self._max_message_bytes = max_message_bytes
        self.links: dict[str, PeerLink] = {}
        self._link_scopes: dict[str, trio.CancelScope] = {}
        self._nursery: trio.Nursery | None = None
        #: set (and replaced) at every adopted change
        self._changed = trio.Event()
        #: called with (old, new) after each adopted change, in order
        self._listeners: list[Callable[[Membership, Membership], None]] = []
        self.source: MembershipSource | None = None
        self._refresh_wanted = trio.Event()
        #: more conditions of readiness (etcd: the first holds record is published, the lease held)
        self.ready_checks: list[Callable[[], bool]] = []
        for peer in membership.peers:
            self._add_link(peer.id)

    #### Who owns what

    @property
    def epoch(self) -> int:
        return self.membership.epoch

    @property
    def dynamic(self) -> bool:
        return self.membership.dynamic

    def owner(self, object_id: ObjectId) -> str:
        """The id of the node that owns ``object_id`` under the current epoch."""
        return self.map.owner(object_id.hex)[0]

    def owns(self, object_id: ObjectId) -> bool:
        return self.map.owner(object_id.hex)[0] == self.self_id

    def owns_hex(self, hex_id: str) -> bool:
        return self.map.owner(hex_id)[0] == self.self_id

    def link_for(self, object_id: ObjectId) -> PeerLink | None:
        """The link to the object's owner, or None if this node owns it."""
        owner = self.map.owner(object_id.hex)[0]
        return None if owner == self.self_id else self.links.get(owner)

    def not_owner(self, object_id: ObjectId, sender: str) -> OwnerUnavailable:
        owner = self.owner(object_id)
        return OwnerUnavailable(
            f"node {sender} sent a call for {object_id.cls} {object_id.name!r} to {self.self_id}, but "
            f"under epoch {self.epoch} node {owner} owns it; the call did not run",
            node=owner,
            retry_after=0.0,
            epoch=self.epoch,
        )

    def check_stored_objects(self, stored_ids: Iterable[str]) -> None:
        """With a file membership, refuse (ClusterFileError) to serve if objects stored here belong to
        other nodes under it: they would be served empty there. (A file membership cannot move
        objects; with etcd, such objects are handed to their owners instead.)"""
        owners = self.map.owner
        foreign = [hex_id for hex_id in stored_ids if owners(hex_id)[0] != self.self_id]
        if foreign:
            example = foreign[0]
            raise ClusterFileError(
                f"this node ({self.self_id}) stores {len(foreign)} object(s) that the cluster file places "
                f"on other nodes (e.g. id {example[:16]}... on {owners(example)[0]}): the membership "
                "changed since they were written, and a file membership does not move objects. Start "
                "with the cluster file they were written under, or use etcd membership (--etcd), "
                "which hands objects to their new owners."
            )

    @property
    def reached(self) -> bool:
        """Readiness: with a file, every peer's link has come up at least once; with etcd (where a
        member may be down for long), the ``ready_checks`` hold."""
        if not all(check() for check in self.ready_checks):
            return False
        return self.dynamic or all(link.reached.is_set() for link in self.links.values())

    def nodes(self) -> list[dict[str, Any]]:
        """Every member with its URL and whether it is up as seen from here (this node: True)."""
        membership = self.membership
        rows = []
        for m in membership.members:
            link = self.links.get(m.id)
            row: dict[str, Any] = {
                "node": m.id,
                "url": m.url,
                "up": m.id == self.self_id or bool(link and link.up),
            }
            if m.id in membership.leaving:
                row["state"] = "leaving"
            rows.append(row)
        return rows

    #### Changes

    def listen(self, listener: Callable[[Membership, Membership], None]) -> None:
        """Call ``listener(old, new)`` after every adopted change (not for the current one)."""
        self._listeners.append(listener)

    def adopt(self, membership: Membership) -> bool:
        """Make ``membership`` current if its epoch is newer; False if it was not (ignored)."""
        old = self.membership
        if membership.epoch <= old.epoch:
            return False
        if membership.self_id != self.self_id:
            raise ValueError("a membership of another node")
        self.membership, self.map = membership, membership.cluster_map()
        keep = {m.id for m in membership.peers}
        for peer_id in list(self.links):
            if peer_id not in keep:
                self._drop_link(peer_id)
        for member in membership.peers:
            link = self.links.get(member.id)
            if link is None:
                self._add_link(member.id)
            else:
                link.membership, link.peer = membership, member
                link.announce_epoch(membership.epoch)
        log.info(
            "membership adopted",
            extra={
                "event": "epoch",
                "epoch": membership.epoch,
                "members": [m.id for m in membership.members],
                "leaving": sorted(membership.leaving),
            },
        )
        changed, self._changed = self._changed, trio.Event()
        changed.set()
        for listener in self._listeners:
            listener(old, membership)
        return True

    async def refresh(self) -> None:
        """Read the membership from its source and adopt it if newer (no-op for a file)."""
        if self.source is not None:
            self.adopt(await self.source.read())

    def request_refresh(self) -> None:
        """Refresh soon, in the background (a peer announced a newer epoch)."""
        self._refresh_wanted.set()

    async def reach(self, epoch: int, deadline: float) -> bool:
        """Wait until the current epoch is at least ``epoch`` (refreshing), up to ``deadline``."""
        while self.epoch < epoch:
            self.request_refresh()
            changed = self._changed
            with trio.move_on_at(deadline):
                await changed.wait()
            if trio.current_time() >= deadline:
                return self.epoch >= epoch
        return True

    async def changed(self) -> None:
        """Return after the next adopted change."""
        await self._changed.wait()

    #### Links

    def _add_link(self, peer_id: str) -> None:
        peer = self.membership.member(peer_id)
        assert peer is not None
        link = PeerLink(self.membership, peer, self._metrics, max_message_bytes=self._max_message_bytes)
        self.links[peer_id] = link
        self._metrics.link_state(peer_id, False)
        if self._nursery is not None:
            self._start_link(link)

    def _start_link(self, link: PeerLink) -> None:
        scope = trio.CancelScope()
        self._link_scopes[link.peer.id] = scope

        async def run() -> None:
            with scope:
                await link.run()

        assert self._nursery is not None
        self._nursery.start_soon(run)

    def _drop_link(self, peer_id: str) -> None:
        link = self.links.pop(peer_id)
        link.close(f"node {peer_id} left the cluster")
        scope = self._link_scopes.pop(peer_id, None)
        if scope is not None:
            scope.cancel()
        self._metrics.link_state(peer_id, False)

    async def run(self, *extra: Callable[[], Awaitable[None]]) -> None:
        """Keep every link up (and run ``extra`` tasks) until cancelled."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            for link in list(self.links.values()):
                self._start_link(link)
            if self.source is not None:
                nursery.start_soon(self._refresher)
            for task in extra:
                nursery.start_soon(task)

    async def _refresher(self) -> None:
        """Refresh whenever asked (coalescing requests), at most every 50 ms."""
        while True:
            await self._refresh_wanted.wait()
            self._refresh_wanted = trio.Event()
            try:
                await self.refresh()
            except Exception as exc:  # etcd away: the next request retries; calls wait meanwhile
                log.warning(
                    "membership refresh failed", extra={"event": "refresh_failed", "error": repr(exc)}
                )
                await trio.sleep(0.5)
                self._refresh_wanted.set()
            await trio.sleep(0.05)


#: times a call is routed again after a refusal under a newer epoch (each adopts that epoch first)
MAX_REROUTES: Final = 4


async def routed_call(
    router: Cluster,
    runtime: Runtime,
    object_id: ObjectId,
    call: Call,
    *,
    peer: str | None = None,
    peer_epoch: int = 0,
) -> Any:
    """Run ``call`` on the object's owner: here, or forwarded over its link; refused if a ``peer``
    sent it and this node does not own the object. A refusal from the owner under a newer epoch, or
    the gate finding the object owned elsewhere after the map changed, routes it again (at most
    ``MAX_REROUTES`` times; each one never ran the call, so running it elsewhere is safe)."""
    deadline = trio.current_time() + (runtime.settings.call_timeout if call.timeout is None else call.timeout)
    if peer_epoch > router.epoch:
        await router.reach(peer_epoch, deadline)
    for attempt in range(MAX_REROUTES + 1):
        link = router.link_for(object_id)
        timeout = max(0.0, deadline - trio.current_time())
        try:
            if link is None:
                return await runtime.call(object_id, call.method, call.args, call.kwargs, timeout=timeout)
            if peer is not None:
                raise router.not_owner(object_id, peer)
            return await link.call(call.cls, call.name, call.method, call.args, call.kwargs, timeout)
        except OwnerUnavailable as exc:
            if attempt == MAX_REROUTES or (peer is not None and link is not None):
                raise
            if exc.epoch > router.epoch:
                await router.reach(exc.epoch, deadline)
            elif not (link is None and not router.owns(object_id)):
                raise
    raise AssertionError("unreachable")
