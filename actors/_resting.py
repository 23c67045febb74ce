"""Open files: at most ``max_open_files`` live objects hold their SQLite file open; the rest rest.

Guarantees
- At most ``Runtime.max_open_files`` live objects keep their file open, give or take the few that are
  busy when the budget is reached. Past it, the least recently active objects that are *resting* (the
  worker waits for work with nothing queued, running, uncommitted or being fsynced) close their file
  (``ObjectFile.release``, on the event loop: no checkpoint, no fsync) and stay live, with their
  instance: the next read or write opens the file again (about 0.2 ms of CPU), without ``on_start``.
  Nothing committed is lost and nothing uncommitted exists at that moment.
- A busy object is never closed under its turn: if every object over the budget is busy, the budget
  is exceeded until they rest (the open-file limit keeps ``FD_RESERVE`` descriptors for that), and the
  watch below closes them then.

Why a budget and not an idle time: an open WAL-mode connection costs about 80 KiB (the WAL index alone
takes 32 KiB of heap in exclusive locking mode, then the page cache, the parsed schema and prepared
statements) and two file descriptors, while the rest of a live object costs a few KiB. Closing files
after a fixed idle time (2 s, before) bounded that memory, but made a node's speed depend on its
load: over 10,000 objects each object is called less often than every 2 s below 5,000 calls/s, so
almost every call reopened its file, which slowed the node, which spaced calls further (627 calls/s
at 1.4 ms of CPU each, against 4,076 at 0.22 ms with the files kept open, ``BENCHMARKS.md``). An LRU
budget is a cache: objects called often stay open however many there are up to the budget, and the
memory it may hold is bounded (``max_open_files`` times about 80 KiB) whatever the load.

Mechanism: an OrderedDict of the activations whose file is open, least recently active first
(``touch`` on every turn, like the live table). Opening a file (``opening``, the file's
``before_open`` hook, on the trio thread) adds its activation at the end and, past the budget, closes
files from the front; a watch task retries once a second for budgets left exceeded by busy objects.
Eviction forgets its activation (its file closes with it). Eviction later folds the WAL of a rested
file into it (``_folds.py``). Folding it at rest instead (so that the eviction would not reopen the
file) was measured and dropped: over 10,000 objects it cost about a fifth more CPU per call, since an
object called again after its rest then pays a new WAL (its creation and the sync of its header)
besides the fold.

XX: SQLite's close costs about 115 µs on the event loop in a busy node (20-25 µs alone): a node whose
working set is larger than the budget pays it, and a reopen, on each call that finds its file rested.
"""

from __future__ import annotations

import collections
from typing import TYPE_CHECKING, Final

import trio

if TYPE_CHECKING:
    from ._activation import Activation

#: seconds between two passes of the watch that closes files left over the budget by busy objects
TRIM_INTERVAL_SECONDS: Final = 1.0
#: activations looked at past the excess in one pass (busy ones are skipped, not waited for)
TRIM_SCAN_SLACK: Final = 64


class OpenFiles:
    """The live objects whose files are open, least recently active first; at most ``budget``."""

    def __init__(self, budget: int) -> None:
        self.budget = budget  # at least 1: Settings refuses less, and the open-file cap keeps 64
        self._open: collections.OrderedDict[str, Activation] = collections.OrderedDict()
        #: files closed to keep within the budget since the runtime started (a metric)
        self.rested = 0

    def __len__(self) -> int:
        return len(self._open)

    def opening(self, activation: Activation) -> None:
        """``activation``'s file opens now (on the trio thread): count it, and keep to the budget."""
        key = activation.id.hex
        self._open[key] = activation
        self._open.move_to_end(key)
        if len(self._open) > self.budget:
            self.trim(opening=activation)

    def touch(self, key: str) -> None:
        """The object ``key`` ran a turn: it becomes the most recently active."""
        if key in self._open:
            self._open.move_to_end(key)

    def forget(self, activation: Activation) -> None:
        """``activation`` left (its file is closed or closing)."""
        key = activation.id.hex
        if self._open.get(key) is activation:
            del self._open[key]

    def trim(self, opening: Activation | None = None) -> int:
        """Close the least recently active resting files past the budget; returns how many.

        ``opening``: the activation whose file is about to open (not open yet, and not to close).
        """
        excess = len(self._open) - self.budget
        if excess <= 0:
            return 0
        # Look only as far as needed (usually one entry): a copy of the front, or every entry looked
        # at, costs more than the close itself once the dict is large.
        stale: list[str] = []
        chosen: list[tuple[str, Activation]] = []
        for scanned, (key, activation) in enumerate(self._open.items()):
            if len(chosen) + len(stale) >= excess or scanned >= excess + TRIM_SCAN_SLACK:
                break
            if activation is opening:
                continue
            if activation.file.conn is None:
                stale.append(key)  # closed some other way (a move, a reset): not ours to count
            elif activation.resting:
                chosen.append((key, activation))
        for key in stale:
            del self._open[key]
        closed = 0
        for key, activation in chosen:
            if activation.file.release():
                del self._open[key]
                closed += 1
        self.rested += closed
        return closed


async def serve_open_files(
    open_files: OpenFiles, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    """Close files left over the budget by objects that were busy when it was reached, forever."""
    task_status.started()
    while True:
        await trio.sleep(TRIM_INTERVAL_SECONDS)
        open_files.trim()
