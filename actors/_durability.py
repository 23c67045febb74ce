"""Durability rounds: the fsyncs of many objects' commits, made durable together.

Guarantees
- **Reply after durable commit, across objects.** A batch that committed with ``synchronous=NORMAL``
  (WAL frames written, not synced) is handed here; its replies and socket frames are released only
  after a sync that *started after its COMMIT returned* has completed without error.
- **A failed sync fails exactly what it held.** With an fsync per file, an object whose fsync fails
  gets ObjectReset for every turn the round held of it (and is reset); the other objects of the
  round reply normally. With ``Settings.sync_volume`` one ``syncfs`` covers the whole round, and it
  cannot say whose data it failed to write, so every batch of that round fails.

Mechanism: one round is in flight at a time. A round takes every object that committed since the
previous round started and makes their WAL files durable in the sync pool: split into at most
``FSYNC_THREADS`` parts fsynced in parallel (a journaled ext4 lets concurrent fsyncs share a commit),
or one ``syncfs(2)`` of the data folder's file system (opt-in: it also flushes whatever else on that
volume is dirty, so it is for a volume of its own). The last part to finish flips ``finished`` and
hands the round back to the trio thread with one ``run_sync_soon``; a worker running turns back to
back notices it sooner, between two turns (``poll``). The next round starts at once, before the
finished one's replies are released, with everything that committed meanwhile: a self-clocking
group commit across objects, as Redis fsyncs once per event-loop iteration. A round requested
with none in flight starts at once, synchronously, so a hot object's first half of queued calls
still overlaps its fsync with the second half's turns.

So thread hand-offs, wake-ups of the event loop and GIL switches are paid per round, not per object:
with a thousand objects each getting a call now and then, a round holds tens of them.

XX: one slow fsync holds every object of its round (and the next round waits for it). Letting a
second round start while one is in flight would bound that, at the price of more rounds.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import outcome
import trio

from ._syncpool import FSYNC_THREADS, SYNCFS, SyncPool, back_on_trio, call_syncfs

if TYPE_CHECKING:
    from ._activation import Activation
    from ._file import ObjectFile
    from ._work import Work


class Round:
    """The objects one sync makes durable, and what happened to each (written by pool threads)."""

    __slots__ = ("_lock", "_remaining", "batches", "errors", "files", "finished", "members", "started")

    def __init__(self, started: float) -> None:
        self.started = started
        self.members: list[Activation] = []
        #: per member, the list of its batches this round holds (the activation's ``_in_flight``)
        self.batches: list[list[list[Work]]] = []
        self.files: list[ObjectFile] = []
        #: member index -> why its sync failed (index -1: the whole round, syncfs)
        self.errors: dict[int, BaseException] = {}
        #: set by the last part to finish; read by the trio thread (atomic under the GIL)
        self.finished = False
        self._remaining = 0
        self._lock = threading.Lock()

    def fsync_part(self, start: int, step: int) -> None:
        """fsync members ``start``, ``start + step``, … (one pool job; others run in parallel)."""
        files, errors = self.files, self.errors
        for index in range(start, len(files), step):
            try:
                files[index].sync()
            except Exception as exc:  # this member fails, the others of the part go on
                errors[index] = exc

    def part_done(self, result: outcome.Outcome[Any], finish: Callable[[], None]) -> None:
        """In a pool thread: count the part; the last one hands the round to the trio thread."""
        if isinstance(result, outcome.Error):
            self.errors[-1] = result.error
        with self._lock:
            self._remaining -= 1
            last = self._remaining == 0
        if last:
            self.finished = True
            finish()


class DurabilityRounds:
    """Rounds of syncs for the runtime's activations (see the module docstring)."""

    def __init__(
        self,
        pool: SyncPool,
        on_done: Callable[[Round], None],
        *,
        volume: Path | None = None,
    ) -> None:
        self._pool = pool
        #: called on the trio thread once per round, before its replies are released (the hook)
        self._on_done = on_done
        #: activations with committed batches that no round holds yet, in the order they asked
        self._waiting: list[Activation] = []
        self._round: Round | None = None
        self._syncfs: Callable[[int], int] | None = None
        self._volume_fd = -1
        if volume is not None:
            if SYNCFS is None:
                raise ValueError("sync_volume needs syncfs(2), which this system's C library lacks")
            self._syncfs = SYNCFS
            self._volume_fd = os.open(volume, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)

    @property
    def waiting(self) -> int:
        """Objects whose commits wait for the next round."""
        return len(self._waiting)

    def request(self, activation: Activation) -> None:
        """``activation`` committed batches (in its ``_unsynced``): make them durable in a round."""
        if not activation.round_requested:
            activation.round_requested = True
            self._waiting.append(activation)
        current = self._round
        if current is None:
            self._start()
        elif current.finished:
            self._complete(current)

    def poll(self) -> None:
        """Complete the round in flight if its sync is done (cheap; called between turns)."""
        current = self._round
        if current is not None and current.finished:
            self._complete(current)

    def close(self) -> None:
        if self._volume_fd >= 0:
            os.close(self._volume_fd)
            self._volume_fd = -1

    def _start(self) -> None:
        waiting, self._waiting = self._waiting, []
        new = Round(trio.current_time())
        for activation in waiting:
            activation.round_requested = False
            new.members.append(activation)
            new.batches.append(activation.hand_to_round())
            new.files.append(activation.file)
        self._round = new
        finish = back_on_trio(self._complete, new)

        def done(result: outcome.Outcome[Any]) -> None:
            new.part_done(result, finish)

        if self._syncfs is not None:
            new._remaining = 1
            self._pool.submit(self._sync_volume, done)
            return
        parts = min(len(new.files), FSYNC_THREADS)
        new._remaining = parts
        for start in range(parts):
            self._pool.submit(_part(new, start, parts), done)

    @property
    def volume_sync(self) -> Callable[[], None] | None:
        """With ``sync_volume``: a blocking ``syncfs`` of the data volume (for creation rounds)."""
        return self._sync_volume if self._syncfs is not None else None

    def _sync_volume(self) -> None:
        """One ``syncfs`` of the data folder's file system: every write made before it is durable."""
        assert self._syncfs is not None
        call_syncfs(self._syncfs, self._volume_fd, "the data volume")

    def _complete(self, finished: Round) -> None:
        """On the trio thread: start the next round, then release this one's replies."""
        if self._round is not finished:
            return  # already completed (polled between turns before the callback ran)
        self._round = None
        if self._waiting:
            self._start()
        self._on_done(finished)
        errors = finished.errors
        everyone = errors.get(-1)
        for index, activation in enumerate(finished.members):
            error = everyone if everyone is not None else errors.get(index)
            activation.synced(finished.batches[index], error)


def _part(new: Round, start: int, step: int) -> Callable[[], None]:
    return lambda: new.fsync_part(start, step)

