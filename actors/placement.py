"""Which node owns an object: a slot table computed from the node list alone, the same everywhere.

Guarantees
- **Deterministic and order-independent.** The owner depends only on the object's id and the *set*
  of node ids: every node and every client that knows the same names computes the same owner,
  whatever order the names are listed in, without asking anyone. Duplicate names count once.
- **Balanced.** An object's slot is the first four hex digits of its id (ids are SHA-256 digests, so
  the :data:`SLOTS` = 65,536 slots are equally likely). No node owns more than
  ``ceil(SLOTS * 1.03 / n)`` slots: at most 3% above an even split, plus one slot of rounding.
- **Consistent, within limits.** Adding a node moves to it about ``1/(n+1)`` of the objects; removing
  one moves its objects. Unlike rendezvous hashing this is not exact: some other objects move between
  old nodes too, under 10% of the ideal up to 100 nodes, but 50-60% more at 1,000 (figures below).
- A single node owns every object; an empty list raises ValueError.

Mechanism: a Maglev-style table with capacities and without Maglev's skipping. Each node walks its
own permutation of the slots, ``slot(j) = (offset + j * step) mod SLOTS``, ``offset`` and an odd
``step`` taken from SHA-256 of its name. In round ``j`` every node that is not yet full claims its
``slot(j)``, in the order of another part of that hash; the first claim of a free slot wins it and a
claim of a taken slot is lost. (Maglev instead moves on to the next free slot in the same round,
which ties every node's later choices to everyone else's: it moved 6.5x the ideal at 1,000 nodes.)
Without capacities this is rendezvous hashing on slots: a slot goes to the node whose permutation
reaches it first, and a new node only takes slots. But a node's count would be binomial, 65.5 +- 8
slots at 1,000 nodes; the capacity trims that, at the price that a node which loses a slot to a
newcomer may win another one from an old node, and so on.

Why this one (``python -m tests.benchmarks.bench_placement``, figures in ``BENCHMARKS.md``, a loaded
2-core VM): only a table lookup meets the goal of <= 5 us per lookup at 1,000 nodes (0.3-0.9 us;
rendezvous hashes once per node: 80-150 us at 100 nodes, 0.6-1.9 ms at 1,000), and among the tables
tried (Maglev at 65,537 and 655,373 entries, this one with 0% and 3% slack) this one moves the fewest
objects: add/remove 1.00/1.00x the ideal at 3 nodes, 1.00/1.02 at 20, 1.08/1.05 at 100, 1.47/1.63
at 1,000 (no slack: 1.28/1.32 and 2.17/2.20; Maglev 65,537: 1.55 and 6.5). The 3% slack buys that
at 100 nodes. Balance, max/mean: slot shares 1.000-1.038 (1.038 at 1,000 nodes is mostly the one
slot of rounding in 65.5); objects of a 1,000,000-id sample 1.001 at 3 nodes, 1.054 at 100, 1.127
at 1,000, where a perfect split gives 1.111 (1,000 ids a node, sigma 3.2%: the noise floor). A ring
with 128 points per node is exactly consistent and fast but 1.24-1.34 off balance from 100 nodes on;
multi-probe consistent hashing (tried outside the benchmark) needs ~16 probes for 1.05-1.07 at
1,000 nodes and costs over 10 us a lookup here. The table takes 70-200 ms to build, once per node
set per process (the last 16 sets are cached).

The node list and its epoch travel to clients in the wire protocol's Welcome frame
(``actors/wire.py``) and from ``GET /v1/cluster``.

# XX: at 1,000 nodes a membership change moves 1.5-1.6x the ideal. No function of the node set alone
#     that we tried is balanced to a few percent and consistent to 10% at 65 slots a node; a table
#     computed from the previous one and published with the epoch could be. Decide with run-time
#     membership.
# XX: the first lookup of a new node set blocks its caller (the node's or the SDK's event loop) for
#     the build; when membership changes at run time, build the new map off the loop first.
# XX: nodes of unequal size: a per-node weight would scale the capacity.
# XX: an SDK in another language must reproduce this bit for bit; the golden vector in
#     tests/actors/test_placement.py pins it, and changing it is a wire-protocol change (and a
#     new PLACEMENT_FUNCTION).
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final

__all__ = ["PLACEMENT_FUNCTION", "SLACK_PERCENT", "SLOTS", "ClusterMap", "owner_of", "slot_of", "slot_table"]

#: the name and version of the placement function, as ``GET /v1/cluster`` announces it; a change to
#: the function (the golden vector in tests/actors/test_placement.py fails) needs a new name
PLACEMENT_FUNCTION: Final = "slots-v1"

#: slots in the table; an object's slot is the first four hex digits of its id
SLOTS: Final = 1 << 16
#: how far above an even split (in percent of SLOTS / n) a node's slot count may go
SLACK_PERCENT: Final = 3


def slot_of(object_hex: str) -> int:
    """The slot of the object with id ``object_hex`` (64 hex digits; only the first four are read)."""
    return int(object_hex[:4], 16)


def slot_table(nodes: Iterable[str], *, slack_percent: int = SLACK_PERCENT) -> tuple[str, ...]:
    """The owner of each slot, for the set of ``nodes``; ValueError if there is none.

    ``slack_percent`` exists for the benchmark; every caller that must agree with the cluster
    uses the default.
    """
    names = sorted(set(nodes))
    if not names:
        raise ValueError("a cluster has at least one node")
    if len(names) == 1:
        return (names[0],) * SLOTS
    return tuple(names[i] for i in _claim_slots(names, slack_percent))


def _claim_slots(names: Sequence[str], slack_percent: int) -> list[int]:
    """Slot -> index into ``names``: rounds of claims along each node's permutation, as above."""
    mask = SLOTS - 1
    digests = [hashlib.sha256(name.encode()).digest() for name in names]
    # the order in which nodes claim within a round: the last 16 bytes of their hash
    order = sorted(range(len(names)), key=lambda i: digests[i][16:])
    position = [int.from_bytes(digest[:8], "big") & mask for digest in digests]
    step = [int.from_bytes(digest[8:16], "big") & mask | 1 for digest in digests]
    capacity = -(-SLOTS * (100 + slack_percent) // (100 * len(names)))
    owner = [-1] * SLOTS
    count = [0] * len(names)
    free = SLOTS
    claiming = order
    # Terminates: a node that is not full reaches every slot within SLOTS rounds, and the
    # capacities add up to at least SLOTS.
    while free:
        still = []
        for i in claiming:
            slot = position[i]
            position[i] = (slot + step[i]) & mask
            if owner[slot] < 0:
                owner[slot] = i
                count[i] += 1
                free -= 1
                if not free:
                    break
            if count[i] < capacity:
                still.append(i)
        claiming = still
    return owner


@functools.lru_cache(maxsize=16)
def _cached_table(names: frozenset[str]) -> tuple[str, ...]:
    return slot_table(names)


def owner_of(object_hex: str, nodes: Sequence[str]) -> str:
    """The node of ``nodes`` that owns the object with id ``object_hex``; ValueError if ``nodes`` is empty.

    The tables of the last 16 node sets are cached, for this and for :class:`ClusterMap`.
    """
    if not nodes:
        raise ValueError("a cluster has at least one node")
    return _cached_table(frozenset(nodes))[slot_of(object_hex)]


@dataclass(frozen=True)
class ClusterMap:
    """The cluster as a client sees it: each node's name and base URL, and the map's ``epoch``.

    Equality and hashing are by ``nodes`` and ``epoch``. The first :meth:`owner` call of a node set
    new to the process builds its slot table (70-200 ms here, at 3 to 1,000 nodes); the map keeps
    its owners, and the tables of the last 16 node sets are cached.
    """

    nodes: tuple[tuple[str, str], ...]
    epoch: int = 0

    def owner(self, object_hex: str) -> tuple[str, str]:
        """``(node, url)`` of the node that owns ``object_hex``; ValueError if the map has no node."""
        return self._owners[int(object_hex[:4], 16)]

    def slots_of(self, node: str) -> tuple[int, ...]:
        """The slots (``0..SLOTS-1``; an id's slot is its first 16 bits) that ``node`` owns."""
        return self._slots_by_node.get(node, ())

    @functools.cached_property
    def _slots_by_node(self) -> dict[str, tuple[int, ...]]:
        by_node: dict[str, list[int]] = {}
        for slot, owner in enumerate(self._owners):
            by_node.setdefault(owner[0], []).append(slot)
        return {node: tuple(slots) for node, slots in by_node.items()}

    @functools.cached_property
    def _owners(self) -> tuple[tuple[str, str], ...]:
        # the first (name, url) listed for a name wins, as before
        by_name: dict[str, tuple[str, str]] = {}
        for node in self.nodes:
            by_name.setdefault(node[0], node)
        return tuple(by_name[name] for name in _cached_table(frozenset(by_name)))
