"""One object's SQLite file: lazy creation, the batch transaction and a savepoint per turn.

Guarantees
- Reading an object that was never written creates no file; the file (and its folder) appear with the
  first write.
- All writes of a batch of turns live in one SQLite transaction (``BEGIN`` on the first write); each turn,
  each reentrant call and each ``storage.transaction()`` block is a savepoint inside it, opened lazily on
  its first write, so a failing turn rolls back exactly its own writes. The turn whose write opens the
  batch needs no savepoint: rolling it back is rolling the batch back (``ROLLBACK``).
- The connection runs in WAL mode with ``locking_mode=EXCLUSIVE``: no ``-shm`` file, the WAL index in
  the connection's memory. Files are opened through the ``unix-none`` VFS, without SQLite's POSIX
  locks: one lock on the data folder (``_folderlock.py``) keeps a second runtime out instead, and
  the unix VFS's open walks a list of every file it holds open (457 µs per open with 9,000 open).
- An object that is not live is one self-contained file: eviction closes with a checkpoint, which
  folds the WAL in and deletes it. New files use ``PAGE_SIZE`` (1 KiB) pages; older files keep theirs.
- The runtime's tables are named ``_actors_*``. User SQL runs under an authorizer that refuses them, and
  refuses transaction control, ATTACH and unsafe PRAGMAs (``_authorizer.py``).

Mechanism: ``levels`` is a stack with one entry per open turn/transaction block; ``True`` once its
savepoint exists. ``writable()`` opens the file, the schema, ``BEGIN`` and every pending savepoint, outer
first. The commit itself is driven by ``_activation.py``; this module only provides ``commit()`` and
``rollback()``. A new object's first batch runs in memory; a creation round (``_creations.py``) writes
its image as the file, which then stays closed (``unopened``) until the object's next read or write
opens it. The runtime's own statements (savepoints, the key-value API, COMMIT) run on one cursor
kept with the connection:
``Connection.execute`` makes and tracks a new cursor per statement, which costs more than the statement
itself on the hot path. Only statements whose rows are read at once use it; user SQL gets its own cursor.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import apsw

from . import _folderlock
from ._authorizer import refusal, user_schema_objects
from ._ids import ObjectId
from ._walfold import fold_unsynced, fold_wal
from .errors import SqlNotAllowed

SCHEMA_VERSION = 1
#: page size of new files: a small object's four pages (schema, meta, key-value, alarm) take 4 KiB on
#: disk instead of 16 KiB; files made with 4 KiB pages before keep theirs (it is in the header)
PAGE_SIZE = 1024
#: the page cache of one file, in KiB (negative: SQLite's unit for a size in KiB); SQLite's default is
#: 2 MiB per connection, allocated as pages are read, so a few big objects could hold gigabytes
CACHE_SIZE = -256

#: WAL pages past which a commit folds the WAL into the file (SQLite's own automatic checkpoint,
#: which this replaces, waits for 1,000). Only a commit made in a worker thread checkpoints
#: (``commit(checkpoint=True)``): a checkpoint fsyncs the WAL and the file, milliseconds the event
#: loop must not wait. Smaller than SQLite's default so that reopening a resting object's file, which
#: reads its whole WAL to rebuild the index, stays cheap.
CHECKPOINT_PAGES = 256

# Savepoint statements by depth, made once (a turn opens and releases one; nesting is shallow).
_SAVEPOINT = tuple(f"SAVEPOINT s{depth}" for depth in range(32))
_RELEASE = tuple(f"RELEASE s{depth}" for depth in range(32))
_ROLLBACK_TO = tuple(f"ROLLBACK TO s{depth}; RELEASE s{depth}" for depth in range(32))

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS _actors_meta (key TEXT PRIMARY KEY, value ANY) WITHOUT ROWID, STRICT;
CREATE TABLE IF NOT EXISTS _actors_kv (key TEXT PRIMARY KEY, value BLOB NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS _actors_alarm (slot INTEGER PRIMARY KEY CHECK (slot = 0), at REAL NOT NULL);
INSERT OR REPLACE INTO _actors_meta VALUES ('schema_version', {SCHEMA_VERSION});
"""

#: appended to user SQL (a comment, so it changes nothing but the statement cache's key)
_USER_SQL_MARK = "\n/*actors:user*/"


class ObjectFile:
    """The SQLite database of one activation (see the module docstring for the guarantees)."""

    def __init__(
        self,
        path: Path,
        object_id: ObjectId,
        *,
        synchronous: str,
        defer_sync: bool = False,
        legacy_path: Path | None = None,
    ) -> None:
        self.path = path
        #: where an older version kept this object's file: moved to ``path`` when found there
        self._legacy_path = legacy_path
        self.object_id = object_id
        self._synchronous = synchronous
        #: the runtime fsyncs with ``sync()`` off the trio thread, so creating a file must not fsync
        self._defer_sync = defer_sync
        #: pages in the WAL after the last commit (``CHECKPOINT_PAGES``)
        self.wal_pages = 0
        #: the next commit starts the WAL afresh: SQLite then fsyncs its new header inside COMMIT
        self._wal_header_due = True
        #: the database file itself still needs an fsync (created with sync deferred)
        self._db_unsynced = False
        #: the object has no file yet: its first batch lives in an in-memory database
        self.in_memory = False
        self.conn: apsw.Connection | None = None
        #: a cursor of ``conn`` for the runtime's statements (see the module docstring)
        self.cursor: apsw.Cursor | None = None
        #: the runtime's tables exist in the file
        self.has_schema = False
        #: one entry per open turn / transaction block; True once its savepoint exists
        self.levels: list[bool] = []
        #: BEGIN has been issued for the current batch
        self.in_batch = False
        #: the batch's BEGIN stands for the savepoint of level 0 (the turn that wrote first): see
        #: ``writable``
        self._begin_is_level0 = False
        #: the schema was created in the current batch: the catalog must learn of this object
        self.created = False
        #: set_alarm / delete_alarm ran in the current batch (maybe rolled back: re-read at commit)
        self.alarm_touched = False
        #: set_alarm / delete_alarm calls ever made (lets the alarm turn see whether alarm() set one)
        self.alarm_writes = 0
        #: delete_all ran in the current batch
        self.deleted_all = False
        self._user_sql = False
        #: user SQL ran on the connection (an in-memory one is then not kept for another object)
        self._ran_user_sql = False
        #: the in-memory first batch's image had the template's size (``materialized``)
        self._template_sized = False
        self._denied: str | None = None
        #: a creation round made the file and left it closed: the next read or write opens it
        self.unopened = False
        #: the file has no -wal: a creation round wrote it and nothing opened it since
        self._wal_absent = False
        #: the -wal file's folder entry is durable (it existed at open, or was fsynced since)
        self._wal_synced = False
        #: ``_wal_synced`` when ``release()`` closed the file (None: not released since)
        self._released_wal_synced: bool | None = None
        #: folders created for this file whose entries are not yet known durable
        self._new_dirs: list[Path] = []
        #: called on the trio thread before the file is opened there: the activation takes it out of
        #: every fold round (``Folds.settle``) and counts it among the open files (``_resting.py``)
        self.before_open: Callable[[], None] | None = None

    #### Opening and closing

    def open_if_exists(self) -> None:
        """Open the file if it exists; an object without a file reads as empty."""
        if self.conn is None and os.path.exists(self.path):
            self._reopen()
        elif self.conn is None and self._legacy_path is not None and self._legacy_path.exists():
            move_legacy_file(self._legacy_path, self.path)
            self._reopen()

    def _reopen(self, *, new: bool = False) -> None:
        """Open the file (on the trio thread: a fold round must not delete its WAL now)."""
        if self.before_open is not None:
            self.before_open()
        self._connect(new=new)

    def _connect(self, *, new: bool = False) -> None:
        self.unopened = self._wal_absent = False
        conn = apsw.Connection(str(self.path), vfs=_folderlock.OBJECT_VFS)  # no POSIX locks
        # Closing without a checkpoint is for a crash (``close()``) and for an idle live object's
        # file (``release()``, on the event loop); eviction and shutdown close with a checkpoint.
        conn.config(apsw.SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, 1)
        # Replaces SQLite's automatic checkpoint, which would run inside a COMMIT on the event loop.
        conn.set_wal_hook(self._committed)
        # A WAL this object made before ``release()`` may have an entry not yet fsynced: trust that
        # run's knowledge rather than the file's existence.
        known, self._released_wal_synced = self._released_wal_synced, None
        try:
            wal_size = os.stat(f"{self.path}-wal").st_size
        except FileNotFoundError:
            wal_size = -1
        self._wal_synced = wal_size >= 0 and known is not False
        if wal_size <= 0:
            self._wal_header_due = True  # no WAL yet: the first commit writes (and syncs) its header
        # One execute per PRAGMA: apsw pauses a multi-statement string at the first row it returns.
        # journal_mode=WAL is persistent in the file's header, so only a new file needs it (it costs
        # a read of the header, a good part of a cold activation). None is cached: each runs once.
        pragmas = [
            "locking_mode=EXCLUSIVE", f"synchronous={self._synchronous}", "foreign_keys=ON",
            f"cache_size={CACHE_SIZE}",
        ]  # fmt: skip
        if new and self._defer_sync:
            # Switching a new file to WAL writes its header, with an fsync unless synchronous=OFF;
            # that fsync would block the event loop. sync() fsyncs the file before its first reply.
            pragmas[1:1] = [f"page_size={PAGE_SIZE}", "synchronous=OFF", "journal_mode=WAL"]
            self._db_unsynced = True
        elif new:
            pragmas[1:1] = [f"page_size={PAGE_SIZE}", "journal_mode=WAL"]
        cursor = conn.cursor()
        for pragma in pragmas:
            cursor.execute(f"PRAGMA {pragma}", can_cache=False).fetchall()
        conn.authorizer = self._authorize
        self._use(conn)
        self.has_schema = (
            cursor.execute(
                "SELECT 1 FROM sqlite_schema WHERE name = '_actors_kv'", can_cache=False
            ).fetchone()
            is not None
        )

    def close(self, *, checkpoint: bool = False, sync: bool = True) -> bool:
        """Close the connection; pending writes are rolled back. True if it left a WAL to delete.

        With ``checkpoint`` (eviction, shutdown, a move; in a worker thread) the WAL is folded into
        the file and deleted, so an object that is not live is one self-contained file; a file that
        ``release()`` closed with a WAL beside it is opened for that. Without it (a crash) the WAL
        stays, and SQLite applies it when the file is next opened (by us or by the sqlite3 shell).
        With ``checkpoint`` and not ``sync`` (an idle, capacity or shutdown eviction, ``_folds.py``)
        the WAL's pages are written into the file without an fsync and the WAL is left whole beside
        it (True): the caller makes the file durable, then deletes the WAL (``fold_unsynced``).
        """
        left = False
        if checkpoint and self.unopened and os.path.exists(f"{self.path}-wal"):
            if sync:
                self._connect()
            else:
                # A resting file: folded through a bare connection (none of a turn's pragmas,
                # authorizer or schema check, which cost more than the fold of a small WAL).
                left = fold_wal(self.path, sync=False)
        conn = self.conn
        self._use(None)
        self.unopened = False
        if conn is not None:
            if checkpoint and not conn.in_transaction:
                left = not sync and fold_unsynced(conn)
                if not left:
                    conn.config(apsw.SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, 0)
            conn.close()
        self.levels.clear()
        self.in_batch = False
        self._begin_is_level0 = False
        return left

    @property
    def closes_at_once(self) -> bool:
        """``close(checkpoint=True)`` would do no I/O (nothing open, no WAL to fold in): the event
        loop may call it. An object created and never used again (most of a spread workload) is
        evicted so, without a thread hand-off."""
        return self.conn is None and (not self.unopened or self._wal_absent)

    def release(self) -> bool:
        """Close the file of a live object at rest, keeping the object; True if it was open.

        The next read or write opens it again (like a file a creation round made). No checkpoint, so
        this is cheap enough for the event loop (the WAL, if any, stays until eviction folds it in).
        An open SQLite connection costs about 80 KiB (the WAL index alone is 32 KiB in exclusive
        mode), far more than the rest of a live object. Precondition: no batch, turn or sync running.
        """
        conn = self.conn
        if conn is None or self.in_memory or self.levels or self.in_batch or conn.in_transaction:
            return False
        self._use(None)
        conn.close()
        self.unopened = self.has_schema
        self._released_wal_synced = self._wal_synced
        return True

    def _use(self, conn: apsw.Connection | None) -> None:
        self.conn = conn
        self.cursor = None if conn is None else conn.cursor()

    #### Reading and writing

    def readable(self) -> apsw.Connection | None:
        """The connection to read from, or None when the object has no storage yet."""
        if self.has_schema:
            if self.unopened:
                self._reopen()
            return self.conn
        return None

    def writable(self) -> apsw.Connection:
        """The connection, with the file, the schema, the batch transaction and savepoints open."""
        conn = self.conn
        tables_made = False
        if self.unopened:
            self._reopen()
            conn = self.conn
        if conn is None:
            if self._defer_sync:
                # A new object's first batch runs in memory; a creation round makes the file in
                # the sync pool (``_creations.py``). Creating files and folders can take
                # milliseconds while other fsyncs hold the filesystem journal, and must not block
                # the event loop. The database starts as a copy of an empty one with the runtime's
                # tables: cheaper than running the schema's DDL for every new object. Better
                # still, a connection kept from an earlier creation, emptied back to that copy
                # (``_MEMORY_SPARES``): no connection to open, no schema to parse again.
                if _MEMORY_SPARES:
                    conn = _MEMORY_SPARES.pop()
                else:
                    conn = apsw.Connection(":memory:")
                    conn.deserialize("main", _empty_database())
                    for pragma in ("foreign_keys=ON", "secure_delete=ON"):
                        conn.execute(f"PRAGMA {pragma}").fetchall()
                tables_made = True
                conn.authorizer = self._authorize
                self._use(conn)
                self.in_memory = True
            else:
                missing = [d for d in self.path.parents[:4] if not d.exists()]
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._new_dirs.extend(missing)
                self._reopen(new=True)
                conn = self.conn
                assert conn is not None
        cursor = self.cursor
        assert cursor is not None
        levels = self.levels
        if not self.in_batch:
            cursor.execute("BEGIN")
            self.in_batch = True
            if levels and not levels[0]:
                # Rolling the first writing turn back to where it began is rolling the batch back:
                # BEGIN serves as its savepoint. A spread workload's batch is one turn, so this
                # saves a SAVEPOINT and a RELEASE per call (a third of its statements).
                levels[0] = True
                self._begin_is_level0 = True
        if not self.has_schema:
            if not tables_made:
                cursor.execute(_SCHEMA)
            cursor.execute(
                "INSERT OR REPLACE INTO _actors_meta VALUES ('class', ?), ('name', ?), ('id', ?)",
                (self.object_id.cls, self.object_id.name, self.object_id.hex),
            )
            self.has_schema = True
            self.created = True
        if levels and not levels[-1]:
            for depth, opened in enumerate(levels):
                if not opened:
                    cursor.execute(_SAVEPOINT[depth] if depth < 32 else f"SAVEPOINT s{depth}")
                    levels[depth] = True
        return conn

    def read_cursor(self) -> apsw.Cursor | None:
        """The runtime's cursor for reads whose rows are taken at once (None: no storage yet)."""
        if not self.has_schema:
            return None
        if self.unopened:
            self._reopen()
        return self.cursor

    def write_cursor(self) -> apsw.Cursor:
        """The runtime's cursor, with everything ``writable()`` opens."""
        self.writable()
        cursor = self.cursor
        assert cursor is not None
        return cursor

    def push_level(self) -> None:
        """Start a turn or a transaction block (its savepoint opens on its first write)."""
        self.levels.append(False)

    def pop_level(self, *, ok: bool) -> None:
        """End the innermost level: keep its writes if ``ok``, else roll exactly them back."""
        depth = len(self.levels) - 1
        opened = self.levels.pop()
        if depth == 0 and self._begin_is_level0:
            self._begin_is_level0 = False
            if not ok:
                self.rollback()  # the batch began with this turn: nothing else to keep
            return
        if opened:
            cursor = self.cursor
            assert cursor is not None
            if depth >= 32:
                cursor.execute(f"RELEASE s{depth}" if ok else f"ROLLBACK TO s{depth}; RELEASE s{depth}")
            else:
                cursor.execute(_RELEASE[depth] if ok else _ROLLBACK_TO[depth])

    #### The batch

    def has_writes(self) -> bool:
        return self.in_batch

    def stored_alarm(self) -> float | None:
        """The alarm as the open transaction (or the file) sees it."""
        cursor = self.read_cursor()
        if cursor is None:
            return None
        # ``.get`` steps to the end, so no statement stays active (one would block a checkpoint)
        at = cursor.execute("SELECT at FROM _actors_alarm WHERE slot = 0").get
        return None if at is None else float(at)

    def is_empty(self) -> bool:
        """No key, no alarm and no user schema object: nothing worth keeping a file for."""
        conn = self.readable()
        if conn is None:
            return True
        cursor = self.cursor  # the kept one: a new object's commit asks this every time
        assert cursor is not None
        return (
            cursor.execute("SELECT 1 FROM _actors_kv LIMIT 1").get is None
            and cursor.execute("SELECT 1 FROM _actors_alarm").get is None
            and not user_schema_objects(conn)
            and conn.execute("PRAGMA user_version").fetchone() == (0,)
        )

    def commit(self, *, checkpoint: bool = False) -> None:
        """COMMIT the batch (durable per the synchronous setting when this returns).

        With ``checkpoint`` (a worker thread) a WAL past ``CHECKPOINT_PAGES`` is then folded into
        the file (``commit_syncs``); SQLite syncs the WAL before it copies any frame, so only
        durable commits reach the file.
        """
        assert self.cursor is not None
        assert not self.levels
        self.in_batch = False
        self.cursor.execute("COMMIT")
        if checkpoint and self.wal_pages >= CHECKPOINT_PAGES:
            assert self.conn is not None
            log, folded = self.conn.wal_checkpoint()
            if folded == log:
                self.wal_pages = 0
                self._wal_header_due = True  # every frame is in the file: the next write restarts the WAL

    @property
    def commit_syncs(self) -> bool:
        """The next COMMIT will fsync, so it belongs in a worker thread: it writes a new WAL's header
        (SQLite syncs that at once, after a checkpoint or in a file opened without a WAL), or the WAL
        has grown past ``CHECKPOINT_PAGES`` and a thread's commit checkpoints it."""
        return self._wal_header_due or self.wal_pages >= CHECKPOINT_PAGES

    def _committed(self, _conn: apsw.Connection, _name: str, pages: int) -> int:
        """SQLite's WAL hook, after every commit: note the WAL's size (no checkpoint here)."""
        self.wal_pages = pages
        self._wal_header_due = False
        return apsw.SQLITE_OK

    def image(self) -> bytes:
        """COMMIT a new object's in-memory first batch and return its database image, marked WAL.

        The creation round (``_creations.py``) writes it to the file, durably; ``materialized()``
        then switches the object to that file. Until then the in-memory database stays, so a failed
        creation rolls back like any failed commit.
        """
        memory = self.conn
        assert memory is not None
        assert self.in_memory
        assert not self.levels
        assert self.cursor is not None
        self.cursor.execute("COMMIT")
        self.in_batch = False
        image = bytearray(memory.serialize("main"))
        self._template_sized = len(image) == len(_empty_database())
        # Bytes 18 and 19 of the header are the file format's write and read versions; 2 means WAL,
        # which is all that ``PRAGMA journal_mode=WAL`` changes in the file.
        image[18] = image[19] = 2
        return bytes(image)

    def materialized(self) -> None:
        """The image is durable under the file's name: the object runs on the file from now on.

        The file is left closed until the object's next read or write opens it (``unopened``): an
        object written once (most of a spread workload) never opens it. Opening costs more than the
        rest of a small object's creation, and apsw scans a list of every connection on each, so the
        cost grows with the open files (``unix-none`` spares SQLite's own list, ``_folderlock.py``).
        """
        memory = self.conn
        assert memory is not None
        self._use(None)
        self.in_memory = False
        self.unopened = self._wal_absent = True
        self._wal_synced = False
        memory.authorizer = None
        # Kept for the next new object only if emptying it leaves the template exactly: no user
        # SQL ran (it can leave state beyond the runtime's tables: TEMP tables, user_version) and
        # the first batch fit in the template's pages (no free page to carry into the next image).
        if self._ran_user_sql or not self._template_sized or len(_MEMORY_SPARES) >= MEMORY_SPARES:
            memory.close()
            return
        try:
            memory.execute(_EMPTY_AGAIN)
        except apsw.Error:
            memory.close()
            return
        _MEMORY_SPARES.append(memory)

    def sync(self) -> None:
        """Make every committed transaction durable: fsync the WAL (and new folder entries).

        Used with ``synchronous=NORMAL``, where COMMIT writes the WAL without fsync: the runtime calls
        this from a worker thread before releasing replies, so the next batch runs meanwhile. SQLite
        still syncs the WAL before and the database after every checkpoint, so the file stays consistent.
        """
        # Opened per sync rather than kept: a live object then holds only SQLite's two descriptors,
        # and the open-file limit bounds how many objects can be live at once.
        fd = os.open(f"{self.path}-wal", os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        if self._db_unsynced:
            fsync_path(self.path)
            self._db_unsynced = False
        first, self._wal_synced = not self._wal_synced, True
        if first or self._new_dirs:
            for folder in {self.path.parent, *(d.parent for d in self._new_dirs)}:
                fsync_path(folder)
            self._new_dirs.clear()

    def rollback(self) -> None:
        """Abandon the batch: every turn in it loses its writes."""
        self.levels.clear()
        self.in_batch = False
        self._begin_is_level0 = False
        if self.unopened:
            return  # nothing open, nothing written since the file was made: it stays as it is
        if self.conn is not None and self.conn.in_transaction:
            self.conn.execute("ROLLBACK")
        # (An in-memory first batch rolled back keeps the template's tables, not the object.)
        self.has_schema = self.conn is not None and not self.in_memory and (
            self.conn.execute("SELECT 1 FROM sqlite_schema WHERE name = '_actors_kv'").fetchone()
            is not None
        )

    def reset_batch_flags(self) -> None:
        self.created = False
        self.alarm_touched = False
        self.deleted_all = False

    def remove(self) -> None:
        """Close and delete the file (after ``delete_all`` left it empty)."""
        self.close()
        if self.in_memory:
            self.in_memory = False
            self.has_schema = False
            return
        for suffix in ("", "-wal", "-shm", "-journal"):
            try:
                os.unlink(f"{self.path}{suffix}")
            except FileNotFoundError:
                pass
        self.has_schema = False

    #### User SQL

    def run_user_sql(self, query: str, params: tuple[Any, ...]) -> tuple[list[Any], tuple[str, ...], int]:
        """Run user SQL under the authorizer; returns rows, column names and rows changed."""
        conn = self.writable()
        self._user_sql = self._ran_user_sql = True
        self._denied = None
        try:
            cursor = conn.cursor()
            described: list[tuple[str, ...]] = [()]

            def describe(cursor: apsw.Cursor, sql: str, bindings: Any) -> bool:
                # Runs before each statement steps: the only moment a statement that returns no row
                # still has a description. The last statement's columns win.
                try:
                    described[0] = tuple(str(column[0]) for column in cursor.description)
                except apsw.ExecutionCompleteError:
                    described[0] = ()
                return True

            cursor.exec_trace = describe
            changes_before = conn.total_changes()
            # The authorizer only runs when a statement is prepared, so a user statement must never
            # reuse a prepared statement of ours with the same text. apsw keys its statement cache by
            # the remaining text of a query, so with the marker appended every user statement's key
            # ends with it and none of ours does: user statements are cached among themselves only
            # (uncached, every INSERT of a chat message was prepared and authorized anew).
            cursor.execute(query + _USER_SQL_MARK, params)
            rows = cursor.fetchall()
            columns = described[0]
        except apsw.AuthError:
            raise SqlNotAllowed(self._denied or "not authorized") from None
        finally:
            self._user_sql = False
        return rows, columns, conn.total_changes() - changes_before

    def _authorize(
        self, action: int, p1: str | None, p2: str | None, db: str | None, trigger: str | None
    ) -> int:
        if not self._user_sql:
            return apsw.SQLITE_OK
        reason = refusal(action, p1, p2)
        if reason is None:
            return apsw.SQLITE_OK
        self._denied = reason
        return apsw.SQLITE_DENY


_EMPTY_DATABASE: bytes | None = None

#: in-memory connections kept for the next new objects' first batches (shared by the process's
#: runtimes), each holding the template's tables, empty again. A fresh connection and ``deserialize``
#: cost the event loop 30-80 µs per new object (more the more connections the process has open), and
#: the first statement after ``deserialize`` parses the schema again; emptying a kept one costs a few
#: µs. ``secure_delete`` zeroes what the deletes free, so no byte of one object's first batch reaches
#: the next object's file (``tests/actors/test_creation_rounds.py``). At most ``MEMORY_SPARES``.
_MEMORY_SPARES: list[apsw.Connection] = []
MEMORY_SPARES = 64
#: empties a kept connection back to the template (the schema version row stays)
_EMPTY_AGAIN = (
    "BEGIN; DELETE FROM _actors_kv; DELETE FROM _actors_alarm; "
    "DELETE FROM _actors_meta WHERE key <> 'schema_version'; COMMIT"
)


def _empty_database() -> bytes:
    """The image of a database holding only the runtime's (empty) tables, made once."""
    global _EMPTY_DATABASE
    if _EMPTY_DATABASE is None:
        conn = apsw.Connection(":memory:")
        conn.execute(f"PRAGMA page_size={PAGE_SIZE}")
        conn.execute(_SCHEMA)
        _EMPTY_DATABASE = conn.serialize("main")
        conn.close()
    return _EMPTY_DATABASE


def move_legacy_file(old: Path, new: Path) -> None:
    """Move a file (and its WAL) from an older version's layout to ``new``, durably.

    Renames within one filesystem: a crash leaves the file whole in one place or the other (the WAL
    is moved first, so a file found at ``new`` always has its WAL beside it).
    """
    new_dirs = [d for d in new.parents[:3] if not d.exists()]
    new.parent.mkdir(parents=True, exist_ok=True)
    for folder in {d.parent for d in new_dirs}:
        fsync_path(folder)
    for suffix in ("-wal", ""):
        if os.path.exists(f"{old}{suffix}"):
            os.rename(f"{old}{suffix}", f"{new}{suffix}")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(f"{old}-shm")  # an index of the WAL, rebuilt from it
    fsync_path(new.parent)
    fsync_path(old.parent)


def write_file(path: Path | str, data: bytes | bytearray, *, fsync: bool = False) -> None:
    """Create (or truncate) ``path`` with ``data``, fsynced with ``fsync``; its folder entry is not."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        if fsync:
            os.fsync(fd)
    finally:
        os.close(fd)


def fsync_path(path: Path | str) -> None:
    """fsync a file or a folder (a folder: makes the entries created or removed in it durable)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
