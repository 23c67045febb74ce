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
  ``"stored"``: its staged bytes matched the SHA-256, were fsynced, renamed to the real name, the
  folder entries fsynced, and its catalog entry (with its alarm) committed; then its alarm is
  scheduled. Nothing is activated. An object this node already holds keeps its copy
  (``"already_held"``). A staged file a transfer left unfinished is deleted when the runtime opens.
- **Discard** (``Runtime.discard``, once the new owner confirmed): this node no longer holds the
  objects when it returns: their catalog entries are gone durably, their alarms cancelled, their files
  deleted (the deletions are made durable by the filesystem's next flush, not waited for).

Mechanism: release is an eviction with the reason ``moved`` (which closes without a checkpoint),
then, in a worker thread, either a read of the database as one image (``serialize``) and its hash, or
for a big one a checkpoint and a hash of the file. Adopt works in
three steps, each waiting for the last, all in one worker thread: every staged file is hashed and
renamed to its real name; one *barrier* makes every file and folder entry of the batch durable; one
catalog transaction records the batch. Until that transaction commits no file of the batch is held
here (see the crash points), so the order in which the barrier makes them durable does not matter.
The barrier is ``syncfs(2)`` of the data folder's filesystem where the C library has it (Linux):
one journal commit for the whole batch, where an fsync of each file and of each folder it entered
(the fallback, run in parallel in the runtime's fsync pool) costs two flushes per object. Measured
on 2 cores, ext4 on a virtual disk (``tests/benchmarks/bench_moves.py``, batches of 64 files of
16 KiB): adopt alone 3,300-4,700 objects/s with ``syncfs``, 1,900-2,600 with the fallback; writing
the staged files first (the cluster's part) costs as much again or more on that disk (creating a
file takes 0.04-1.3 ms there, depending on the moment).

Crash points
- Before adopt's catalog commit, an arriving file may be under its real name already, but with no
  catalog entry this node does not hold it (``holds`` is False, not listed, no alarm): the cluster
  retries the move and adopt replaces the file (and any ``-wal`` beside it).
- Discard commits the catalog first, then deletes the files; a crash between leaves files with no entry,
  which this node does not hold, as above. Such a stale copy is safe only because the cluster never
  lets a node activate an object it does not own, and an object comes back to a node only through
  adopt, which replaces it. (The other order could leave an entry without a file, and a later adopt
  would answer ``already_held`` for an object whose data is gone.)

XX: files a crash in discard left without an entry are never found again (short of a walk of every
object folder); they hold disk space until the object is adopted here again.
XX: ``syncfs`` writes back everything dirty on the filesystem, other objects' WAL frames and
checkpoints included, so on a node with much unsynced data one barrier costs more; it stays one
flush per batch. Before Linux 5.8 it may not report a write-back error of another process's file
(PostgreSQL documents the same for ``recovery_init_sync_method=syncfs``).
XX: release reads the whole file to hash it; a multi-gigabyte object costs seconds of disk reads (in a
worker thread). The cluster could hash while it streams instead.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal, Protocol, TypeVar

import apsw
import outcome
import trio

from ._file import fsync_path, move_legacy_file
from ._ids import ObjectId
from ._leftovers import fold_wal, fold_wal_files
from ._rounds import Rounds
from ._syncpool import SYNCFS, call_syncfs
from .errors import ActorError, InvalidArgument, UnknownClass

if TYPE_CHECKING:
    from ._runtime import Runtime

__all__ = [
    "AdoptOutcome", "Arrival", "Gate", "Released", "remove_staged_files", "remove_unfinished_transfers"
]

log = logging.getLogger("actors")

#: appended to an object's file name while its bytes arrive from another node
STAGED_SUFFIX: Final = ".incoming"
#: a file in the data folder, made durably before the first file of a run is staged: only while it
#: exists does start-up list every object file to delete staged ones (a second at a million objects)
STAGING_MARKER: Final = "staging.marker"
#: files beside an object's database that belong to it (its WAL, the WAL's index, a rollback journal)
_COMPANIONS: Final = ("-wal", "-shm", "-journal")

T = TypeVar("T")


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
    """An object whose file was written to ``Runtime.staging_path(object_id)``, to be adopted."""

    object_id: ObjectId
    sha256_hex: str  # what the staged file must hash to
    alarm: float | None  # its pending alarm (epoch seconds), scheduled here once adopted


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
        #: releases in progress, by hex id: a second release of one object waits for the first
        self._releasing: dict[str, trio.Lock] = {}
        #: files whose WAL was left beside them (a release sent as an image, a reset): folded at a
        #: clean shutdown unless deleted first
        self.unfolded: set[Path] = set()
        self._arrival_rounds = Rounds(self._commit_round)
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
        return _staged(path)

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
        found = await self._off_loop(
            functools.partial(_contents, path, runtime.legacy_object_path(object_id), inline_bytes)
        )
        entry = runtime.catalog.get(object_id.hex)
        if found is None:
            if entry is not None:  # the catalog ran ahead of a file never made (a crash between)
                await self._off_loop(functools.partial(runtime.catalog.forget_all, [object_id.hex]))
                runtime.alarms.set(object_id, None)
            return None
        size, digest, data = found
        if data is not None:  # its WAL (if any) stays: folded at a clean shutdown unless discarded first
            self.unfolded.add(path)
        return Released(object_id, path, size, digest, None if entry is None else entry.alarm, data)

    #### Adopt

    async def adopt(self, arrivals: Sequence[Arrival]) -> list[AdoptOutcome]:
        runtime = self._runtime
        results: dict[int, AdoptOutcome] = {}
        held = runtime.catalog.held([arrival.object_id.hex for arrival in arrivals])
        unwanted: list[Path] = []  # staged files to delete
        todo: list[int] = []
        seen: set[str] = set()
        for i, arrival in enumerate(arrivals):
            object_id = arrival.object_id
            if object_id.hex in seen:  # its staged file is the first one's
                results[i] = _failed(object_id, InvalidArgument(f"{object_id} is twice in one batch"))
                continue
            seen.add(object_id.hex)
            if object_id.cls not in runtime.app.classes:
                results[i] = _failed(object_id, UnknownClass(f"no class {object_id.cls!r} in this App"))
            elif object_id.hex in held or runtime.table.find(object_id) is not None:
                results[i] = AdoptOutcome(object_id, "already_held")
            else:
                todo.append(i)
                continue
            unwanted.append(_staged(runtime.object_path(object_id)))
        paths = [runtime.object_path(arrivals[i].object_id) for i in todo]
        shas = [arrivals[i].sha256_hex for i in todo]
        try:
            problems = await self._off_loop(functools.partial(_place_all, paths, shas, unwanted))
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
        """Make the placed files and their folder entries durable, then record them in the catalog:
        with the arrivals of the batches adopted meanwhile, in one round (one barrier, one catalog
        transaction), as a node receives from several senders at once."""
        await self._arrival_rounds.submit(arrivals)

    async def _commit_round(self, arrivals: list[Arrival]) -> None:
        runtime, durable = self._runtime, self._runtime.durable_folders
        files = [runtime.object_path(arrival.object_id) for arrival in arrivals]
        folders = {path.parent for path in files}
        unknown = {d for path in files for d in path.parents[:3] if str(d) not in durable}
        folders.update(d.parent for d in unknown)
        try:
            await self._barrier(files, folders)
            entries = [(arrival.object_id, arrival.alarm) for arrival in arrivals]
            now = runtime.clock.now()
            await self._off_loop(functools.partial(runtime.catalog.record_all, entries, now))
        except Exception as exc:
            # Files under their real names but no entry: not held here (see the module docstring).
            raise runtime.internal_error(exc, f"adopting {len(arrivals)} objects") from None
        durable.update(str(d) for d in unknown)
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
        await self._off_loop(functools.partial(runtime.catalog.forget_all, [i.hex for i in object_ids]))
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
        await self._off_loop(functools.partial(_delete_files, paths))

    async def fold_released(self) -> None:
        """At a clean shutdown (nothing live): fold the WAL of each file listed in ``unfolded``."""
        paths, self.unfolded = sorted(self.unfolded), set()
        if paths:
            await self._off_loop(functools.partial(fold_wal_files, paths))

    #### Blocking work

    async def _off_loop(self, fn: Callable[[], T]) -> T:
        """``fn()`` in a worker thread (inline without ``io_in_threads``); a cancel waits for it."""
        if self._runtime.io_in_threads:
            return await trio.to_thread.run_sync(fn)
        return fn()

    async def _barrier(self, files: list[Path], folders: set[Path]) -> None:
        """Make ``files`` and the entries of ``folders`` durable: one ``syncfs`` of the data folder's
        filesystem, or (without it) an fsync of each, in parallel in the fsync pool."""
        if _syncfs is not None:
            await self._off_loop(functools.partial(_sync_filesystem, self._runtime.data_dir))
            return
        for result in await self._in_pool([functools.partial(fsync_path, p) for p in [*files, *folders]]):
            result.unwrap()

    async def _in_pool(self, jobs: Sequence[Callable[[], Any]]) -> list[outcome.Outcome[Any]]:
        """Run ``jobs`` at once in the runtime's fsync pool (inline without ``io_in_threads``);
        returns their outcomes in order once all are done. Uncancellable: started work is seen through."""
        if not self._runtime.io_in_threads:
            return [outcome.capture(job) for job in jobs]
        results: list[Any] = [None] * len(jobs)
        if not jobs:
            return results
        token, done = trio.lowlevel.current_trio_token(), trio.Event()
        lock, remaining = threading.Lock(), [len(jobs)]

        def finished(i: int, result: outcome.Outcome[Any]) -> None:
            results[i] = result
            with lock:
                remaining[0] -= 1
                last = remaining[0] == 0
            if last:
                token.run_sync_soon(done.set)

        for i, job in enumerate(jobs):
            self._runtime.sync_pool.submit(job, functools.partial(finished, i))
        with trio.CancelScope(shield=True):
            await done.wait()
        return results


def _failed(object_id: ObjectId, error: ActorError) -> AdoptOutcome:
    return AdoptOutcome(object_id, "failed", error)


def _staged(path: Path) -> Path:
    return path.with_name(path.name + STAGED_SUFFIX)


def _contents(path: Path, legacy: Path | None, inline_bytes: int) -> tuple[int, str, bytes | None] | None:
    """Size, SHA-256 and (up to ``inline_bytes``) the bytes of the object's database as one
    self-contained file, or None when it has no file.

    A small database is read as one image through SQLite (its WAL's frames applied), so it needs
    neither a checkpoint nor an fsync here; the file and its WAL stay as they are until discarded. A
    bigger one is checkpointed into its file (its WAL folded in and deleted), which is then sent from
    disk in chunks.
    """
    if legacy is not None and not path.exists() and legacy.exists():
        move_legacy_file(legacy, path)
    if not path.exists():
        return None
    wal = f"{path}-wal"
    has_wal = os.path.exists(wal)
    if has_wal and path.stat().st_size + os.path.getsize(wal) <= inline_bytes:
        image = _image(path)
        return len(image), hashlib.sha256(image).hexdigest(), image
    if has_wal or os.path.exists(f"{path}-shm"):
        fold_wal(path)
    with open(path, "rb") as file:
        size = os.fstat(file.fileno()).st_size
        if size <= inline_bytes:
            data = file.read()
            return len(data), hashlib.sha256(data).hexdigest(), data
        return size, hashlib.file_digest(file, "sha256").hexdigest(), None


def _image(path: Path) -> bytes:
    """The database at ``path`` with its WAL applied, as the bytes of one file (WAL mode in its header)."""
    conn = apsw.Connection(str(path), flags=apsw.SQLITE_OPEN_READWRITE)
    try:
        conn.config(apsw.SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, 1)  # leave the file and its WAL as they are
        conn.execute("PRAGMA locking_mode=EXCLUSIVE").fetchall()  # as the runtime opens it: no -shm
        return bytes(conn.serialize("main") or b"")
    finally:
        conn.close()


def _place_all(paths: list[Path], shas: list[str], unwanted: list[Path]) -> list[str | None]:
    """Delete the ``unwanted`` staged files; check each staged file of ``paths`` against its SHA-256
    and rename it to its path (not durably yet: see ``Moves._barrier``).

    Returns, per path, None once placed or why not (that staged file is then deleted). Any file
    already at a path belongs to no one (see the module docstring): it and its WAL are replaced.
    """
    for staged in unwanted:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(staged)
    problems: list[str | None] = []
    for path, sha256_hex in zip(paths, shas, strict=True):
        staged = _staged(path)
        try:
            with open(staged, "rb") as file:
                digest = hashlib.file_digest(file, "sha256").hexdigest()
        except FileNotFoundError:
            problems.append(f"no staged file at {staged}")
            continue
        if digest != sha256_hex:
            os.unlink(staged)
            problems.append(f"the staged file's SHA-256 is {digest}, not {sha256_hex}; deleted")
            continue
        for suffix in _COMPANIONS:  # a stale WAL would be applied to the new file
            with contextlib.suppress(FileNotFoundError):
                os.unlink(f"{path}{suffix}")
        os.rename(staged, path)
        problems.append(None)
    return problems


def _delete_files(paths: list[Path]) -> None:
    """Delete each object file and its companions (not durably: see ``Moves.discard``)."""
    for path in paths:
        for suffix in ("", *_COMPANIONS):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(f"{path}{suffix}")


#: ``syncfs(2)``, or None where the C library lacks it (a name of its own: tests turn it off)
_syncfs = SYNCFS


def _sync_filesystem(folder: Path) -> None:
    """``syncfs(2)``: everything written to ``folder``'s filesystem is durable when this returns."""
    assert _syncfs is not None
    fd = os.open(folder, os.O_RDONLY)
    try:
        call_syncfs(_syncfs, fd, folder)
    finally:
        os.close(fd)


def remove_unfinished_transfers(data_dir: Path, *, older_folder: bool) -> int:
    """At start-up: delete staged files if a transfer may have been cut short (the staging marker
    exists, or the folder comes from a version without the marker); returns how many were found."""
    marker = data_dir / STAGING_MARKER
    if not older_folder and not marker.exists():
        return 0
    removed = remove_staged_files(data_dir / "objects")
    marker.unlink(missing_ok=True)  # if this is lost in a crash, the next start lists the files again
    return removed


def remove_staged_files(objects: Path) -> int:
    """Delete every staged file under ``objects`` (transfers that did not finish); returns how many.

    Staged files are only ever made in the ``<Class>/<h0h1>/`` folders, so only those are listed (not
    the older layout's deeper folders).
    """
    removed = 0
    if not objects.is_dir():
        return removed
    for class_dir in os.scandir(objects):
        if not class_dir.is_dir():
            continue
        for shard in os.scandir(class_dir.path):
            if not shard.is_dir():
                continue
            for entry in os.scandir(shard.path):
                if entry.name.endswith(STAGED_SUFFIX):
                    os.unlink(entry.path)
                    removed += 1
    if removed:
        log.warning("deleted %d staged files of transfers that did not finish", removed)
    return removed
