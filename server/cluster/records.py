"""The membership records kept in etcd, as values and bytes (sans I/O; ``registry.py`` reads and writes them).

Keys, relative to the etcd client's prefix (``/actors/`` by default):

- ``members``: ``{"version": 1, "members": [{"id", "url", "state"}, ...]}``, sorted by id, ``state``
  ``"active"`` (placement gives it slots) or ``"leaving"`` (still a member, reachable, handing its
  objects off; placement gives it none). The key's ``mod_revision`` is the **epoch** of the view.
- ``removed/<id>``: a tombstone, ``{"version": 1, "id", "url", "when", "by", "epoch"}``, written when
  an operator removed the node with ``--discard-data`` (``epoch``: the view it was removed from;
  the key's own ``mod_revision`` is the epoch of the removal). That id may never join again: its
  objects were given away empty, and a node coming back with the old files would serve stale ones.
- ``holds/<id>``: ``{"version": 1, "epoch": E, "slots": "<base64 of zlib(8,192-byte bitmap)>"}``:
  the placement slots in which that node may hold objects, as it last published them (under E).
- ``alive/<id>``: the liveness key (``liveness.py``), under a lease.

Guarantees
- ``decode_*(encode_*(x)) == x`` for every value, and a decoder never returns a value that breaks
  the invariants above (sorted unique ids and urls, known states, 65,536-bit bitmaps): it raises
  ``CorruptRecord`` (an ``EtcdError``: nothing is guessed) naming the key and the problem.
- A ``SlotSet`` is 8 KiB at most in memory; membership is O(1), ``len`` is O(1).
"""

from __future__ import annotations

import base64
import binascii
import json
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Final, Literal, final

from actors.placement import SLOTS

from .etcd import EtcdError

__all__ = [
    "RECORD_VERSION",
    "CorruptRecord",
    "Holds",
    "MemberRecord",
    "SlotSet",
    "Tombstone",
    "View",
    "decode_holds",
    "decode_members",
    "decode_tombstone",
    "encode_holds",
    "encode_members",
    "encode_tombstone",
]

#: the ``version`` field of every record; a reader refuses any other (a newer writer's format)
RECORD_VERSION: Final = 1
_BITMAP_BYTES: Final = SLOTS // 8
#: a compressed bitmap is far smaller; this only bounds what a corrupt record can make us inflate
_MAX_COMPRESSED: Final = 2 * _BITMAP_BYTES

State = Literal["active", "leaving"]
STATES: Final = ("active", "leaving")


class CorruptRecord(EtcdError):
    """A record under the prefix is not in the format above (written by something else, or newer)."""


#### Members


@dataclass(frozen=True, slots=True)
class MemberRecord:
    """One member: its stable id (what placement hashes), the URL it is reached at, its state."""

    id: str
    url: str
    state: State = "active"


@dataclass(frozen=True, slots=True)
class View:
    """The membership at one epoch: one ``members`` record, as etcd stored it at that revision."""

    members: tuple[MemberRecord, ...]  # sorted by id, ids and urls unique
    epoch: int  # the record's mod_revision; 0 when there is no record yet

    def active(self) -> tuple[MemberRecord, ...]:
        """The members placement gives slots to (sorted by id)."""
        return tuple(m for m in self.members if m.state == "active")

    def member(self, node_id: str) -> MemberRecord | None:
        return next((m for m in self.members if m.id == node_id), None)


def encode_members(members: Iterable[MemberRecord]) -> bytes:
    """The ``members`` record (sorted by id, whatever the order given)."""
    listed = [{"id": m.id, "url": m.url, "state": m.state} for m in sorted(members, key=lambda m: m.id)]
    return _json({"version": RECORD_VERSION, "members": listed})


def decode_members(value: bytes, epoch: int) -> View:
    """The view stored as ``value`` at revision ``epoch`` (CorruptRecord if it is not one)."""
    document = _document("members", value)
    entries = document.get("members")
    if type(entries) is not list:
        raise CorruptRecord('members: no "members" list')
    members = tuple(_member(entry) for entry in entries)
    ids = [m.id for m in members]
    if ids != sorted(set(ids)) or len({m.url for m in members}) != len(members):
        raise CorruptRecord("members: ids not sorted and unique, or a url listed twice")
    return View(members, epoch)


def _member(entry: Any) -> MemberRecord:
    if type(entry) is not dict or set(entry) != {"id", "url", "state"}:
        raise CorruptRecord(f"members: an entry is not {{id, url, state}}: {entry!r:.200}")
    node_id, url, state = entry["id"], entry["url"], entry["state"]
    if type(node_id) is not str or type(url) is not str or state not in STATES:
        raise CorruptRecord(f"members: a bad entry: {entry!r:.200}")
    return MemberRecord(node_id, url, state)


#### Tombstones


@dataclass(frozen=True, slots=True)
class Tombstone:
    """Why an id may not join again: who removed it (user@host), when (ISO 8601, UTC), from which epoch."""

    id: str
    url: str
    when: str
    by: str
    epoch: int


def encode_tombstone(tombstone: Tombstone) -> bytes:
    t = tombstone
    return _json(
        {"version": RECORD_VERSION, "id": t.id, "url": t.url, "when": t.when, "by": t.by, "epoch": t.epoch}
    )


def decode_tombstone(key: str, value: bytes) -> Tombstone:
    document = _document(key, value)
    node_id, url, when, by, epoch = (document.get(name) for name in ("id", "url", "when", "by", "epoch"))
    if not (type(node_id) is type(url) is type(when) is type(by) is str and type(epoch) is int):
        raise CorruptRecord(f"{key}: not a tombstone: {document!r:.200}")
    return Tombstone(node_id, url, when, by, epoch)


#### Slots


@final
class SlotSet:
    """A set of placement slots (0..65,535) as a 65,536-bit bitmap: ``slot in s`` is O(1).

    Immutable and hashable. Bit ``slot`` is bit ``slot % 8`` of byte ``slot // 8``.
    """

    __slots__ = ("_bitmap", "_count")

    def __init__(self, bitmap: bytes = bytes(_BITMAP_BYTES)) -> None:
        if len(bitmap) != _BITMAP_BYTES:
            raise ValueError(f"a slot bitmap has {_BITMAP_BYTES} bytes, not {len(bitmap)}")
        self._bitmap = bytes(bitmap)
        self._count = int.from_bytes(self._bitmap, "little").bit_count()

    @classmethod
    def from_slots(cls, slots: Iterable[int]) -> SlotSet:
        """ValueError for a slot outside 0..65,535."""
        bitmap = bytearray(_BITMAP_BYTES)
        for slot in slots:
            if not 0 <= slot < SLOTS:
                raise ValueError(f"a slot is in 0..{SLOTS - 1}, not {slot}")
            bitmap[slot >> 3] |= 1 << (slot & 7)
        return cls(bytes(bitmap))

    @classmethod
    def all(cls) -> SlotSet:
        return cls(b"\xff" * _BITMAP_BYTES)

    def __contains__(self, slot: object) -> bool:
        if type(slot) is not int or not 0 <= slot < SLOTS:
            return False
        return bool(self._bitmap[slot >> 3] >> (slot & 7) & 1)

    def __iter__(self) -> Iterator[int]:
        """The slots in increasing order."""
        for index, byte in enumerate(self._bitmap):
            if byte:
                yield from (index * 8 + bit for bit in range(8) if byte >> bit & 1)

    def __len__(self) -> int:
        return self._count

    def __or__(self, other: SlotSet) -> SlotSet:
        return self._combine(other, lambda a, b: a | b)

    def __and__(self, other: SlotSet) -> SlotSet:
        return self._combine(other, lambda a, b: a & b)

    def __sub__(self, other: SlotSet) -> SlotSet:
        return self._combine(other, lambda a, b: a & ~b)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SlotSet) and self._bitmap == other._bitmap

    def __hash__(self) -> int:
        return hash(self._bitmap)

    def __repr__(self) -> str:
        return f"<SlotSet of {self._count} slots>"

    def to_bytes(self) -> bytes:
        """The raw 8,192-byte bitmap."""
        return self._bitmap

    def _combine(self, other: SlotSet, op: Any) -> SlotSet:
        a, b = int.from_bytes(self._bitmap, "little"), int.from_bytes(other._bitmap, "little")
        return SlotSet((op(a, b) & ((1 << SLOTS) - 1)).to_bytes(_BITMAP_BYTES, "little"))


@dataclass(frozen=True, slots=True)
class Holds:
    """The slots in which a node may hold objects, as it published them under ``epoch``."""

    epoch: int
    slots: SlotSet


def encode_holds(holds: Holds) -> bytes:
    packed = base64.b64encode(zlib.compress(holds.slots.to_bytes(), 9)).decode("ascii")
    return _json({"version": RECORD_VERSION, "epoch": holds.epoch, "slots": packed})


def decode_holds(key: str, value: bytes) -> Holds:
    document = _document(key, value)
    epoch, packed = document.get("epoch"), document.get("slots")
    if type(epoch) is not int or epoch < 0 or type(packed) is not str or len(packed) > _MAX_COMPRESSED:
        raise CorruptRecord(f"{key}: not {{epoch, slots}}: {document!r:.200}")
    try:
        inflater = zlib.decompressobj()
        bitmap = inflater.decompress(base64.b64decode(packed, validate=True), _BITMAP_BYTES + 1)
        return Holds(epoch, SlotSet(bitmap))
    except (binascii.Error, zlib.error, ValueError) as error:
        raise CorruptRecord(f"{key}: the slots are not a zlib-compressed bitmap: {error}") from None


#### JSON


def _json(document: dict[str, Any]) -> bytes:
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode()


def _document(key: str, value: bytes) -> dict[str, Any]:
    try:
        document = json.loads(value)
    except ValueError:
        raise CorruptRecord(f"{key}: not JSON: {value[:100]!r}") from None
    if type(document) is not dict or document.get("version") != RECORD_VERSION:
        raise CorruptRecord(f"{key}: not a version {RECORD_VERSION} record: {value[:100]!r}")
    return document
