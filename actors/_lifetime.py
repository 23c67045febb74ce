"""A runtime's lifetime: ``open_runtime`` opens it in a nursery of its own, and closing it drains.

Guarantees
- Closing drains: new calls fail with ShuttingDown, queued and running turns finish and commit, every
  file is closed with its WAL folded in, durably, and only then does ``open_runtime`` return. A drain
  that outlasts ``DRAIN_TIMEOUT_SECONDS`` cancels what is left, as a crash would (only what was
  committed stays, and the next start's scan folds the WAL files left).
- A clean shutdown leaves no ``-wal`` beside any object file: the drain's folds, the ones a crashed
  run left (``_leftovers.py``) and a move's (``fold_later``) all end in one barrier (``_folds.py``).
  Only then is the run marked finished in the catalog.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import trio

from ._app import App
from ._clock import EpochClock
from ._folderlock import FolderLock
from ._hooks import Hooks
from ._leftovers import Leftovers
from ._moves import remove_unfinished_transfers
from ._resting import serve_open_files
from ._runtime import Runtime
from ._settings import Settings

__all__ = ["DRAIN_TIMEOUT_SECONDS", "open_runtime"]

log = logging.getLogger("actors")

#: seconds a closing runtime waits for its objects to drain before it cancels what is left
DRAIN_TIMEOUT_SECONDS = 30.0


@asynccontextmanager
async def open_runtime(
    app: App,
    data_dir: str | Path,
    *,
    settings: Settings | None = None,
    hooks: Hooks | None = None,
    epoch_offset: float | None = None,
    io_in_threads: bool = True,
) -> AsyncIterator[Runtime]:
    """Open a runtime for ``app`` on ``data_dir``; drains and closes it on exit.

    ``epoch_offset`` fixes the mapping from trio time to epoch seconds (tests keep it across restarts).
    ``io_in_threads=False`` runs commits inline on the trio thread: slower, but no thread is ever in
    flight, so ``MockClock(autojump_threshold=0)`` cannot jump while a commit is running.
    """
    lock = FolderLock(Path(data_dir))  # DataFolderInUse: before anything in it is read
    try:
        runtime = Runtime(
            app,
            Path(data_dir),
            settings or Settings(),
            hooks or Hooks(),
            EpochClock(epoch_offset),
            io_in_threads=io_in_threads,
        )
    except BaseException:
        lock.release()
        raise
    try:
        # transfers that did not finish (only when one may have: listing a million files takes a second)
        remove_unfinished_transfers(runtime.data_dir, older_folder=runtime.catalog.upgraded)
        crashed = runtime.catalog.begin_run() or runtime.catalog.upgraded
        leftovers = Leftovers(runtime.data_dir / "objects", in_thread=io_in_threads) if crashed else None
        async with trio.open_nursery() as nursery:
            runtime.attach(nursery)
            runtime.alarms.load()  # the next alarms due, not every pending one
            await nursery.start(runtime.alarms.serve)
            await nursery.start(serve_open_files, runtime.open_files)
            await nursery.start(runtime.deadlines.serve)
            if leftovers is not None:
                await nursery.start(leftovers.find)
            try:
                yield runtime
            finally:
                if not runtime.closing_abruptly:
                    with trio.CancelScope(shield=True):
                        await _drain(runtime)
                        if not runtime.closing_abruptly:
                            await _fold_the_rest(runtime, leftovers)
                nursery.cancel_scope.cancel()
    finally:
        runtime.sync_pool.close()
        runtime.rounds.close()
        runtime.catalog.close()
        lock.release()


async def _drain(runtime: Runtime) -> None:
    """Evict every live object (each finishes its queued turns and commits); after
    ``DRAIN_TIMEOUT_SECONDS``, stop the rest as a crash would."""
    runtime.closing = True
    runtime.folds.hold()
    with trio.move_on_after(DRAIN_TIMEOUT_SECONDS):
        while runtime.table.live:
            for activation in list(runtime.table.live.values()):
                activation.request_eviction("shutdown")
            await next(iter(runtime.table.live.values())).evicted.wait()
    if runtime.table.live:
        log.warning("%d objects did not drain in time; cancelling them", len(runtime.table.live))
        runtime.closing_abruptly = True


async def _fold_the_rest(runtime: Runtime, leftovers: Leftovers | None) -> None:
    """After a drain: fold the WAL files still left, make every unsynced fold durable, and
    mark the run finished, or (a barrier failed) leave it marked for the next start's scan."""
    also = [] if leftovers is None else await leftovers.fold()
    also += await runtime.fold_released()
    try:
        await runtime.folds.finish(also)
    except OSError:
        log.exception("the folded files could not all be made durable; their WAL files stay")
        return
    runtime.catalog.end_run()
