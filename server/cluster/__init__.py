"""The cluster: several nodes that behave as one server (see ARCHITECTURE.md, "The cluster").

| module | one job |
|---|---|
| ``membership.py`` | the cluster file: members, their URLs, the secret, the digest and epoch |
| ``handshake.py`` | how two nodes prove the cluster secret to each other (sans I/O) |
| ``links.py`` | one authenticated, multiplexed link from this node to each peer; forwarded calls |
| ``accept.py`` | the other end of a link (``GET /v1/peer``): check the proof, then serve the calls |
| ``relay.py`` | a browser's WebSocket that reached a non-owner, relayed both ways to the owner |
| ``operations.py`` | admin across nodes: ``GET /v1/objects`` merged in id order; delete on the owner |
| ``local.py`` | several node processes on this machine: ``actors demo`` and ``serve --workers`` |
| ``dial.py`` | a WebSocket to a peer (links, relays) that never leaks a refused handshake's socket |
| ``etcd.py`` | a trio client of etcd's v3 gateway, for membership on etcd (next issue; unused yet) |
| ``liveness.py`` | this node's liveness lease in etcd and the fence it implies (next issue; unused yet) |

Guarantees of :class:`Cluster` (the router)
- Every node and the SDK compute an object's owner the same way: ``actors.placement`` over the
  member ids, from the same membership (links refuse a peer whose membership digest differs).
- ``link_for(id)`` is None exactly when this node owns the object; only then may it be activated
  here. A call for an object this node does not own is forwarded over that owner's link, never run
  here; a peer's call for an object this node does not own is refused (``OwnerUnavailable``,
  nothing ran), so a call is never forwarded twice.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import trio

from actors.errors import OwnerUnavailable

from .links import LinkMetrics, PeerLink
from .membership import ClusterFileError, Membership, load_membership

if TYPE_CHECKING:
    from actors import ObjectId

__all__ = ["Cluster", "ClusterFileError", "Membership", "PeerLink", "load_membership"]


class Cluster:
    """This node's view of the cluster: the placement map and a link to each peer."""

    def __init__(self, membership: Membership, metrics: LinkMetrics, *, max_message_bytes: int) -> None:
        self.membership = membership
        self.self_id = membership.self_id
        self.map = membership.cluster_map()
        self.links: dict[str, PeerLink] = {
            peer.id: PeerLink(membership, peer, metrics, max_message_bytes=max_message_bytes)
            for peer in membership.peers
        }
        for link in self.links.values():
            metrics.link_state(link.peer.id, False)

    def owner(self, object_id: ObjectId) -> str:
        """The id of the node that owns ``object_id``."""
        return self.map.owner(object_id.hex)[0]

    def link_for(self, object_id: ObjectId) -> PeerLink | None:
        """The link to the object's owner, or None if this node owns it."""
        owner = self.map.owner(object_id.hex)[0]
        return None if owner == self.self_id else self.links[owner]

    def not_owner(self, object_id: ObjectId, sender: str) -> OwnerUnavailable:
        owner = self.owner(object_id)
        return OwnerUnavailable(
            f"node {sender} sent a call for {object_id.cls} {object_id.name!r} to {self.self_id}, but "
            f"under epoch {self.membership.epoch} node {owner} owns it; the call did not run",
            node=owner,
        )

    def check_stored_objects(self, stored_ids: Iterable[str]) -> None:
        """Refuse (ClusterFileError) to serve with a membership that places objects stored here on
        other nodes: they would be served empty there, and written here by alarms. Membership
        changes move objects with their files (the next issue); until then this check keeps them."""
        owners = self.map.owner
        foreign = [hex_id for hex_id in stored_ids if owners(hex_id)[0] != self.self_id]
        if foreign:
            example = foreign[0]
            raise ClusterFileError(
                f"this node ({self.self_id}) stores {len(foreign)} object(s) that the cluster file places "
                f"on other nodes (e.g. id {example[:16]}... on {owners(example)[0]}): the membership "
                "changed since they were written, and objects do not move between nodes yet. Start "
                "with the cluster file they were written under."
            )

    @property
    def reached(self) -> bool:
        """Whether every peer's link has come up at least once (readiness)."""
        return all(link.reached.is_set() for link in self.links.values())

    def nodes(self) -> list[dict[str, Any]]:
        """Every member with its URL and whether it is up as seen from here (this node: True)."""
        return [
            {"node": m.id, "url": m.url, "up": m.id == self.self_id or self.links[m.id].up}
            for m in self.membership.members
        ]

    async def run(self) -> None:
        """Keep every link up until cancelled."""
        async with trio.open_nursery() as nursery:
            for link in self.links.values():
                nursery.start_soon(link.run)
