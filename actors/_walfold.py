"""Folding an object file's WAL into it: with SQLite's own synced checkpoint, or unsynced for a
caller that makes many files durable at once (``_folds.py``).

Guarantees
- A synced fold (``fold_wal``) leaves the file self-contained and durable, the WAL deleted, as
  SQLite's checkpoint on close does.
- An unsynced fold writes every frame into the file without an fsync and leaves the WAL whole: until
  the caller has made the file durable, a crash finds the WAL and SQLite applies it again (its frames
  are the very pages already written). The caller deletes the WAL afterwards.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import apsw

from . import _folderlock

__all__ = ["fold_unsynced", "fold_wal"]


def fold_unsynced(conn: apsw.Connection) -> bool:
    """Write every frame of ``conn``'s WAL into its database file, with no fsync; keep the WAL.

    True if it did (then the WAL, whole, stays until the caller deletes it: until the file is durable
    a crash finds it and SQLite applies its frames again, the same pages). False if it could not fold
    them all (nothing is lost: the caller checkpoints as usual); ``synchronous`` is then as before.
    Precondition: ``conn`` is the file's only connection, with no transaction open, about to close.
    """
    before = conn.execute("PRAGMA synchronous").get
    conn.execute("PRAGMA synchronous=OFF").fetchall()
    busy, frames, folded = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()[0]
    if busy == 0 and isinstance(frames, int) and frames >= 0 and frames == folded:
        return True  # closed next with NO_CKPT_ON_CLOSE (set at open): the WAL stays
    conn.execute(f"PRAGMA synchronous={before}").fetchall()
    return False


def fold_wal(path: Path, *, sync: bool = True) -> bool:
    """Fold the WAL beside ``path`` into it and delete it (and a WAL index an older version left).

    Without ``sync`` (a clean shutdown, ``_folds.py``) the frames are written in without an fsync
    and the WAL is left whole: True then, and the caller makes the file durable before deleting the
    WAL. Precondition: no connection of this process has the file open. Raises apsw.Error or
    RuntimeError if SQLite could not checkpoint it; the WAL then stays, and SQLite applies it at the
    next open."""
    conn = apsw.Connection(str(path), flags=apsw.SQLITE_OPEN_READWRITE, vfs=_folderlock.OBJECT_VFS)
    left = False
    try:
        conn.execute("PRAGMA locking_mode=EXCLUSIVE").fetchall()  # as the runtime opens it: no -shm
        if not sync:
            conn.config(apsw.SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, 1)  # closing must not delete the WAL
            left = fold_unsynced(conn)
        if not left:
            conn.config(apsw.SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, 0)
            row = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            if row is None or row[0] != 0:
                raise RuntimeError(f"could not checkpoint {path}: {row}")
    finally:
        conn.close()  # the last connection: unless left, checkpoints and deletes the WAL
    # an empty WAL (unless left), and a WAL index older versions may have left
    for suffix in ("-shm",) if left else ("-wal", "-shm"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(f"{path}{suffix}")
    return left
