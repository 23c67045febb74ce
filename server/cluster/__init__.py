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
| ``router.py`` | ``Cluster``: who owns what under the current epoch, the links, adopting newer epochs |
| ``etcd.py`` | a trio client of etcd's v3 gateway (CAS, leases, watches) |
| ``records.py`` | the formats of the etcd records: members, tombstones, holds (slot sets) |
| ``registry.py`` | reading, changing (compare-and-swap) and following those records |
| ``liveness.py`` | this node's liveness lease in etcd and the fence it implies |
| ``etcd_member.py`` | a node's life in an etcd membership: join, watch, publish holds, leave |
| ``settle.py`` | the gate of the runtime: activate only owned objects no other node may still hold |
| ``handoff.py`` | moving objects with their files to their new owners, and receiving them |
"""

from __future__ import annotations

from .links import PeerLink
from .membership import ClusterFileError, Membership, load_membership
from .router import Cluster

__all__ = ["Cluster", "ClusterFileError", "Membership", "PeerLink", "load_membership"]
