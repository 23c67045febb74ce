"""Resting objects: a live object idle for a while keeps its instance but not its open file.

Guarantee
- An object that has run no turn for ``FILE_REST_SECONDS`` (and has nothing queued, uncommitted or
  being fsynced) stays live, with its instance, but its SQLite connection is closed: its next read or
  write opens the file again, as a cold activation would (about 0.3 ms), without running ``on_start``.
  Nothing committed is lost and nothing uncommitted exists at that moment.

Why: an open WAL-mode SQLite connection costs about 80 KiB (the WAL index alone takes 32 KiB of heap in
exclusive locking mode, then the page cache, the parsed schema and prepared statements) and two file
descriptors, while the rest of a live object costs a few KiB. Idle eviction (10 s by default) ends the
object; this ends only its connection, sooner, so a node can keep many more objects live.

Mechanism: one task wakes every ``FILE_REST_SECONDS / 2`` and walks the live table from its least
recently active end, closing (``ObjectFile.release``, on the event loop: no fsync) the file of every
resting activation idle long enough; it stops at the first activation active since. The WAL's pages
are written into the file first and the WAL left for a fold round (``_folds.py``), which makes the
file durable and deletes the WAL: so the eviction has nothing left to do, and the next open reads
no WAL.

XX: while the file is closed its exclusive lock is not held, so a second process on the same data
folder could open it (as it can a file a creation round made and nobody opened since).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

import trio

if TYPE_CHECKING:
    from ._runtime import Runtime

#: seconds without a turn after which a live object's file is closed
FILE_REST_SECONDS: Final = 2.0


def release_resting_files(runtime: Runtime, now: float) -> int:
    """Close the files of activations idle since ``now - FILE_REST_SECONDS``; returns how many."""
    cutoff = now - FILE_REST_SECONDS
    released = 0
    for activation in runtime.table.live.values():  # least recently active first
        if activation.last_active > cutoff:
            break
        file = activation.file
        if file.conn is not None and activation.resting and file.release(fold=True):
            released += 1
            if file.wal_folded:
                runtime.folds.add(activation.id.hex, file.path)
    return released


async def serve_resting_files(
    runtime: Runtime, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    """Close resting objects' files, forever."""
    task_status.started()
    while True:
        await trio.sleep(FILE_REST_SECONDS / 2)
        release_resting_files(runtime, trio.current_time())
