"""A small fixed pool of threads for fsyncs.

``trio.lowlevel.start_thread_soon`` starts a thread at once even when thousands of objects commit at
the same moment (a spread workload), which ends in hundreds of threads each waiting on the disk. This
pool bounds that to ``FSYNC_THREADS``; jobs queue in order. Like ``start_thread_soon``, a job is
started synchronously (no trio task needs to be scheduled first), which is what lets a busy worker
overlap its next turns with the fsync.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Any, Final

import outcome

#: concurrent fsyncs; more only queue up in the kernel
FSYNC_THREADS: Final = 16

Job = tuple[Callable[[], Any], Callable[[outcome.Outcome[Any]], None]]


class SyncPool:
    def __init__(self, size: int = FSYNC_THREADS) -> None:
        self._jobs: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self._size = size
        self._threads: list[threading.Thread] = []
        self._idle = 0
        self._lock = threading.Lock()

    def submit(self, fn: Callable[[], Any], done: Callable[[outcome.Outcome[Any]], None]) -> None:
        """Run ``fn()`` in a pool thread, then ``done(outcome)`` in that thread."""
        with self._lock:
            if self._idle == 0 and len(self._threads) < self._size:
                thread = threading.Thread(target=self._work, name="actors-fsync", daemon=True)
                self._threads.append(thread)
                self._idle += 1
                thread.start()
            self._idle -= 1
        self._jobs.put((fn, done))

    def _work(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            fn, done = job
            try:
                done(outcome.capture(fn))
            finally:
                with self._lock:
                    self._idle += 1

    def close(self) -> None:
        """Let the threads finish their queued jobs and exit."""
        with self._lock:
            threads, self._threads = self._threads, []
        for _ in threads:
            self._jobs.put(None)
