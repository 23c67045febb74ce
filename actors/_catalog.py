"""The node's catalog: every object that has storage, and every pending alarm, in one SQLite file.

Guarantees
- The object's own file is the truth; the catalog is an index that is never behind it in a way that loses
  anything: an object's entry (with its alarm) is committed *before* the object's commit that creates it
  or changes its alarm. A crash in between leaves the catalog ahead (an entry or alarm the file lacks),
  which is harmless: a stale alarm wakes the object, which finds no due alarm and corrects the entry.
- When ``delete_all`` empties an object, its file is deleted first and its entry after, so a crash in
  between leaves at most an entry for an object with no data (listed, but empty).

It is written from commit worker threads (one lock serialises them) and read from the trio thread.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import apsw

from ._ids import ObjectId

_SCHEMA = """
CREATE TABLE IF NOT EXISTS objects (
    id TEXT PRIMARY KEY,
    class TEXT NOT NULL,
    name TEXT,
    created REAL NOT NULL,
    alarm REAL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS objects_by_alarm ON objects (alarm) WHERE alarm IS NOT NULL;
CREATE TABLE IF NOT EXISTS node_state (key TEXT PRIMARY KEY, value ANY) WITHOUT ROWID;
"""
# The listing's order, as an index on a generated column (a row-value seek needs a column: with the
# expression itself SQLite seeks on the class alone and walks the class up to the cursor). A page of
# ``list`` reads only its rows; without it SQLite sorted every entry for every page. An older catalog
# gets the column and index on first open (seconds at a million entries, once); the index replaces
# ``objects_by_name`` (class, name), which no query used since the order became (class, name or "", id).
_LISTING_INDEX = """
CREATE INDEX IF NOT EXISTS objects_by_key ON objects (class, sort_name, id);
DROP INDEX IF EXISTS objects_by_name;
"""


@dataclass(frozen=True, slots=True)
class CatalogEntry:
    id: ObjectId
    created: float  # epoch seconds of the first commit
    alarm: float | None  # pending alarm, epoch seconds


class Catalog:
    """The catalog database of one data folder."""

    def __init__(self, path: Path, *, synchronous: str) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()  # the connection
        # group commit of record(): tickets queued, written, and failures by ticket
        self._round_lock = threading.Condition()
        self._pending: list[tuple[Any, ...]] = []
        self._queued = 0
        self._written = 0
        self._writing = False
        self._errors: dict[int, BaseException] = {}
        self._conn = apsw.Connection(str(path))
        for pragma in ("journal_mode=WAL", f"synchronous={synchronous}", "busy_timeout=5000"):
            self._conn.execute(f"PRAGMA {pragma}").fetchall()
        self._conn.execute(_SCHEMA)
        columns = {row[1] for row in self._conn.execute("PRAGMA table_xinfo(objects)")}
        #: the catalog is new, or was made by a version before this column (and the staging marker)
        self.upgraded = "sort_name" not in columns
        if self.upgraded:
            self._conn.execute(
                "ALTER TABLE objects ADD COLUMN sort_name TEXT AS (coalesce(name, '')) VIRTUAL"
            )
        self._conn.execute(_LISTING_INDEX)

    def record(self, object_id: ObjectId, alarm: float | None, now: float) -> None:
        """Insert or update an object's entry with its alarm (durable when this returns).

        Called from commit threads. Group commit: the first thread to arrive writes every record
        queued so far in one transaction (one fsync) while later arrivals queue for the next round, so
        creating thousands of objects at once does not cost one catalog fsync each.
        """
        row = (object_id.hex, object_id.cls, object_id.name, now, alarm)
        with self._round_lock:
            self._pending.append(row)
            ticket = self._queued = self._queued + 1
            while self._written < ticket:
                if self._writing:
                    self._round_lock.wait()
                    continue
                rows, self._pending = self._pending, []
                upto, self._writing = self._queued, True
                self._round_lock.release()
                error: BaseException | None = None
                try:
                    self._write(rows)
                except BaseException as exc:
                    error = exc
                finally:
                    self._round_lock.acquire()
                    self._writing = False
                    self._written = upto
                    if error is not None:
                        for failed in range(upto - len(rows) + 1, upto + 1):
                            self._errors[failed] = error
                    self._round_lock.notify_all()
            error = self._errors.pop(ticket, None)
        if error is not None:
            raise error

    def _write(self, rows: list[tuple[Any, ...]]) -> None:
        """One transaction, committed (and fsynced) when this returns."""
        self._execute_many(
            "INSERT INTO objects (id, class, name, created, alarm) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT (id) DO UPDATE SET alarm = excluded.alarm",
            rows,
        )

    def _execute_many(self, statement: str, rows: Sequence[tuple[Any, ...]]) -> None:
        """``statement`` for each row, in one transaction committed (and fsynced) when this returns."""
        # Not ``with self._conn:``: apsw holds the GIL through that block's COMMIT, fsync included,
        # which stops the event loop and every other thread for a disk flush. ``execute`` releases it.
        with self._lock:
            cursor = self._conn.cursor()
            cursor.execute("BEGIN")
            try:
                cursor.executemany(statement, rows)
                cursor.execute("COMMIT")
            except BaseException:
                if self._conn.in_transaction:
                    cursor.execute("ROLLBACK")
                raise

    def record_all(self, entries: Sequence[tuple[ObjectId, float | None]], now: float) -> None:
        """Insert or update the entries (object, alarm) in one transaction, durable when this returns
        (objects adopted from another node). Blocks: call it from a worker thread."""
        self._write([(i.hex, i.cls, i.name, now, alarm) for i, alarm in entries])

    def forget_all(self, hex_ids: Sequence[str]) -> None:
        """Delete the entries in one transaction, durable when this returns. Blocks like ``record_all``."""
        self._execute_many("DELETE FROM objects WHERE id = ?", [(h,) for h in hex_ids])

    def held(self, hex_ids: Sequence[str]) -> set[str]:
        """Those of ``hex_ids`` that have an entry."""
        found: set[str] = set()
        with self._lock:
            for start in range(0, len(hex_ids), 500):  # under SQLite's limit of bound parameters
                chunk = hex_ids[start : start + 500]
                marks = ",".join("?" * len(chunk))
                rows = self._conn.execute(f"SELECT id FROM objects WHERE id IN ({marks})", chunk)
                found.update(str(row[0]) for row in rows)
        return found

    def set_alarm(self, object_id: ObjectId, alarm: float | None) -> None:
        """Correct an existing entry's alarm (after the object showed it was stale)."""
        with self._lock:
            self._conn.execute("UPDATE objects SET alarm = ? WHERE id = ?", (alarm, object_id.hex))

    def forget(self, object_id: ObjectId) -> None:
        with self._lock:
            self._conn.execute("DELETE FROM objects WHERE id = ?", (object_id.hex,))

    def get(self, hex_id: str) -> CatalogEntry | None:
        with self._lock:
            row = self._conn.execute(
                "SELECT id, class, name, created, alarm FROM objects WHERE id = ?", (hex_id,)
            ).fetchone()
        return None if row is None else _entry(row)

    def next_alarms(self, after: tuple[float, str], limit: int) -> list[tuple[float, ObjectId]]:
        """Up to ``limit`` pending alarms in (time, id) order after ``after`` (from the alarm index)."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT alarm, id, class, name FROM objects WHERE alarm IS NOT NULL "
                "AND (alarm, id) > (?, ?) ORDER BY alarm, id LIMIT ?",
                (*after, limit),
            ).fetchall()
        return [(float(at), ObjectId(str(cls), name, str(hex_id))) for at, hex_id, cls, name in rows]  # type: ignore[arg-type]

    def list(
        self,
        *,
        cls: str | None = None,
        prefix: str | None = None,
        limit: int = 100,
        after: tuple[str, str, str] | None = None,
    ) -> list[CatalogEntry]:
        """Entries ordered by (class, name, id), starting after the key ``after``.

        Objects with no name (unique ids) sort as if their name were "".
        """
        clauses: list[str] = []
        params: list[Any] = []
        if cls is not None:
            clauses.append("class = ?")
            params.append(cls)
        if prefix:
            # A range of the index (names with the prefix sort from it to its successor), checked too.
            clauses.append("sort_name >= ? AND substr(sort_name, 1, ?) = ?")
            params += [prefix, len(prefix), prefix]
            successor = _successor(prefix)
            if successor is not None:
                clauses.append("sort_name < ?")
                params.append(successor)
        if after is not None:
            clauses.append("(class, sort_name, id) > (?, ?, ?)")
            params += list(after)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        params.append(limit)
        with self._lock:
            rows = self._conn.execute(
                f"SELECT id, class, name, created, alarm FROM objects {where} "
                "ORDER BY class, sort_name, id LIMIT ?",
                params,
            ).fetchall()
        return [_entry(row) for row in rows]  # type: ignore[arg-type]

    def ids(self) -> tuple[str, ...]:
        """The hex id of every object with storage, in no particular order."""
        with self._lock:
            rows = self._conn.execute("SELECT id FROM objects").fetchall()
        return tuple(str(row[0]) for row in rows)

    def count(self) -> int:
        with self._lock:
            row: Any = self._conn.execute("SELECT count(*) FROM objects").fetchone()
        return int(row[0])

    def begin_run(self) -> bool:
        """Mark the data folder in use (durably); True if the run before did not reach ``end_run``
        (it crashed; see ``_leftovers.py``)."""
        with self._lock:
            row = self._conn.execute("SELECT value FROM node_state WHERE key = 'running'").fetchone()
            self._conn.execute("INSERT OR REPLACE INTO node_state VALUES ('running', 1)")
        return row is not None

    def end_run(self) -> None:
        """The run ended cleanly: every object file is self-contained (durable when this returns)."""
        with self._lock:
            self._conn.execute("DELETE FROM node_state WHERE key = 'running'")

    def close(self) -> None:
        with self._lock:
            self._conn.close()


def _entry(row: tuple[str, str, str | None, float, float | None]) -> CatalogEntry:
    hex_id, cls, name, created, alarm = row
    return CatalogEntry(ObjectId(cls, name, hex_id), float(created), alarm)


def _successor(prefix: str) -> str | None:
    """The least string greater than every string starting with ``prefix`` (None: there is none).

    SQLite compares text as UTF-8 bytes, the same order as code points."""
    while prefix:
        last = ord(prefix[-1])
        if last < 0x10FFFF:
            following = last + 1 if not 0xD800 <= last + 1 <= 0xDFFF else 0xE000
            return prefix[:-1] + chr(following)
        prefix = prefix[:-1]
    return None
