"""WAL files a crash left behind: folded into their objects' files by the next clean shutdown.

Guarantee
- After a clean shutdown no object file has a ``-wal`` beside it, even if an earlier run crashed and
  some of the objects it had open were not used since. (Every eviction folds its WAL in, ``_folds.py``;
  only a crash, or a version before that, leaves ``-wal`` files; SQLite applies one whenever its file is
  next opened, so they never lose or hide data, they only break the one-file-per-object promise.)

Mechanism: the catalog marks the data folder as in use at start (``Catalog.begin_run``) and clears
the mark at the end of a clean shutdown (``end_run``). A start that finds the mark still set (the run
before crashed), or a catalog from a version without it, lists the ``-wal`` files under ``objects/``
(in a worker thread: about a second at a million files; other starts list nothing). At the clean
shutdown, once every object was evicted (so none is open and none can open), each listed file that
still has its ``-wal`` is opened and closed with a checkpoint, which folds the WAL in and deletes it,
crash-safely, as SQLite always does.
"""

from __future__ import annotations

import functools
import logging
import os
from pathlib import Path

import apsw
import trio

from ._walfold import fold_wal

log = logging.getLogger("actors")


class Leftovers:
    """The ``-wal`` files a crashed run left: listed at start (``find``), folded at a clean shutdown."""

    def __init__(self, objects: Path, *, in_thread: bool) -> None:
        self._objects = objects
        #: list and fold in worker threads (off: inline, for the deterministic test harness)
        self._in_thread = in_thread
        self._paths: list[Path] = []
        self._found = trio.Event()

    async def find(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        if self._in_thread:
            self._paths = await trio.to_thread.run_sync(find_wal_files, self._objects)
        else:
            self._paths = find_wal_files(self._objects)
        self._found.set()

    async def fold(self) -> list[Path]:
        """Once listed, fold every listed WAL still there, unsynced (precondition: the runtime has
        drained); returns the files whose WAL is left to delete once they are durable (``_folds.py``)."""
        await self._found.wait()
        fold = functools.partial(fold_wal_files, self._paths)
        if self._in_thread:
            return await trio.to_thread.run_sync(fold)
        return fold()


def find_wal_files(objects: Path) -> list[Path]:
    """The object files under ``objects`` (both layouts) that have a ``-wal`` beside them."""
    found: list[Path] = []
    for folder, _, names in os.walk(objects):
        found.extend(Path(folder, name[:-4]) for name in names if name.endswith(".sqlite3-wal"))
    return found


def fold_wal_files(paths: list[Path]) -> list[Path]:
    """Fold the WAL of each file of ``paths`` that still has one, unsynced (``fold_wal``); returns the
    files whose WAL was left to delete once they are durable."""
    folded, left = 0, []
    for path in paths:
        if not os.path.exists(f"{path}-wal"):
            continue  # used (and evicted, checkpointing) since, or deleted
        try:
            if fold_wal(path, sync=False):
                left.append(path)
            folded += 1
        except (apsw.Error, RuntimeError) as exc:
            log.warning("could not fold the WAL of %s into it: %s", path, exc)
    if folded:
        log.info("folded %d leftover WAL files into their objects' files", folded)
    return left
