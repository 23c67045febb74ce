"""A clean shutdown's WAL folds, made durable together: one barrier for every object file.

Guarantees
- After a clean shutdown no object file has a ``-wal`` beside it (as every eviction promises), and
  each file holds all of its WAL's frames, durably.
- No less crash-safe than SQLite's own checkpoint on close: a WAL stays, whole, until a barrier has
  made its file durable with those frames written in. A crash before that finds the WAL and SQLite
  applies it again at the next open (its frames are the very pages already written, so applying
  them twice changes nothing), and the next start's leftover scan (``_leftovers.py``) folds it.
- If the barrier fails, no WAL is deleted and :meth:`ShutdownFolds.finish` raises: the runtime then
  leaves its run marked unfinished, so the next start lists and folds them.

Why: a checkpoint on close fsyncs its file, and on this project's VM (ext4 on a virtual disk) each
fsync is a flush of the device that the disk serves one after the other, about 4 ms, whatever the
parallelism: 2,000 live objects took 8 s to drain, and at the default cap of live objects a drain
would outlast ``DRAIN_TIMEOUT_SECONDS``. Now each eviction of the drain writes its WAL's pages into
the file without an fsync (``ObjectFile.close(sync=False)``), and one barrier (``syncfs`` of the data
folder's file system, or an fsync of each file in parallel in the fsync pool where the C library has
no ``syncfs``) makes them all durable; then the WAL files are deleted.
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Awaitable, Callable
from pathlib import Path

__all__ = ["ShutdownFolds"]

Barrier = Callable[[list[Path], set[Path]], Awaitable[None]]
OffLoop = Callable[[Callable[[], None]], Awaitable[None]]


class ShutdownFolds:
    """Object files whose WAL was folded in without an fsync, and what ends them."""

    def __init__(self, barrier: Barrier, off_loop: OffLoop) -> None:
        #: makes the given files durable (``MoveWork.barrier``)
        self._barrier = barrier
        #: runs a blocking function off the event loop (``MoveWork.off_loop``)
        self._off_loop = off_loop
        self._files: list[Path] = []

    def __len__(self) -> int:
        return len(self._files)

    def add(self, path: Path) -> None:
        """``path``'s WAL was folded in unsynced (``ObjectFile.close(sync=False)`` returned True)."""
        self._files.append(path)

    async def finish(self) -> None:
        """Make every added file durable, then delete their WAL files. Raises if the barrier failed
        (no WAL is deleted then)."""
        files, self._files = self._files, []
        if files:
            await self._barrier(files, set())
            await self._off_loop(functools.partial(_delete_wal_files, files))


def _delete_wal_files(files: list[Path]) -> None:
    # No fsync of the folders: a deletion the disk forgets leaves a WAL of frames the file already
    # holds durably, which SQLite applies again harmlessly (SQLite deletes its WAL so on close too).
    for path in files:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(f"{path}-wal")
