"""Handing objects to their new owners with their files, and receiving them.

When the membership changes, some objects stored here belong to other nodes. The :class:`Mover`
hands each of them over (old owner O, new owner N, epoch E):

1. O no longer routes calls for the object here (the router's map is E), and its gate refuses to
   activate it; ``runtime.release`` lets the running and queued turns finish and commit, closes its
   sockets with 4012 "object moved", and checkpoints the file into one self-contained file.
2. O sends ``adopt(E, [{cls, name, id, sha256, size, alarm, data}])`` over the node link, the
   files of one batch in one message (a file over half a message in ``adopt_chunk`` messages
   first). N adopts E first if it is newer; refuses an object it does not own under its epoch
   (``not_owner`` with its epoch: O adopts it and sends the object to its owner under that epoch);
   checks each file's SHA-256, writes it under its name, makes the files and folder entries
   durable, records the batch in its catalog (``runtime.adopt``, with the batches from other senders
   in the same rounds), and answers. A call on N waiting for one of these objects goes on as soon
   as N stored it (``settle.ClusterGate.arrived``).
3. Only then O deletes its copy (``runtime.discard``). Until O has the answer, the object counts
   as moving: O activates it for no one, and tells a node that asks for it to wait.

Crash points: before N's answer, O's copy is the only valid one (N deletes unfinished ``.incoming``
files at start; O sends again). A send's outcome stays unknown until N answers, across a crash of O
too (``sent_log.py``): O activates such an object for no one, and if it owns it again it first asks
N, which sends it back if it stored it. After N stored it and before O learned so, both have it: O sends
it again and N answers ``already_held`` (N keeps its copy, which is newer or the same), then O
deletes its own. A node that received an object and already moved it on again would answer
``not_owner`` to a repeated send; O then offers it to the newest owner, which holds it or its
successor copy and answers ``already_held``.

Order and pace: objects some node asked for (``want``: a call is waiting for them) go first, then
those that worked in the last second (the most recently active first, in batches of 8, each
answered before the next batch starts, for at most 0.5 s), then the other live ones, then idle ones; at most
``rate`` objects a second (a token bucket), ``MOVE_CONCURRENCY`` batches in flight (a batch's slot is
free once its answer is in: O's discard of it overlaps the next batch), each object once per change.
``remaining`` says what is left.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Final, Protocol

import trio

from actors import ObjectId
from actors.errors import OwnerUnavailable

from .handoff_plan import HOT_SECONDS, Item, Moving, TokenBucket, plan, take_batch
from .handoff_wire import (
    ADOPT_OPERATION,
    TRANSFER_TIMEOUT_SECONDS,
    catalog_id,
    catalog_ids,
    object_ref,
    send_chunks,
    within,
)
from .sent_log import SentLog
from .settle import WANT_OPERATION, slot_of

if TYPE_CHECKING:
    from actors import Runtime

    from .router import Cluster

__all__ = ["HandoffMetrics", "Mover"]

log = logging.getLogger("server.cluster")

#: seconds a failed batch waits before it is tried again
RETRY_SECONDS: Final = 0.5
#: a hot batch (``handoff_plan.HOT_SECONDS``) is answered before the next batch starts, or this
#: many seconds passed: a long turn or a slow peer must not hold the move back
HOT_RELEASE_WAIT_SECONDS: Final = 0.5
#: batches a node has in flight at once (to all new owners together)
MOVE_CONCURRENCY: Final = 4
#: objects of one batch released (evicted, checkpointed, read) at once
RELEASE_CONCURRENCY: Final = 16


class HandoffMetrics(Protocol):
    """What the mover and the receiver count (``server/metrics.py``)."""

    def handed_off(self, objects: int) -> None: ...
    def received(self, objects: int) -> None: ...


class Mover:
    """Hands the objects stored here that belong elsewhere to their owners (see the module docstring)."""

    def __init__(
        self,
        router: Cluster,
        runtime: Runtime,
        metrics: HandoffMetrics,
        *,
        rate: float,
        max_message_bytes: int,
        sent_log: SentLog | None = None,
    ) -> None:
        self._router = router
        self._runtime = runtime
        self._metrics = metrics
        self._max_bytes = max(2048, max_message_bytes * 3 // 4)
        self._chunk = max(1024, max_message_bytes // 2)
        #: objects stored (or live) here that other nodes own, by hex id
        self.remaining: dict[str, Item] = {}
        #: objects whose transfer is under way or whose outcome is unknown: activated for no one
        self.moving = Moving()
        #: where sends of unknown outcome survive a crash (``sent_log.py``): those of the last run
        self._sent_log = sent_log
        if sent_log is not None:
            self.moving.unsure.update(sent_log.load())
        #: set when an object moved (or failed to) so ``want`` callers can look again
        self._progress = trio.Event()
        self._work = trio.Event()
        self._rescan = True
        #: called (once per emptiness) when nothing remains to move: a leaving node then leaves
        self.on_empty: Callable[[], None] | None = None
        self._bucket = TokenBucket(rate)
        #: the epoch of the last finished scan: ``remaining`` is complete for it (and not before)
        self.scanned_epoch = 0
        self._scanned = trio.Event()

    #### What others tell the mover

    def membership_changed(self, *_: Any) -> None:
        self._rescan = True
        self._work.set()

    async def wait_scanned(self, epoch: int) -> None:
        """Return once a scan under ``epoch`` (or a newer one) has finished."""
        while self.scanned_epoch < epoch:
            await self._scanned.wait()

    @property
    def done(self) -> bool:
        """Nothing left to hand off under the current epoch (scanned, nothing remaining or moving)."""
        return self.scanned_epoch == self._router.epoch and not self.remaining and not self.moving

    @property
    def to_move(self) -> int:
        """Objects still to hand off (``actors cluster nodes``, ``actors_handoff_pending_objects``)."""
        return len(self.remaining) + len(self.moving)

    def foreign_slots(self) -> set[int]:
        """Slots in which this node still has objects to hand off (part of its holds record)."""
        return {slot_of(h) for h in self.remaining} | {slot_of(h) for h in self.moving}

    async def want(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        """A new owner asks for an object a call waits for: hand it over first, answer once it has
        moved (``{"held": true}``) or if it is not here (``{"held": false}``). Refused with this
        node's epoch if this node owns it under a newer epoch than the asker's."""
        router, runtime = self._router, self._runtime
        epoch, object_id = object_ref(runtime, kwargs)
        deadline = trio.current_time() + TRANSFER_TIMEOUT_SECONDS
        await router.reach(epoch, deadline)
        if router.owns(object_id):
            raise router.not_owner(object_id, "(asking)")
        key = object_id.hex
        if key not in self.remaining and key not in self.moving:
            if not runtime.holds(object_id):
                return {"held": False, "epoch": router.epoch}
            self.remaining[key] = Item(key, object_id)
        item = self.remaining.pop(key, None)
        if item is not None:  # a call waits for it: move it now, ahead of every background batch
            item.object_id = item.object_id or object_id
            self.moving.sending.add(key)
            await self._move_batch(router.map.owner(key)[0], [item], None)
        # Answer only once the object is gone from here (stored by its owner), never while a batch
        # holds it between the queue and the wire.
        while key in self.remaining or key in self.moving or runtime.holds(object_id):
            if trio.current_time() >= deadline:
                raise OwnerUnavailable(
                    f"{object_id} is still moving off node {router.self_id}", node=router.self_id
                )
            progress = self._progress
            with trio.move_on_at(deadline):
                await progress.wait()
        return {"held": True, "epoch": router.epoch}

    #### The mover's task

    async def run(self) -> None:
        """Hand objects off forever: up to ``MOVE_CONCURRENCY`` batches in flight (a batch's
        round trip is mostly the receiver's disk), each object once per change."""
        slots = trio.Semaphore(MOVE_CONCURRENCY)
        async with trio.open_nursery() as nursery:
            while True:
                if self._rescan:
                    self._rescan = False
                    await self._scan()
                await self._resolve_owned()
                batch = take_batch(self.remaining, self._router.map.owner, self.moving.sending)
                if batch is None:
                    if self.done and self.on_empty is not None:
                        self.on_empty()
                    self._work = trio.Event()
                    if not self._rescan:
                        with trio.move_on_after(RETRY_SECONDS if self.moving.unsure else math.inf):
                            await self._work.wait()
                    continue
                owner, items = batch
                await slots.acquire()
                await self._bucket.take(len(items))
                answered = trio.Event()
                nursery.start_soon(self._move_batch, owner, items, slots, answered)
                if items[0].hot:  # the next batch starts once this one is answered (see HOT_SECONDS)
                    with trio.move_on_after(HOT_RELEASE_WAIT_SECONDS):
                        await answered.wait()

    async def _move_batch(
        self,
        owner: str,
        items: list[Item],
        slots: trio.Semaphore | None,
        answered: trio.Event | None = None,
    ) -> None:
        freed = False

        def free() -> None:
            """Give the batch's slot back (once): when its answer is in, or when it ends."""
            nonlocal freed
            if answered is not None:
                answered.set()
            if slots is not None and not freed:
                freed = True
                slots.release()

        try:
            await self._move(owner, items, free)
        except Exception as exc:  # a batch never stops the mover: its objects are tried again
            log.warning(
                "handoff batch failed",
                extra={"event": "handoff_failed", "peer": owner, "objects": len(items), "error": repr(exc)},
            )
            for item in items:
                self.moving.sending.discard(item.hex)
                self.remaining.setdefault(item.hex, item)
            await trio.sleep(RETRY_SECONDS)
        finally:
            free()
            progress, self._progress = self._progress, trio.Event()
            progress.set()
            self._work.set()  # the loop may be waiting: look again (leftovers, emptiness)

    async def _resolve_owned(self) -> None:
        """Objects this node owns again whose last send has no known outcome: ask where they went."""
        owned = [(k, t) for k, t in self.moving.unsure.items() if self._router.owns_hex(k)]
        for key, target in owned:
            try:
                await self._resolve(key, target)
            except Exception as exc:  # the target is away: the object stays unavailable here
                log.warning(
                    "could not learn where an object went",
                    extra={"event": "handoff_unresolved", "object": key, "peer": target, "error": repr(exc)},
                )

    async def _scan(self) -> None:
        """Find every object stored or live here that another node owns under the current epoch."""
        runtime, router = self._runtime, self._router
        epoch = router.epoch
        stored = await trio.to_thread.run_sync(runtime.stored_ids)
        if router.epoch != epoch:  # changed meanwhile: scan again under the new map
            self._rescan = True
            return
        live = runtime.live_ids()
        hot = runtime.active_ids(trio.current_time() - HOT_SECONDS)
        found = plan(
            live, hot, stored, owner_of=router.map.owner, me=router.self_id, known=self.remaining,
            sending=self.moving.sending,
        )  # fmt: skip
        self.remaining = found
        self.scanned_epoch = epoch
        scanned, self._scanned = self._scanned, trio.Event()
        scanned.set()
        if found:
            log.info(
                "handoff planned",
                extra={"event": "handoff_planned", "epoch": router.epoch, "objects": len(found)},
            )

    async def _move(self, owner: str, items: list[Item], free: Callable[[], None]) -> None:
        router, runtime = self._router, self._runtime
        link = router.links.get(owner)
        if owner == router.self_id or link is None:  # the map changed since: scan again
            for item in items:
                self.moving.sending.discard(item.hex)
                self.remaining.setdefault(item.hex, item)
            self._rescan = True
            return
        released: list[tuple[ObjectId, Any, bytes | None]] = []
        sending = self.moving.sending
        limiter = trio.CapacityLimiter(RELEASE_CONCURRENCY)
        unnamed = [item.hex for item in items if item.object_id is None]  # idle ones: the scan had hex ids
        # Read in a thread: a catalog read on the event loop would wait there for the catalog's
        # transactions in flight (a discard's), each holding its lock through an fsync.
        named = await trio.to_thread.run_sync(catalog_ids, runtime, unnamed) if unnamed else {}

        async def release(item: Item) -> None:
            async with limiter:
                object_id = item.object_id or named.get(item.hex)
                if object_id is None:
                    sending.discard(item.hex)
                    return  # deleted since the scan
                try:
                    done = await runtime.release(object_id, inline_bytes=self._chunk)
                    if done is None:
                        sending.discard(item.hex)  # no storage after all (never written): nothing to move
                        await self.outcome_known([item.hex])
                        return
                    data = done.data  # a small file comes as bytes; a big one is sent in chunks
                except BaseException:
                    sending.discard(item.hex)
                    raise
                released.append((object_id, done, data))

        async with trio.open_nursery() as nursery:  # evictions, checkpoints and reads overlap
            for item in items:
                nursery.start_soon(release, item)
        if not released:
            return
        try:
            if self._sent_log is not None:  # durably, before anything leaves
                await self._sent_log.sending(owner, [object_id.hex for object_id, _, _ in released])
            await self._send(owner, link, released, free)
        except BaseException:
            # The outcome is unknown: the new owner may have stored them. Until a send is answered,
            # they stay moving (activated for no one) and are sent again (``already_held`` then).
            for object_id, _, _ in released:
                self.moving.unsure[object_id.hex] = owner
                self.remaining.setdefault(object_id.hex, Item(object_id.hex, object_id))
            raise
        finally:
            for object_id, _, _ in released:
                sending.discard(object_id.hex)

    async def _send(
        self,
        owner: str,
        link: Any,
        released: list[tuple[ObjectId, Any, bytes | None]],
        free: Callable[[], None],
    ) -> None:
        router, runtime = self._router, self._runtime
        entries: list[dict[str, Any]] = []
        for object_id, done, data in released:
            entry = {
                "cls": object_id.cls, "name": object_id.name, "id": object_id.hex,
                "sha256": done.sha256_hex, "size": done.size, "alarm": done.alarm, "data": data,
            }  # fmt: skip
            if data is None:
                await send_chunks(link, router.epoch, object_id, done.path, done.size, self._chunk)
            entries.append(entry)
        outcomes: list[dict[str, Any]] = []
        for message in within(entries, self._max_bytes):  # each under the link's message limit
            kwargs = {"epoch": router.epoch, "objects": message}
            with trio.fail_after(TRANSFER_TIMEOUT_SECONDS):
                reply = await link.call("", "", ADOPT_OPERATION, (), kwargs)
            outcomes.extend(reply["outcomes"])
        # The receiver's work is done: the next batch may leave while this one's discard runs here
        # (its objects still count as moving until then, and are activated for no one).
        free()
        discard: list[ObjectId] = []
        newer = 0
        by_hex = {object_id.hex: object_id for object_id, _, _ in released}
        for outcome in outcomes:
            object_id = by_hex[outcome["id"]]
            if outcome["outcome"] in ("stored", "already_held"):
                discard.append(object_id)
            else:  # not_owner (with the receiver's newer epoch) or failed: this copy stays, try again
                newer = max(newer, int(outcome.get("epoch", 0)))
                if outcome["outcome"] == "failed":
                    log.warning(
                        "handoff of an object failed",
                        extra={
                            "event": "handoff_failed",
                            "object": object_id.hex,
                            "error": outcome.get("error"),
                        },
                    )
                self.remaining[object_id.hex] = Item(object_id.hex, object_id)
        if discard:
            await runtime.discard(discard)
            self._metrics.handed_off(len(discard))
        await self.outcome_known(by_hex)  # stored there (and discarded here), or not stored there
        if newer > router.epoch:
            await router.reach(newer, trio.current_time() + TRANSFER_TIMEOUT_SECONDS)
            self._rescan = True

    async def _resolve(self, key: str, target: str) -> None:
        """This node owns again an object whose last send (to ``target``) has no known outcome: ask
        ``target``; if it holds the object it sends it back here (the Receiver replaces this node's
        older copy), else this copy is the only one."""
        router = self._router
        link = router.links.get(target)
        object_id = catalog_id(self._runtime, key)
        if link is None or object_id is None:  # the target left (it handed everything off) or gone
            await self.outcome_known([key])
            return
        kwargs = {"epoch": router.epoch, "cls": object_id.cls, "name": object_id.name, "id": key}
        with trio.fail_after(TRANSFER_TIMEOUT_SECONDS):
            await link.call("", "", WANT_OPERATION, (), kwargs)
        await self.outcome_known([key])  # sent back (and replaced here) or never stored there

    async def outcome_known(self, keys: Iterable[str]) -> None:
        """The outcome of the last send of ``keys`` is known: no longer unsure, here or on disk."""
        keys = list(keys)
        for key in keys:
            self.moving.unsure.pop(key, None)
        if self._sent_log is not None:
            await self._sent_log.done(keys)

    def replaced(self, key: str) -> bool:
        """Whether an arriving copy must replace this node's copy: this node's send of it has no
        known outcome, so the arriving copy is the newer one."""
        return key in self.moving.unsure
