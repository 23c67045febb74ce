"""Moving an object between nodes: the runtime's side. The cluster (``server/cluster/``) decides what
moves where and carries the bytes; this module keeps one writer per object while it does.

Guarantees
- **One writer across nodes, given a gate.** ``Runtime.set_gate(gate)`` installs a :class:`Gate`.
  ``may_activate(id)`` is asked before an object that is not live is activated, on every path (calls,
  socket events, alarms, export, delete: ``_table.py``); a refusal is raised to the caller and nothing
  is created, opened or activated. ``may_write()`` (the node's fence) is asked by every activation
  before each batch of turns (``_activation.py``); a refusal fails every call of the batch with it,
  none of them started, through the usual reply path. A live object is not affected by
  ``may_activate``: its queued and new turns keep running (routing new calls away is the cluster's
  job). Without a gate (one node) nothing is asked; with one it costs a method call per activation and
  per batch. An alarm refused either way is not an attempt: it stays pending (``_alarms.py``).
- **Release** (``Runtime.release``; the gate must refuse the object already): returns once the object
  is not live here, every running and queued turn finished and committed durably as in an eviction,
  its sockets closed with the move's close code (their ``on_close`` does not run here), described by
  :class:`Released`: the bytes of its database as one self-contained file (a small one, read through
  SQLite with its WAL applied: no checkpoint, no fsync), or its file checkpointed (``<hex>.sqlite3``,
  no ``-wal`` or ``-shm`` beside it). Its files do not change until ``discard`` (nothing can open
  them: the gate); a WAL a release left is folded in at a clean shutdown if the object is still here.
- **Adopt** (``Runtime.adopt``): an object is stored here only once ``adopt`` returned it
  ``"stored"``: its bytes matched the SHA-256, its file under its real name and the folder entries
  were made durable, and its catalog entry (with its alarm) committed; then its alarm is scheduled.
  Nothing is activated. An object this node already holds keeps its copy (``"already_held"``); one
  that arrives again while an adoption of it is under way fails (the sender retries). A staged file a
  transfer left unfinished is deleted when the runtime opens.
- **Discard** (``Runtime.discard``, once the new owner confirmed): this node no longer holds the
  objects when it returns: their catalog entries are gone durably, their alarms cancelled, their files
  deleted (the deletions are made durable by the filesystem's next flush, not waited for).

Mechanism: release is an eviction with the reason ``moved`` (which closes without a checkpoint),
then, in a worker thread, either a read of the database as one image (``serialize``) and its hash,
or for a big one a checkpoint and a hash of the file (the catalog read for its alarm in that thread
too: on the event loop it would wait for a catalog transaction's fsync). Adopt works in three steps,
each waiting for the last: every arriving file is placed under its real name (a small one, which
came with its bytes, is hashed in memory and written there; a big one, staged by chunks, is hashed
and renamed); one *barrier* makes every file and folder entry of the batch durable; one catalog
transaction records the batch. Until that transaction commits no file of the batch is held here (see
the crash points), so the order in which the barrier makes them durable does not matter. The barrier
and the catalog transaction are two rounds (``_rounds.py``): the batches adopted meanwhile share
them, and one round's catalog transaction overlaps the next one's barrier. The barrier is
``syncfs(2)`` of the data folder's filesystem where the C library has it (Linux): one journal commit
for the whole batch, where an fsync of each file and of each folder it entered (the fallback, run in
parallel in the runtime's fsync pool) costs two flushes per object. Measured on 2 cores, ext4 on a
virtual disk (``tests/benchmarks/bench_moves.py``, batches of 64 files of 16 KiB): adopt alone
3,300-4,700 objects/s with ``syncfs``, 1,900-2,600 with the fallback; writing the staged files first
(the cluster's part) costs as much again or more on that disk (creating a file takes 0.04-1.3 ms
there, depending on the moment).

Crash points
- Before adopt's catalog commit, an arriving file may be under its real name already (whole, or cut
  short by the crash), but with no catalog entry this node does not hold it (``holds`` is False, not
  listed, no alarm): the cluster retries the move and adopt replaces the file (and any ``-wal``
  beside it).
- Discard commits the catalog first, then deletes the files; a crash between leaves files with no entry,
  which this node does not hold, as above. Such a stale copy is safe only because the cluster never
  lets a node activate an object it does not own, and an object comes back to a node only through
  adopt, which replaces it. (The other order could leave an entry without a file, and a later adopt
  would answer ``already_held`` for an object whose data is gone.)

XX: files a crash in discard left without an entry are never found again (short of a walk of every
object folder); they hold disk space until the object is adopted here again. The same goes for a
file a crash left under its real name before adopt's catalog commit (whole or cut short): an
activation here would open it if this node ever created that object anew (the gate asks the other
nodes first, and the sender still holds it, so the cluster adopts it again instead).
XX: ``syncfs`` writes back everything dirty on the filesystem, other objects' WAL frames and
checkpoints included, so on a node with much unsynced data one barrier costs more; it stays one
flush per batch. Before Linux 5.8 it may not report a write-back error of another process's file
(PostgreSQL documents the same for ``recovery_init_sync_method=syncfs``).
XX: release reads the whole file to hash it; a multi-gigabyte object costs seconds of disk reads (in a
worker thread). The cluster could hash while it streams instead.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol

import trio

from ._catalog import CatalogEntry
from ._file import fsync_path
from ._ids import ObjectId
from ._leftovers import fold_wal_files
from ._movefiles import (
    STAGING_MARKER,
    Placement,
    contents,
    delete_files,
    place_all,
    remove_staged_files,
    remove_unfinished_transfers,
    staged,
)
from ._movework import MoveWork
from ._rounds import Rounds
from .errors import ActorError, InvalidArgument, UnknownClass

if TYPE_CHECKING:
    from ._runtime import Runtime

__all__ = [
    "AdoptOutcome", "Arrival", "Gate", "Released", "remove_staged_files", "remove_unfinished_transfers"
]

log = logging.getLogger("actors")



class Gate(Protocol):
    """Where objects may live and whether this node may write (implemented by the cluster).

    Both methods run on the trio thread, must not block, and return None (allowed) or the error to
    raise (usually ``OwnerUnavailable``, which callers may retry and alarms wait out).
    """

    def may_activate(self, object_id: ObjectId) -> ActorError | None:
        """Asked before an object that is not live is activated here."""

    async def admit(self, object_id: ObjectId, deadline: float) -> None:
        """Called when ``may_activate`` refused: wait (up to ``deadline``, trio time) until the
        object may be activated here and return, or raise the reason it may not (for instance
        after asking the node that may still hold it). The caller asks ``may_activate`` again."""

    def may_write(self) -> ActorError | None:
        """Asked by each activation before each batch of turns (so: cheap)."""


@dataclass(frozen=True, slots=True)
class Released:
    """An object released by this node: its database as one file, ready to be sent."""

    object_id: ObjectId
    path: Path  # its file here; unchanged until discard (self-contained when ``data`` is None)
    size: int  # bytes of the file to send
    sha256_hex: str  # of the file to send
    alarm: float | None  # its pending alarm (epoch seconds), from the catalog
    #: the file to send, when it is small (``release``'s ``inline_bytes``); else read it from ``path``
    data: bytes | None = None


@dataclass(frozen=True, slots=True)
class Arrival:
    """An object to adopt: its file's bytes (``data``), or its file written to
    ``Runtime.staging_path(object_id)`` (``data`` None: a big file that came in chunks)."""

    object_id: ObjectId
    sha256_hex: str  # what the file must hash to
    alarm: float | None  # its pending alarm (epoch seconds), scheduled here once adopted
    data: bytes | None = None


AdoptStatus = Literal["stored", "already_held", "failed"]


@dataclass(frozen=True, slots=True)
class AdoptOutcome:
    object_id: ObjectId
    #: stored: held here now; already_held: this node's copy was kept (staged file deleted);
    #: failed: not stored here (``error`` says why; staged file deleted)
    status: AdoptStatus
    error: ActorError | None = None


class Moves:
    """The runtime's side of moves (one per runtime; ``Runtime`` delegates to it)."""

    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime
        self._work = MoveWork(runtime)
        #: releases in progress, by hex id: a second release of one object waits for the first
        self._releasing: dict[str, trio.Lock] = {}
        #: files whose WAL was left beside them (a release sent as an image, a reset): folded at a
        #: clean shutdown unless deleted first
        self.unfolded: set[Path] = set()
        #: adopt's two steps, each a round of its own, so that one batch's catalog transaction
        #: overlaps the next batch's barrier
        self._barrier_rounds = Rounds(self._barrier_round)
        self._catalog_rounds = Rounds(self._catalog_round)
        #: hex ids between adopt's check that they are not held and the end of their round: a
        #: second arrival of one of them meanwhile fails (it would rewrite a file being made durable)
        self._arriving: set[str] = set()
        self._discard_rounds = Rounds(self._discard_round)
        #: the staging marker was made in this run
        self._marked = False

    def holds(self, object_id: ObjectId) -> bool:
        runtime = self._runtime
        return runtime.table.find(object_id) is not None or runtime.catalog.get(object_id.hex) is not None

    def staging_path(self, object_id: ObjectId) -> Path:
        if not self._marked:
            marker = self._runtime.data_dir / STAGING_MARKER
            marker.touch()
            fsync_path(marker.parent)  # before any staged file can exist
            self._marked = True
        path = self._runtime.object_path(object_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        return staged(path)

    #### Release

    async def release(
        self, object_id: ObjectId, close_code: int, reason: str, inline_bytes: int = 0
    ) -> Released | None:
        gate = self._runtime.gate
        if gate is None or gate.may_activate(object_id) is None:
            raise RuntimeError(f"release({object_id}): the gate must refuse to activate it first")
        lock = self._releasing.setdefault(object_id.hex, trio.Lock())
        async with lock:
            try:
                return await self._release(object_id, close_code, reason, inline_bytes)
            finally:
                if not lock.statistics().tasks_waiting:
                    del self._releasing[object_id.hex]

    async def _release(
        self, object_id: ObjectId, close_code: int, reason: str, inline_bytes: int
    ) -> Released | None:
        runtime = self._runtime
        while (activation := runtime.table.find(object_id)) is not None:
            activation.request_eviction("moved")  # after its queued turns; closed without a checkpoint
            await activation.evicted.wait()
        runtime.sockets.close_moved(object_id, close_code, reason)
        path = runtime.object_path(object_id)
        legacy = runtime.legacy_object_path(object_id)

        def read() -> tuple[tuple[int, str, bytes | None] | None, CatalogEntry | None]:
            # The catalog read too: off the event loop, which it would stop while a catalog
            # transaction (a discard's, an adoption's) holds the catalog's lock through its fsync.
            return contents(path, legacy, inline_bytes), runtime.catalog.get(object_id.hex)

        found, entry = await self._work.off_loop(read)
        if found is None:
            if entry is not None:  # the catalog ran ahead of a file never made (a crash between)
                await self._work.off_loop(functools.partial(runtime.catalog.forget_all, [object_id.hex]))
                runtime.alarms.set(object_id, None)
            return None
        size, digest, data = found
        if data is not None:  # its WAL (if any) stays: folded at a clean shutdown unless discarded first
            self.unfolded.add(path)
        return Released(object_id, path, size, digest, None if entry is None else entry.alarm, data)

    #### Adopt

    async def adopt(self, arrivals: Sequence[Arrival]) -> list[AdoptOutcome]:
        results: dict[int, AdoptOutcome] = {}
        keys: set[str] = set()  # this call's, in ``_arriving`` from before the catalog is read
        for i, arrival in enumerate(arrivals):
            object_id = arrival.object_id
            if object_id.hex in keys or object_id.hex in self._arriving:  # its staged file is the other's
                results[i] = _failed(object_id, InvalidArgument(f"{object_id} is arriving twice at once"))
            else:
                keys.add(object_id.hex)
        self._arriving |= keys
        try:
            return await self._adopt(arrivals, results, keys)
        finally:
            self._arriving -= keys

    async def _adopt(
        self, arrivals: Sequence[Arrival], results: dict[int, AdoptOutcome], keys: set[str]
    ) -> list[AdoptOutcome]:
        runtime = self._runtime
        # Off the event loop (see ``_release``); read after the ids entered ``_arriving``, so an
        # adoption of one of them that finished before is seen here, and one that starts later fails.
        held = await self._work.off_loop(functools.partial(runtime.catalog.held, sorted(keys)))
        unwanted: list[Path] = []  # staged files to delete
        todo: list[int] = []
        for i, arrival in enumerate(arrivals):
            object_id = arrival.object_id
            if i in results:
                continue
            if object_id.cls not in runtime.app.classes:
                results[i] = _failed(object_id, UnknownClass(f"no class {object_id.cls!r} in this App"))
            elif object_id.hex in held or runtime.table.find(object_id) is not None:
                results[i] = AdoptOutcome(object_id, "already_held")
            else:
                todo.append(i)
                continue
            if arrival.data is None:
                unwanted.append(staged(runtime.object_path(object_id)))
        files: list[Placement] = [
            (runtime.object_path(a.object_id), a.sha256_hex, a.data) for a in (arrivals[i] for i in todo)
        ]
        try:
            if unwanted:
                await self._work.off_loop(functools.partial(delete_files, unwanted, ("",)))
            problems = await self._work.off_loop(functools.partial(place_all, files))
        except Exception as exc:
            raise runtime.internal_error(exc, f"placing {len(todo)} arriving files") from None
        stored: list[int] = []
        for i, problem in zip(todo, problems, strict=True):
            if problem is None:
                stored.append(i)
            else:
                object_id = arrivals[i].object_id
                results[i] = _failed(object_id, InvalidArgument(f"{object_id}: {problem}"))
        if stored:
            await self._commit_arrivals([arrivals[i] for i in stored])
        for i in stored:
            results[i] = AdoptOutcome(arrivals[i].object_id, "stored")
        return [results[i] for i in range(len(arrivals))]

    async def _commit_arrivals(self, arrivals: list[Arrival]) -> None:
        """Make the placed files and their folder entries durable, then record them in the catalog,
        each step with the arrivals of the batches adopted meanwhile (one barrier, then one catalog
        transaction), as a node receives from several senders at once. The steps are two rounds, so
        while one batch's entries commit the next batch's barrier runs: an entry still commits only
        after its own file's barrier."""
        await self._barrier_rounds.submit(arrivals)
        await self._catalog_rounds.submit(arrivals)

    async def _barrier_round(self, arrivals: list[Arrival]) -> None:
        runtime, durable = self._runtime, self._runtime.durable_folders
        files = [runtime.object_path(arrival.object_id) for arrival in arrivals]
        folders = {path.parent for path in files}
        unknown = {d for path in files for d in path.parents[:3] if str(d) not in durable}
        folders.update(d.parent for d in unknown)
        try:
            await self._work.barrier(files, folders)
        except Exception as exc:
            # Files under their real names but no entry: not held here (see the module docstring).
            raise runtime.internal_error(exc, f"adopting {len(arrivals)} objects") from None
        durable.update(str(d) for d in unknown)

    async def _catalog_round(self, arrivals: list[Arrival]) -> None:
        runtime = self._runtime
        entries = [(arrival.object_id, arrival.alarm) for arrival in arrivals]
        record = functools.partial(runtime.catalog.record_all, entries, runtime.clock.now())
        try:
            await self._work.off_loop(record)
        except Exception as exc:
            raise runtime.internal_error(exc, f"adopting {len(arrivals)} objects") from None
        for arrival in arrivals:
            runtime.alarms.set(arrival.object_id, arrival.alarm)

    #### Discard

    async def discard(self, object_ids: Sequence[ObjectId]) -> None:
        runtime = self._runtime
        for object_id in object_ids:
            if runtime.table.find(object_id) is not None:
                raise RuntimeError(f"discard({object_id}): it is live here; release it first")
        await self._discard_rounds.submit(list(object_ids))  # with the batches discarded meanwhile

    async def _discard_round(self, object_ids: list[ObjectId]) -> None:
        runtime = self._runtime
        await self._work.off_loop(functools.partial(runtime.catalog.forget_all, [i.hex for i in object_ids]))
        for object_id in object_ids:
            runtime.alarms.set(object_id, None)
        paths: list[Path] = []
        for object_id in object_ids:
            paths.append(runtime.object_path(object_id))
            self.unfolded.discard(paths[-1])
            legacy = runtime.legacy_object_path(object_id)
            if legacy is not None:
                paths.append(legacy)
        # No barrier after the deletions: once the catalog no longer lists an object this node does
        # not hold it, so a file a crash brings back is harmless (see the crash points); only its
        # disk space waits for the next flush. (A barrier here cost a syncfs per batch moved.)
        await self._work.off_loop(functools.partial(delete_files, paths))

    async def fold_released(self) -> list[Path]:
        """At a clean shutdown (nothing live): fold the WAL of each file listed in ``unfolded``,
        unsynced; the files whose WAL is left to delete once they are durable (``_folds.py``)."""
        paths, self.unfolded = sorted(self.unfolded), set()
        if not paths:
            return []
        return await self._work.off_loop(functools.partial(fold_wal_files, paths))


def _failed(object_id: ObjectId, error: ActorError) -> AdoptOutcome:
    return AdoptOutcome(object_id, "failed", error)
