"""A small fixed pool of threads for fsyncs (and the commits that create objects or move alarms).

``trio.lowlevel.start_thread_soon`` starts a thread at once even when thousands of objects commit at
the same moment (a spread workload), which ends in hundreds of threads each waiting on the disk. This
pool bounds that to ``FSYNC_THREADS``; jobs queue in order. Like ``start_thread_soon``, a job is
started synchronously (no trio task needs to be scheduled first), which is what lets a busy worker
overlap its next turns with the fsync.
"""

from __future__ import annotations

import ctypes
import os
import queue
import threading
from collections.abc import Callable
from typing import Any, Final, TypeVar

import outcome
import trio

#: concurrent fsyncs; more only queue up in the kernel
FSYNC_THREADS: Final = 16

Job = tuple[Callable[[], Any], Callable[[outcome.Outcome[Any]], None]]
T = TypeVar("T")


def find_syncfs() -> Callable[[int], int] | None:
    """libc's ``syncfs(2)`` (Linux), or None where the C library lacks it."""
    try:
        function = ctypes.CDLL(None, use_errno=True).syncfs
    except (AttributeError, OSError):  # not Linux (or no dynamic C library)
        return None
    function.argtypes = [ctypes.c_int]
    function.restype = ctypes.c_int
    return function


#: ``syncfs(2)``, or None where the C library lacks it
SYNCFS = find_syncfs()


def call_syncfs(syncfs: Callable[[int], int], fd: int, what: object) -> None:
    """``syncfs(fd)``: everything written to the file system of ``fd`` is durable when this returns."""
    if syncfs(fd) != 0:
        error = ctypes.get_errno()
        raise OSError(error, f"syncfs of {what}: {os.strerror(error)}")


def back_on_trio(fn: Callable[..., object], *args: object) -> Callable[[], None]:
    """A callable for a pool thread: it runs ``fn(*args)`` on this trio thread soon, or nothing if
    the run has ended (a crashed runtime: nobody waits any more). Call this on the trio thread."""
    token = trio.lowlevel.current_trio_token()

    def call() -> None:
        try:
            token.run_sync_soon(fn, *args)
        except trio.RunFinishedError:
            pass

    return call


class SyncPool:
    """``FSYNC_THREADS`` threads, all started with the first job; ``submit`` is one queue put.

    No lock and no count of idle threads: a job only goes on the queue, and an idle thread takes
    it. Tracking idle threads under a lock (to start threads one at a time) cost the event loop
    about 50 µs a submit on average: a pool thread holding the lock while waiting for the GIL made
    the loop block on the lock, then wait for the GIL back.
    """

    def __init__(self, size: int = FSYNC_THREADS) -> None:
        self._jobs: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self._size = size
        self._threads: list[threading.Thread] = []

    def submit(self, fn: Callable[[], Any], done: Callable[[outcome.Outcome[Any]], None]) -> None:
        """Run ``fn()`` in a pool thread, then ``done(outcome)`` in that thread."""
        if not self._threads:
            for _ in range(self._size):
                thread = threading.Thread(target=self._work, name="actors-fsync", daemon=True)
                self._threads.append(thread)
                thread.start()
        self._jobs.put((fn, done))

    async def run(self, fn: Callable[[], T]) -> T:
        """Run ``fn()`` in a pool thread and return (or raise) its outcome, uncancellable meanwhile.

        Like a shielded ``trio.to_thread.run_sync``, for work that must be seen through once started
        (a commit), minus what that costs per call: a limiter, a thread renamed per job, and up to
        its 40 threads fighting the event loop for the GIL.
        """
        task = trio.lowlevel.current_task()
        token = trio.lowlevel.current_trio_token()

        def done(result: outcome.Outcome[Any]) -> None:
            try:
                token.run_sync_soon(trio.lowlevel.reschedule, task, result)
            except trio.RunFinishedError:  # pragma: no cover (the task is still waiting: impossible)
                pass

        self.submit(fn, done)
        return await trio.lowlevel.wait_task_rescheduled(  # type: ignore[no-any-return]
            lambda _: trio.lowlevel.Abort.FAILED
        )

    def _work(self) -> None:
        jobs = self._jobs
        while True:
            job = jobs.get()
            if job is None:
                return
            fn, done = job
            done(outcome.capture(fn))

    def close(self) -> None:
        """Let the threads finish their queued jobs and exit."""
        threads, self._threads = self._threads, []
        for _ in threads:
            self._jobs.put(None)
