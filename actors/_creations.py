"""Creation rounds: the new objects of many activations made durable together.

Guarantees
- **Reply after durable creation.** ``create`` returns only once the object's catalog entry is
  committed (fsynced) and its file is durable under its real name: the image written to
  ``<name>.new``, fsynced, renamed into place, and the folder (and the parent of every folder made
  for it) fsynced. A file under the real name is always complete: a crash leaves at most a ``.new``
  (overwritten by the next attempt).
- **The catalog may run ahead of the files, never behind.** No file of a round is renamed into place
  before the round's catalog transaction committed. A crash in between leaves entries without files,
  which the catalog allows (an object with no data).
- **A failed creation fails exactly its own calls.** A file that cannot be written, fsynced or renamed
  fails only its own ``create``; a folder whose fsync fails fails the files renamed into it (or made
  under it). Only a failed catalog transaction fails every creation of its round: none of them has
  an entry then, and none of their files is renamed into place. So does a failed ``syncfs`` with
  ``Settings.sync_volume`` (it cannot say whose data it lost), and any unexpected error of a
  round's job: a round always ends, and never reports durable a creation it did not finish.

Mechanism: one round is in flight at a time and holds every creation asked for since the previous
round started (the self-clocking group commit of ``_durability.py``). A round requested with none in
flight starts at once. It runs in the sync pool in two stages, with no thread ever waiting on
another: first the catalog transaction (one fsync for the whole round) in parallel with parts that
make the missing folders and write and fsync the ``.new`` files; the last job of that stage submits
the second: parts that each take whole folders, rename the round's files into them and fsync each
folder once, however many of the round's files it received. The last part hands the round back to
the trio thread with one ``run_sync_soon``. So a creation costs two fsyncs of its own (its file and,
shared, its folder) and a share of one catalog fsync, and thread hand-offs are paid per round, not
per object: before, each creation was a pool job of its own with three fsyncs (catalog, file, folder).
With ``Settings.sync_volume`` the files are written without fsync, and the thread that ends the
first stage makes one ``syncfs`` of the data volume, renames every file and makes another: two
flushes per round instead of two per object.

XX: the catalog's fsync and the first stage's run in parallel, but a large round's second stage only
starts when the slowest ``.new`` fsync ends; pipelining the stages across rounds would bound that.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import outcome
import trio

from ._file import fsync_path, write_file
from ._syncpool import SyncPool, back_on_trio

if TYPE_CHECKING:
    from ._catalog import Catalog
    from ._ids import ObjectId

#: parallel parts of a stage (concurrent fsyncs on the disk; the pool has ``FSYNC_THREADS``)
CREATION_PARTS: Final = 8


class Creation:
    """One new object's file: what to write where, and who waits for it."""

    __slots__ = ("alarm", "error", "folders", "image", "made", "object_id", "path", "task")

    def __init__(self, object_id: ObjectId, path: Path, image: bytes, alarm: float | None) -> None:
        self.object_id = object_id
        self.path = path
        self.image = image
        self.alarm = alarm
        #: the folders whose fsync makes this file's name durable (its own, and parents of new ones)
        self.folders: tuple[str, ...] = ()
        #: the folders above it not known durable when its round started (made if missing)
        self.made: tuple[str, ...] = ()
        #: why it failed (None: durable)
        self.error: BaseException | None = None
        self.task: trio.lowlevel.Task | None = None


class CreationRound:
    """The creations one round makes durable (its fields are written by pool threads)."""

    __slots__ = ("_lock", "_remaining", "creations", "folder_errors", "folders", "round_error")

    def __init__(self, creations: list[Creation]) -> None:
        self.creations = creations
        #: folder -> the round's files to rename into it (parents of new folders: none, fsync only)
        self.folders: dict[str, list[Creation]] = {}
        #: folder -> why its fsync failed
        self.folder_errors: dict[str, BaseException] = {}
        #: fails every creation of the round: the catalog transaction failed (or a ``syncfs``)
        self.round_error: BaseException | None = None
        self._remaining = 0
        self._lock = threading.Lock()

    def count_down(self) -> bool:
        """A job of the current stage ended: True for the last one."""
        with self._lock:
            self._remaining -= 1
            return self._remaining == 0


class Creations:
    """Creation rounds of one runtime (see the module docstring)."""

    def __init__(
        self,
        pool: SyncPool,
        catalog: Catalog,
        durable_folders: set[str],
        now: Callable[[], float],
        *,
        sync_volume: Callable[[], None] | None = None,
    ) -> None:
        self._pool = pool
        #: ``syncfs`` of the data volume (``Settings.sync_volume``): it replaces every file's and
        #: folder's fsync of a round (one before the renames, one after); None: fsync each
        self._sync_volume = sync_volume
        self._catalog = catalog
        #: folders known to exist with a durable entry (shared with ``ObjectFile``s and moves)
        self._durable = durable_folders
        #: epoch seconds, for the catalog's ``created``
        self._now = now
        self._waiting: list[Creation] = []
        self._round: CreationRound | None = None

    @property
    def waiting(self) -> int:
        """Creations waiting for the next round."""
        return len(self._waiting)

    async def create(self, object_id: ObjectId, path: Path, image: bytes, alarm: float | None) -> None:
        """Make the object durable: ``image`` as its file at ``path``, and a catalog entry with
        ``alarm``. Returns once both are durable; raises what made it fail (then its file is not
        under ``path``, unless only a folder's fsync failed: the outcome is unknown). Uncancellable
        once called, like a shielded thread: the round it joined is seen through."""
        creation = Creation(object_id, path, image, alarm)
        creation.task = trio.lowlevel.current_task()
        self._waiting.append(creation)
        if self._round is None:
            self._start()
        await trio.lowlevel.wait_task_rescheduled(lambda _: trio.lowlevel.Abort.FAILED)
        if creation.error is not None:
            raise creation.error

    def _start(self) -> None:
        creations, self._waiting = self._waiting, []
        durable = self._durable
        for creation in creations:
            folder = os.path.dirname(creation.path)
            if folder in durable:  # and so are those above it: a folder is added with its parents
                creation.folders = (folder,)
                continue
            # Folders not known durable: made if missing, and their parents fsynced (even if another
            # round made them: it may not have fsynced yet). Known ones cost no stat, mkdir or fsync.
            parents = creation.path.parents
            made = creation.made = tuple(str(d) for d in parents[:3] if str(d) not in durable)
            creation.folders = (folder, *(os.path.dirname(d) for d in made))
        current = self._round = CreationRound(creations)
        finish = back_on_trio(self._complete, current)

        sync_volume = self._sync_volume

        def stage_done(result: outcome.Outcome[Any]) -> None:
            if isinstance(result, outcome.Error):  # a bug of ours: fail the round, never hang it
                current.round_error = result.error
            if not current.count_down():
                return
            try:
                if sync_volume is None:
                    self._second_stage(current, finish)
                    return
                _rename_with_syncfs(current, sync_volume)
            except BaseException as exc:  # (as above: the creators must hear back)
                current.round_error = exc
            finish()

        rows = [(c.object_id, c.alarm) for c in creations]
        now = self._now()

        def record() -> None:
            try:
                self._catalog.record_all(rows, now)
            except BaseException as exc:
                current.round_error = exc

        parts = min(len(creations), CREATION_PARTS)
        current._remaining = parts + 1
        self._pool.submit(record, stage_done)
        for start in range(parts):
            self._pool.submit(_write_part(creations[start::parts], fsync=sync_volume is None), stage_done)

    def _second_stage(self, current: CreationRound, finish: Callable[[], None]) -> None:
        """In the pool thread that ended the first stage: the renames and folder fsyncs, in parts
        that each take whole folders (so each folder is fsynced once, after its last rename)."""
        if current.round_error is not None:
            raise current.round_error  # nothing is renamed: no file may get ahead of the catalog
        folders = current.folders
        for creation in current.creations:
            for folder in creation.folders:
                folders.setdefault(folder, [])
            if creation.error is None:
                folders[creation.folders[0]].append(creation)
        names = list(folders)
        parts = min(len(names), CREATION_PARTS)
        current._remaining = parts

        def done(result: outcome.Outcome[Any]) -> None:
            if isinstance(result, outcome.Error):  # a bug of ours: fail the round, never hang it
                current.round_error = result.error
            if current.count_down():
                finish()

        for start in range(parts):
            self._pool.submit(_folder_part(current, names[start::parts]), done)

    def _complete(self, finished: CreationRound) -> None:
        """On the trio thread: start the next round, then wake this one's creators."""
        if self._round is not finished:
            return  # completed already (only after a bug of ours made two jobs finish it)
        self._round = None
        if self._waiting:
            self._start()
        failed = finished.folder_errors
        for creation in finished.creations:
            error = finished.round_error or creation.error
            if error is None:
                error = next((failed[f] for f in creation.folders if f in failed), None)
            if error is None and creation.made:
                self._durable.update(creation.made)  # made, and its entry fsynced in its parent
            creation.error = error
            creation.image = b""
            task, creation.task = creation.task, None
            assert task is not None
            trio.lowlevel.reschedule(task)


def _write_part(creations: list[Creation], *, fsync: bool) -> Callable[[], None]:
    def write() -> None:
        for creation in creations:
            try:
                if creation.made:
                    # Parts run in parallel: each makes what its files need (exist_ok: races are fine).
                    os.makedirs(creation.path.parent, exist_ok=True)
                # ``<name>.new``: the image, under a name no reader looks at
                write_file(f"{creation.path}.new", creation.image, fsync=fsync)
            except Exception as exc:  # this file fails; the others go on
                creation.error = exc

    return write


def _rename_with_syncfs(current: CreationRound, sync_volume: Callable[[], None]) -> None:
    """With ``sync_volume``, in the thread that ended the first stage: ``syncfs`` (every ``.new``
    and folder made is durable), the renames, ``syncfs`` again (every new name is durable). A
    failed ``syncfs`` cannot say whose data it lost: it fails every creation of the round."""
    if current.round_error is not None:
        return  # nothing is renamed: no file may get ahead of the catalog
    try:
        sync_volume()
    except Exception as exc:
        current.round_error = exc
        return
    for creation in current.creations:
        if creation.error is None:
            try:
                os.rename(f"{creation.path}.new", creation.path)
            except Exception as exc:  # this file fails; the others go on
                creation.error = exc
    try:
        sync_volume()
    except Exception as exc:
        current.round_error = exc


def _folder_part(current: CreationRound, names: list[str]) -> Callable[[], None]:
    def rename_and_fsync() -> None:
        folders = current.folders
        for name in names:
            for creation in folders[name]:
                try:
                    os.rename(f"{creation.path}.new", creation.path)
                except Exception as exc:  # this file fails; the folder is still fsynced
                    creation.error = exc
            try:
                fsync_path(name)
            except Exception as exc:
                current.folder_errors[name] = exc

    return rename_and_fsync
