"""Membership on etcd: who the members are at which epoch, and which slots each node may still hold.

The records and their formats are in ``records.py``; this module reads, changes and follows them.

Guarantees
- **One writer wins each change.** Every change of ``members`` is one etcd transaction that
  compares the record's ``mod_revision`` with the one the change was computed from. Of concurrent
  changes at most one lands per revision; the others read the record again and recompute (up to
  ``MAX_ATTEMPTS`` times, with a short random pause), so concurrent joins, leaves and removes all
  land and none undoes another.
- **Epochs only grow.** The epoch of a view is the revision that wrote its record. etcd's revision
  grows with every write, so a later record has a higher epoch. (Nothing here deletes the record;
  if an operator does, ``read`` shows epoch 0 and ``watch`` ignores the delete.)
- **One epoch per view.** A :class:`View` is one record as stored at one revision, never a mix of
  two; ``read`` is linearizable (it sees every change acknowledged before it began).
- **Invariants of the record:** ids and urls are unique, at most ``MAX_NODES`` members, a change
  never leaves members without an active one, and a removed id is never a member again: ``join``
  writes only if ``removed/<id>`` is absent (in the same transaction), and ``remove`` with
  ``discard_data`` writes the tombstone in the transaction that drops the member.
- **Retrying is safe.** ``EtcdUnavailable`` means the outcome is unknown; every change is
  idempotent (joining with the same url, leaving while leaving and removing what is gone change
  nothing), so calling it again is the way to find out.
- **Failures.** ``EtcdUnavailable`` (no answer), ``EtcdError`` (etcd refused; ``CorruptRecord`` for
  a record not in ``records.py``'s format) and ``MembershipRefused`` (the rules above forbid the
  change; one line for an operator; ``actors serve`` exits 2 on it).
- **Watches run forever.** ``watch`` and ``watch_holds`` never raise ``EtcdUnavailable`` or
  ``EtcdError``: after a lost stream (etcd restarted) or compacted history they log, wait (50 ms
  doubling to 2 s), read again and watch from there, so nothing is missed; a corrupt record is
  logged and skipped. Iterate them inside ``contextlib.aclosing`` (or a task that is cancelled), so
  the watch's connection closes when the loop ends.

XX: a paused etcd keeps a watch silent without an error (see ``etcd.py``); peers' epochs, carried by
    every link message, are what tells a node to ``read`` again.
XX: a tombstone is never deleted here; an operator who wants an id back deletes ``removed/<id>``
    with etcdctl, after wiping that node's data folder.
"""

from __future__ import annotations

import logging
import random
from collections.abc import AsyncGenerator, Callable
from contextlib import aclosing
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Final

import trio

from .etcd import Etcd, EtcdError, EtcdUnavailable, EventType, KeyValue, WatchEvent
from .membership import MAX_NODE_ID_BYTES, MAX_NODES, ClusterFileError, _check_url
from .records import (
    CorruptRecord,
    Holds,
    MemberRecord,
    SlotSet,
    Tombstone,
    View,
    decode_holds,
    decode_members,
    decode_tombstone,
    encode_holds,
    encode_members,
    encode_tombstone,
)

__all__ = ["Holds", "MemberRecord", "MembershipRefused", "Registry", "SlotSet", "View"]

log = logging.getLogger("server.cluster")

MEMBERS: Final = "members"
#: compare-and-swaps one change may lose in a row before it gives up (EtcdUnavailable)
MAX_ATTEMPTS: Final = 100
#: the longest random pause after a lost compare-and-swap, in seconds
CONFLICT_PAUSE: Final = 0.02
#: a broken watch is opened again after this pause, doubling up to the next
RETRY_FIRST, RETRY_MAX = 0.05, 2.0


class MembershipRefused(Exception):
    """The membership rules forbid this change; the message is one line for an operator."""


@dataclass
class _Change:
    members: tuple[MemberRecord, ...]  # the new record, sorted by id
    put: dict[str, bytes] = field(default_factory=dict)  # other keys, in the same transaction
    delete: list[str] = field(default_factory=list)


class Registry:
    """The cluster's membership records under one etcd client's prefix (see the module docstring)."""

    def __init__(self, etcd: Etcd) -> None:
        self._etcd = etcd

    async def read(self) -> View:
        """The current view (linearizable); epoch 0 and no members before the first join."""
        kv = await self._etcd.get(MEMBERS)
        return View((), 0) if kv is None else decode_members(kv.value, kv.mod_revision)

    #### Changes

    async def join(self, node_id: str, url: str) -> View:
        """Adds the node as active, or updates its url (keeping its state: a leaving node that
        restarts keeps leaving). MembershipRefused: a bad id or url, an id removed with
        ``--discard-data``, a url another member has, ``MAX_NODES`` members already."""
        _check_node_id(node_id)
        try:
            url = _check_url(url, f"node {node_id}")
        except ClusterFileError as error:
            raise MembershipRefused(str(error)) from None

        def decide(view: View) -> _Change | None:
            me = view.member(node_id)
            if me is not None and me.url == url:
                return None
            taken = next((m for m in view.members if m.url == url and m.id != node_id), None)
            if taken is not None:
                raise MembershipRefused(f"node {node_id}: url {url} is member {taken.id}'s")
            if me is None and len(view.members) >= MAX_NODES:
                raise MembershipRefused(f"node {node_id}: the cluster has {MAX_NODES} members, the most")
            others = [m for m in view.members if m.id != node_id]
            return _Change(_sorted([*others, MemberRecord(node_id, url, me.state if me else "active")]))

        return await self._change(decide, absent=f"removed/{node_id}")

    async def set_leaving(self, node_id: str) -> View:
        """Marks the member leaving: placement gives it no slots from the new epoch on, and it hands
        its objects off, then calls ``remove(node_id, discard_data=False)``. MembershipRefused: not
        a member, or the last active one."""

        def decide(view: View) -> _Change | None:
            me = _existing(view, node_id)
            if me.state == "leaving":
                return None
            _keep_an_active_member(view, node_id, "leave")
            return _Change(_replace(view, MemberRecord(me.id, me.url, "leaving")))

        return await self._change(decide)

    async def remove(self, node_id: str, *, discard_data: bool, by: str = "") -> View:
        """Drops the member and its ``holds/<id>``.

        Without ``discard_data`` it is a leaving node's last step, once it holds no object:
        MembershipRefused if it is still active. With ``discard_data`` (an operator giving its
        objects away empty) it also writes the tombstone ``removed/<id>`` (``by``: who, for the
        record), in the same transaction; MembershipRefused if it is the last active member.
        Removing an id that is already gone changes nothing (the view is returned), except that
        with ``discard_data`` an id that was never removed so (no tombstone) is MembershipRefused.
        """
        tombstone_key = f"removed/{node_id}"

        def decide(view: View) -> _Change | None:
            me = view.member(node_id)
            if me is None:
                return None
            if not discard_data and me.state == "active":
                raise MembershipRefused(
                    f"node {node_id} is active: mark it leaving first (its objects live on its disk)"
                )
            _keep_an_active_member(view, node_id, "be removed")
            change = _Change(tuple(m for m in view.members if m.id != node_id), delete=[f"holds/{node_id}"])
            if discard_data:
                when = datetime.now(UTC).isoformat(timespec="seconds")
                tombstone = Tombstone(node_id, me.url, when, by, view.epoch)
                change.put[tombstone_key] = encode_tombstone(tombstone)
            return change

        view = await self._change(decide)
        if discard_data and view.member(node_id) is None and await self._etcd.get(tombstone_key) is None:
            raise MembershipRefused(f"node {node_id} is not a member")
        return view

    async def _change(self, decide: Callable[[View], _Change | None], *, absent: str | None = None) -> View:
        """Read, ``decide``, compare-and-swap; again while another writer wins (see the docstring).
        ``absent``: a key that must not exist (a tombstone), checked in the same transaction."""
        for _ in range(MAX_ATTEMPTS):
            view = await self.read()
            change = decide(view)
            if change is None:
                return view
            compare = {MEMBERS: view.epoch} | ({absent: 0} if absent else {})
            put = {MEMBERS: encode_members(change.members), **change.put}
            succeeded, revision = await self._etcd.txn(compare, put=put, delete=change.delete)
            if succeeded:
                return View(change.members, revision)
            if absent is not None and (kv := await self._etcd.get(absent)) is not None:
                raise MembershipRefused(_removed_message(decode_tombstone(kv.key, kv.value)))
            await trio.sleep(random.uniform(0, CONFLICT_PAUSE))
        raise EtcdUnavailable(f"members: lost {MAX_ATTEMPTS} compare-and-swaps in a row; try again")

    #### Following changes

    async def watch(self, after_epoch: int) -> AsyncGenerator[View, None]:
        """Every view newer than ``after_epoch``, in epoch order, from now on, forever.

        First the current view if it is newer already, then each change as etcd reports it. After a
        lost watch it reads again, so views may be skipped (never reordered) across an outage or a
        compaction: the one read after it is the latest.
        """
        last = after_epoch
        async with aclosing(self._follow(MEMBERS)) as changes:
            async for change in changes:
                if isinstance(change, list):  # a fresh read
                    current = next((kv for kv in change if kv.key == MEMBERS), None)
                    if current is None:
                        continue
                    epoch, value = current.mod_revision, current.value
                elif change.key != MEMBERS:
                    continue
                elif change.type is EventType.DELETE:
                    log.error("the members record was deleted", extra={"event": "members_deleted"})
                    continue
                else:
                    epoch, value = change.mod_revision, change.value
                if epoch <= last:
                    continue
                try:
                    view = decode_members(value, epoch)
                except CorruptRecord as error:
                    log.error(  # noqa: TRY400 (the message says it all: no traceback)
                        "skipping a corrupt members record", extra={"event": "corrupt", "error": str(error)}
                    )
                    continue
                last = epoch
                yield view

    async def publish_holds(self, node_id: str, epoch: int, slots: SlotSet) -> None:
        """Sets ``holds/<node_id>``: the slots in which this node may hold objects, under ``epoch``.
        Each node writes only its own; MembershipRefused if the id was removed with --discard-data."""
        key = f"holds/{node_id}"
        value = encode_holds(Holds(epoch, slots))
        succeeded, _ = await self._etcd.txn({f"removed/{node_id}": 0}, put={key: value})
        if not succeeded:
            raise MembershipRefused(f"node {node_id} was removed with --discard-data; it may not publish")

    async def read_holds(self) -> dict[str, Holds]:
        """Every node's last published holds, by node id (linearizable, one snapshot). Holds of an id
        that is no member are stale: written by a node after it left."""
        kvs, _ = await self._etcd.get_prefix("holds/")
        return {kv.key.removeprefix("holds/"): decode_holds(kv.key, kv.value) for kv in kvs}

    async def watch_holds(self) -> AsyncGenerator[dict[str, Holds], None]:
        """The full holds map now, then again after each change (a fresh dict each time), forever.
        After a lost watch, the map read again (if it differs from the last one yielded)."""
        holds: dict[str, Holds] = {}
        last: dict[str, Holds] | None = None
        async with aclosing(self._follow("holds/")) as changes:
            async for change in changes:
                if isinstance(change, list):
                    holds = {}
                    for kv in change:
                        _apply_holds(holds, kv.key, kv.value)
                elif change.type is EventType.DELETE:
                    holds.pop(change.key.removeprefix("holds/"), None)
                else:
                    _apply_holds(holds, change.key, change.value)
                if holds != last:
                    last = dict(holds)
                    yield dict(holds)

    async def alive(self) -> set[str]:
        """The ids whose liveness key ``alive/<id>`` exists (its lease is being renewed)."""
        kvs, _ = await self._etcd.get_prefix("alive/")
        return {kv.key.removeprefix("alive/") for kv in kvs}

    async def _follow(self, prefix: str) -> AsyncGenerator[list[KeyValue] | WatchEvent, None]:
        """A fresh read of ``prefix`` (a list), then each change after it; again after any failure."""
        pause = RETRY_FIRST
        while True:
            try:
                kvs, revision = await self._etcd.get_prefix(prefix)
                yield kvs
                async with self._etcd.open_watch(prefix, start_revision=revision + 1) as watch:
                    pause = RETRY_FIRST
                    async for event in watch:
                        yield event
            except (EtcdUnavailable, EtcdError) as error:
                log.warning(
                    f"watch of {self._etcd.prefix}{prefix} lost; reading again in {pause:.2f} s",
                    extra={"event": "watch_lost", "error": str(error)},
                )
            await trio.sleep(pause * random.uniform(0.5, 1.0))
            pause = min(pause * 2, RETRY_MAX)


#### Helpers


def _check_node_id(node_id: str) -> None:
    """membership.py's rule for ids in a cluster file."""
    size = len(node_id.encode())
    if not 0 < size <= MAX_NODE_ID_BYTES or not node_id.isprintable() or node_id != node_id.strip():
        raise MembershipRefused(
            f"node id {node_id!r} must be 1 to {MAX_NODE_ID_BYTES} bytes of printable text"
        )


def _existing(view: View, node_id: str) -> MemberRecord:
    me = view.member(node_id)
    if me is None:
        members = ", ".join(m.id for m in view.members) or "none"
        raise MembershipRefused(f"node {node_id} is not a member (members: {members})")
    return me


def _keep_an_active_member(view: View, node_id: str, what: str) -> None:
    if [m.id for m in view.active()] == [node_id]:
        raise MembershipRefused(f"node {node_id} is the last active member; it cannot {what}")


def _sorted(members: list[MemberRecord]) -> tuple[MemberRecord, ...]:
    return tuple(sorted(members, key=lambda m: m.id))


def _replace(view: View, member: MemberRecord) -> tuple[MemberRecord, ...]:
    return tuple(member if m.id == member.id else m for m in view.members)


def _removed_message(tombstone: Tombstone) -> str:
    who = f" by {tombstone.by}" if tombstone.by else ""
    return (
        f"node {tombstone.id} was removed with --discard-data{who} at {tombstone.when}: its objects "
        "were given away empty, so that id may not join again (use a new id and an empty data folder)"
    )


def _apply_holds(holds: dict[str, Holds], key: str, value: bytes) -> None:
    try:
        holds[key.removeprefix("holds/")] = decode_holds(key, value)
    except CorruptRecord as error:
        log.error(  # noqa: TRY400 (the message says it all: no traceback)
            "skipping corrupt holds", extra={"event": "corrupt", "error": str(error)}
        )
