"""The order and pace of a handoff: which objects the old owner sends next, in which batches, how
fast (``handoff.py`` runs the protocol).

Guarantees
- :func:`take_batch` returns objects of one new owner only: the first object of ``remaining`` and
  those after it with the same owner; a hot object's batch holds hot objects only (at most
  ``HOT_BATCH_OBJECTS``), any other at most ``BATCH_OBJECTS``. Each object it returns leaves
  ``remaining`` and enters ``moving.sending``, where it stays until its outcome is known.
- :func:`plan` lists the live objects first, the most recently active first, then the stored ones,
  and never an object in ``moving.sending`` (it is on its way).
- :class:`TokenBucket` lets at most ``rate`` objects a second through, on average.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Final

import trio

from actors import ObjectId

__all__ = [
    "BATCH_OBJECTS", "HOT_BATCH_OBJECTS", "HOT_SECONDS", "Item", "Moving", "TokenBucket", "plan", "take_batch"
]

#: objects in one adopt message at most
BATCH_OBJECTS: Final = 64
#: after a change, the objects that worked in the last ``HOT_SECONDS`` (calls are likely waiting
#: for them) move first, the most recently active first, in batches of ``HOT_BATCH_OBJECTS``, each
#: answered before the next batch starts (``handoff.HOT_RELEASE_WAIT_SECONDS``), so that no big
#: batch competes with theirs on either node; then the other live objects, then the idle ones, in
#: batches of ``BATCH_OBJECTS``
HOT_SECONDS: Final = 1.0
HOT_BATCH_OBJECTS: Final = 8

#: who owns a hex id: (node id, ...) as ``ClusterMap.owner`` answers
OwnerOf = Callable[[str], tuple[str, ...]]


class Moving:
    """Objects being handed off (``sending``) or whose last send has no known outcome (``unsure``,
    with the node it went to): the gate activates none of them here."""

    def __init__(self) -> None:
        self.sending: set[str] = set()
        self.unsure: dict[str, str] = {}

    def __contains__(self, key: object) -> bool:
        return key in self.sending or key in self.unsure

    def __len__(self) -> int:
        return len(self.sending | self.unsure.keys())

    def __iter__(self) -> Iterator[str]:
        return iter(self.sending | self.unsure.keys())


@dataclass(slots=True)
class Item:
    hex: str
    object_id: ObjectId | None
    live: bool = False
    hot: bool = False  # it worked in the last HOT_SECONDS before the scan


def plan(
    live: dict[str, ObjectId],
    hot: set[str],
    stored: Iterable[str],
    *,
    owner_of: OwnerOf,
    me: str,
    known: Mapping[str, Item],
    sending: set[str],
) -> dict[str, Item]:
    """The objects to hand off, in order: the foreign ones among ``live`` (least recently active
    first, as the runtime lists them) the most recently active first, then those of ``stored``; an
    item already ``known`` is reused."""
    found: dict[str, Item] = {}
    for key, object_id in reversed(live.items()):
        if owner_of(key)[0] != me and key not in sending:
            item = known.get(key) or Item(key, object_id)
            item.live, item.hot, item.object_id = True, key in hot, item.object_id or object_id
            found[key] = item
    for key in stored:
        if key not in found and owner_of(key)[0] != me and key not in sending:
            found[key] = known.get(key) or Item(key, None)
    return found


def take_batch(
    remaining: dict[str, Item], owner_of: OwnerOf, sending: set[str]
) -> tuple[str, list[Item]] | None:
    """The next batch (its new owner and objects), taken out of ``remaining``; None if it is empty."""
    if not remaining:
        return None
    items = remaining.values()
    first = next(iter(items))  # the scan put live objects first, the most recently active first
    owner = owner_of(first.hex)[0]
    batch = [first]
    size = HOT_BATCH_OBJECTS if first.hot else BATCH_OBJECTS  # a hot object arrives sooner
    for item in items:
        if len(batch) >= size or (first.hot and not item.hot):
            break
        if item is not first and owner_of(item.hex)[0] == owner:
            batch.append(item)
    for item in batch:
        del remaining[item.hex]
        sending.add(item.hex)  # from here until its outcome is known
    return owner, batch


class TokenBucket:
    """At most ``rate`` objects a second (``--handoff-rate``), bursts up to one second's worth."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self._tokens = 0.0
        self._refilled = 0.0

    async def take(self, count: int) -> None:
        if math.isinf(self.rate):
            return
        now = trio.current_time()
        self._tokens = min(self.rate, self._tokens + (now - self._refilled) * self.rate)
        self._refilled = now
        self._tokens -= count
        if self._tokens < 0:
            await trio.sleep(-self._tokens / self.rate)
