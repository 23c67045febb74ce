"""Which node owns an object: consistent hashing over the cluster's nodes, computed the same everywhere.

The owner of an object is the node with the highest score ``sha256(node NUL object_hex)`` (rendezvous or
highest-random-weight hashing). It is consistent: adding a node moves only the objects that the new node
now wins (about 1/n of them), removing one moves only that node's objects, and every node and every
client that knows the same node list computes the same owner without asking anyone.

The node list and its epoch travel to clients in the wire protocol's Welcome frame (``actors/wire.py``)
and from ``GET /v1/cluster``. A single node is the one-entry case: it owns everything.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["ClusterMap", "owner_of"]


def owner_of(object_hex: str, nodes: Sequence[str]) -> str:
    """The node of ``nodes`` that owns the object with id ``object_hex``; ValueError if ``nodes`` is empty."""
    if not nodes:
        raise ValueError("a cluster has at least one node")
    if len(nodes) == 1:
        return nodes[0]
    key = b"\0" + object_hex.encode()
    return max(nodes, key=lambda node: hashlib.sha256(node.encode() + key).digest())


@dataclass(frozen=True, slots=True)
class ClusterMap:
    """The cluster as a client sees it: each node's name and base URL, and the map's ``epoch``."""

    nodes: tuple[tuple[str, str], ...]
    epoch: int = 0

    def owner(self, object_hex: str) -> tuple[str, str]:
        """``(node, url)`` of the node that owns ``object_hex``."""
        names = [name for name, _ in self.nodes]
        owner = owner_of(object_hex, names)
        return self.nodes[names.index(owner)]
