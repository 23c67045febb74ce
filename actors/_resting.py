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
recently active end, closing (``ObjectFile.release``, on the event loop: no checkpoint, no fsync) the
file of every resting activation idle long enough; it stops at the first activation active since.
Eviction later folds the WAL into the file (``_folds.py``). Folding it at rest instead (so that the
eviction would not reopen the file) was measured and dropped: over 10,000 objects it cost about a
fifth more CPU per call, since an object called again after its rest then pays a new WAL (its
creation and the sync of its header) besides the fold.

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
        if activation.file.conn is not None and activation.resting and activation.file.release():
            released += 1
    return released


async def serve_resting_files(
    runtime: Runtime, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    """Close resting objects' files, forever."""
    task_status.started()
    while True:
        await trio.sleep(FILE_REST_SECONDS / 2)
        release_resting_files(runtime, trio.current_time())
