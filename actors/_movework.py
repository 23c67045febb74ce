"""How the blocking work of moves (``_moves.py``, ``_movefiles.py``) runs off the event loop (in a
worker thread, or in the runtime's fsync pool), and the barrier that makes arriving files durable.

Guarantees
- Every helper waits for the work it started, even when its caller is cancelled (a thread cannot
  be stopped halfway, and a file half placed or a catalog half written must be seen through).
- Without ``io_in_threads`` (the test harness) the work runs inline, on the calling thread.
- :meth:`MoveWork.barrier` returns only once the files and folder entries it was given are durable
  (with ``syncfs``: everything written to the volume before it started is).
"""

from __future__ import annotations

import functools
import os
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import outcome
import trio

from ._file import fsync_path
from ._syncpool import SYNCFS, call_syncfs

if TYPE_CHECKING:
    from ._runtime import Runtime

__all__ = ["MoveWork"]

T = TypeVar("T")


class MoveWork:
    """Runs the moves' blocking work for one runtime."""

    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime

    async def off_loop(self, fn: Callable[[], T]) -> T:
        """``fn()`` in a worker thread (inline without ``io_in_threads``); a cancel waits for it."""
        if self._runtime.io_in_threads:
            return await trio.to_thread.run_sync(fn)
        return fn()

    async def barrier(self, files: list[Path], folders: set[Path]) -> None:
        """Make ``files`` and the entries of ``folders`` durable: one ``syncfs`` of the data folder's
        filesystem, or (without it) an fsync of each, in parallel in the fsync pool."""
        await self.sync_files([*files, *folders], whole_volume=True, missing_ok=False)

    async def sync_files(self, files: list[Path], *, whole_volume: bool, missing_ok: bool = True) -> None:
        """Make ``files`` durable (with ``missing_ok``, those that still exist: a file deleted meanwhile
        needs nothing): one ``syncfs`` of the data folder's filesystem with ``whole_volume`` where the
        C library has it, else an fsync of each, in parallel in the fsync pool."""
        if whole_volume and _syncfs is not None:
            await self.off_loop(functools.partial(_sync_filesystem, self._runtime.data_dir))
            return
        fsync = _fsync_if_exists if missing_ok else fsync_path
        for result in await self.in_pool([functools.partial(fsync, p) for p in files]):
            result.unwrap()

    async def in_pool(self, jobs: Sequence[Callable[[], Any]]) -> list[outcome.Outcome[Any]]:
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


def _fsync_if_exists(path: Path) -> None:
    try:
        fsync_path(path)
    except FileNotFoundError:
        pass  # deleted since (a move's discard): nothing of it to make durable
