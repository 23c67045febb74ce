"""The data folder's lock: one runtime per data folder, across processes and within one.

Guarantees
- While a runtime is open on a data folder, opening another runtime on it (in this process or in any
  other) fails at once with :class:`DataFolderInUse`, before anything in the folder is read or
  written.
- A crash never leaves the folder locked: the lock is an ``flock(2)`` on ``<data>/lock``, which the
  kernel drops with the last descriptor of the process that held it (SIGKILL included).

Why: object files are opened through SQLite's ``unix-none`` VFS, without SQLite's POSIX locks
(``_file.py``). The default ``unix`` VFS keeps every file it has open in one list that it walks on
each open, twice; with 9,000 object files open, opening one more took 457 µs instead of 97, enough
to make a node with that many live objects several times slower per call (``BENCHMARKS.md``). The
per-file locks only ever guarded against a second process on the same folder, which this one lock
refuses sooner (at start, not at the first shared object).

XX: other programs (the sqlite3 shell) take no notice of this lock: they may read object files while
the node runs, and must not write them (they never could safely: the node would not see the change).
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import Final

#: the lock file, in the data folder
LOCK_FILE: Final = "lock"

#: the VFS object files are opened with: no POSIX locks (see above). Read at each open (tests put a
#: recording VFS in its place).
OBJECT_VFS = "unix-none"


class DataFolderInUse(RuntimeError):
    """Another runtime (in this process or another) has the data folder open."""


class FolderLock:
    """The held lock; :meth:`release` gives it back (also done by the kernel at exit)."""

    def __init__(self, data_dir: Path) -> None:
        data_dir.mkdir(parents=True, exist_ok=True)
        path = data_dir / LOCK_FILE
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise DataFolderInUse(
                f"the data folder {data_dir} is in use by {holder} (one runtime per data folder)"
            ) from None
        except BaseException:
            os.close(fd)
            raise
        # The holder's pid, for the message above: informative only (the flock is the lock).
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd: int | None = fd

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)


def _read_holder(fd: int) -> str:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        text = ""
    return f"process {text}" if text.isdigit() else "another runtime"
