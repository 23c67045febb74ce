"""Evictions' WAL folds, made durable together: one barrier for many object files.

Guarantees
- An evicted object's file ends self-contained: once the barrier of the fold round that holds it has
  ended, its ``-wal`` is deleted (unless the object was activated again meanwhile: its WAL is then
  in use again, and its next eviction folds it). After a clean shutdown no object file has a
  ``-wal`` beside it, and each file holds all of its WAL's frames, durably.
- No less crash-safe than SQLite's own checkpoint on close: a WAL stays, whole, until a barrier has
  made its file durable with those frames written in. A crash before that finds the WAL and SQLite
  applies it again at the next open (its frames are the very pages already written, so applying
  them twice changes nothing), and the next start's leftover scan (``_leftovers.py``) folds it.
- A WAL is never deleted under a writer: whatever opens an object's file again first calls
  :meth:`Folds.settle` (``ObjectFile.before_open``), which takes it out of every round; rounds delete WAL
  files on the trio thread, where files are opened, so nothing opens one in between.
- If a barrier fails, no WAL of its round is deleted and :meth:`Folds.finish` raises at shutdown: the
  runtime then leaves its run marked unfinished, so the next start lists and folds them.

Why: a checkpoint on close fsyncs its file, and on this project's VM (ext4 on a virtual disk) the
disk serves those flushes one after the other: 2,000 live objects took 8 s to drain, and an idle or
capacity eviction held its thread (and a caller waiting for room) for the flush. Now an eviction
writes its WAL's pages into the file without an fsync (``ObjectFile.close(sync=False)``) and leaves
the WAL; rounds, one at a time, make the files of every eviction since the last round durable with
one barrier (``syncfs`` of the data volume with ``Settings.sync_volume``, else an fsync of each file,
in parallel in the fsync pool), then delete their WAL files (an unlink each, on the trio thread).
The shutdown's last round uses ``syncfs`` wherever the C library has it (one flush, not one per
object).
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import trio

if TYPE_CHECKING:
    from ._movework import MoveWork

__all__ = ["Folds"]

log = logging.getLogger("actors")


class Folds:
    """Object files whose WAL was folded in unsynced, by hex id, and the rounds that end them."""

    def __init__(self, work: MoveWork, *, whole_volume: bool) -> None:
        #: runs the barriers and deletions off the event loop
        self._work = work
        #: rounds sync with ``syncfs`` (``Settings.sync_volume``) rather than an fsync per file
        self._whole_volume = whole_volume
        self._start_soon: Callable[..., object] | None = None
        #: folded since the current round started (or waiting for the first)
        self._pending: dict[str, Path] = {}
        #: the current round's files, while its barrier runs (``settle`` may still take one out)
        self._syncing: dict[str, Path] = {}
        self._running = False
        self._idle = trio.Event()
        self._idle.set()
        #: a barrier failed this run: some WAL files stay (the next start's scan folds them)
        self.failed = False

    def __len__(self) -> int:
        return len(self._pending) + len(self._syncing)

    def start(self, start_soon: Callable[..., object]) -> None:
        """Let rounds run as tasks of ``start_soon`` (the runtime's nursery); before, they wait."""
        self._start_soon = start_soon
        self._kick()

    def hold(self) -> None:
        """The drain begins: no new round starts (``finish`` takes every fold of the drain at once)."""
        self._start_soon = None

    def add(self, hex_id: str, path: Path) -> None:
        """The object's WAL was folded in unsynced (``ObjectFile.close(sync=False)`` returned True)."""
        self._pending[hex_id] = path
        self._kick()

    def settle(self, hex_id: str) -> None:
        """Before the object's file is opened again: no round deletes its WAL after this (on the
        trio thread, where rounds delete WAL files, so nothing can happen in between)."""
        if self._pending.pop(hex_id, None) is None:
            self._syncing.pop(hex_id, None)

    async def finish(self, also: list[Path]) -> None:
        """At a clean shutdown (nothing live): the last round, for what is pending and the files of
        ``also`` (folded in unsynced meanwhile), with ``syncfs`` where there is one. Raises OSError if
        a barrier failed (this one or an earlier round's)."""
        self.hold()
        await self._idle.wait()
        files = [*self._pending.values(), *also]
        self._pending = {}
        if files:
            await self._work.sync_files(files, whole_volume=True)
            await self._work.off_loop(functools.partial(_delete_wal_files, files))
        if self.failed:
            raise OSError("a fold round's barrier failed earlier in this run; its WAL files stay")

    def _kick(self) -> None:
        if self._pending and not self._running and self._start_soon is not None:
            self._running = True
            self._idle = trio.Event()
            self._start_soon(self._rounds)

    async def _rounds(self) -> None:
        try:
            while self._pending and self._start_soon is not None:
                self._syncing, self._pending = self._pending, {}
                try:
                    await self._work.sync_files(list(self._syncing.values()), whole_volume=self._whole_volume)
                except OSError:
                    log.exception("a fold round's files could not be made durable; their WAL files stay")
                    self.failed = True
                    self._syncing = {}
                    continue
                deleting, self._syncing = self._syncing, {}
                _delete_wal_files(list(deleting.values()))  # here, between two activations
        finally:
            self._running = False
            self._idle.set()


def _delete_wal_files(files: list[Path]) -> None:
    # No fsync of the folders: a deletion the disk forgets leaves a WAL of frames the file already
    # holds durably, which SQLite applies again harmlessly (SQLite deletes its WAL so on close too).
    for path in files:
        try:
            os.unlink(f"{path}-wal")
        except FileNotFoundError:
            pass  # deleted with its file (a move's discard), or folded again and deleted since
        except OSError as exc:  # it stays: SQLite applies it at the next open, and it is folded again
            log.warning("could not delete %s-wal after folding it in: %s", path, exc)
