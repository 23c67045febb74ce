"""``self.storage``: the synchronous storage API of one object.

Guarantees
- Synchronous because SQLite is local: a read sees every earlier write of this object, including the
  uncommitted writes of the current turn and of earlier turns in the same batch.
- Every write joins the current turn's transaction: it becomes durable with the turn's commit, before the
  turn's reply leaves, and is rolled back if the turn raises (see ``_activation.py``).
- Keys are str of at most ``MAX_KEY_BYTES`` UTF-8 bytes; values are plain values of at most
  ``MAX_VALUE_BYTES`` once CBOR encoded; multi-key calls take at most ``MAX_KEYS_PER_CALL`` keys. ``list``
  returns keys in UTF-8 byte order (which is str order).
- Storage can only be used inside a turn (a method call, ``on_start``, ``alarm`` or a socket event);
  anywhere else it raises RuntimeError rather than writing outside any transaction.
"""

from __future__ import annotations

import contextlib
import datetime
import math
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from . import _codec
from ._authorizer import drop_user_schema
from ._file import ObjectFile
from ._turn import current_turn
from .errors import InvalidArgument, LimitExceeded
from .limits import MAX_KEY_BYTES, MAX_KEYS_PER_CALL, MAX_VALUE_BYTES

__all__ = ["SqlResult", "Storage"]

_MAX_CODE_POINT = 0x10FFFF


class SqlResult:
    """The rows of one ``storage.sql()`` call, read eagerly (no cursor outlives the call)."""

    __slots__ = ("columns", "rows", "rows_written")

    def __init__(self, rows: list[tuple[Any, ...]], columns: tuple[str, ...], rows_written: int):
        #: column names of the last statement
        self.columns = columns
        #: every row as a tuple
        self.rows = rows
        #: rows inserted, updated or deleted by the last statement
        self.rows_written = rows_written

    def __iter__(self) -> Iterator[tuple[Any, ...]]:
        return iter(self.rows)

    def __len__(self) -> int:
        return len(self.rows)

    def one(self) -> tuple[Any, ...]:
        """The only row; ValueError unless there is exactly one."""
        if len(self.rows) != 1:
            raise ValueError(f"expected exactly one row, got {len(self.rows)}")
        return self.rows[0]

    def scalar(self) -> Any:
        """The first column of the only row."""
        return self.one()[0]

    def dicts(self) -> list[dict[str, Any]]:
        """Rows as dicts keyed by column name."""
        return [dict(zip(self.columns, row, strict=False)) for row in self.rows]

    def __repr__(self) -> str:
        return f"SqlResult(columns={self.columns!r}, rows={len(self.rows)})"


class Storage:
    """An object's storage: key-value pairs, its own SQL tables and its alarm, in one SQLite file."""

    __slots__ = ("_epoch_now", "_file")

    def __init__(self, file: ObjectFile, epoch_now: Any) -> None:
        self._file = file
        self._epoch_now = epoch_now

    def _in_turn(self) -> ObjectFile:
        file = self._file
        context = current_turn.get()
        # The calling task must be in the object's running turn (or a task that turn started): a
        # leftover task must not slip its writes into some later turn's transaction.
        if (
            not file.levels
            or context is None
            or context.activation.file is not file
            or context.chain is not context.activation.current_chain
        ):
            raise RuntimeError("storage can only be used inside a turn of its object")
        return file

    #### Key-value

    def get(self, key: str, default: Any = None) -> Any:
        """The value stored under ``key``, or ``default``."""
        _check_key(key)
        cursor = self._in_turn().read_cursor()
        if cursor is None:
            return default
        # ``.get`` reads the one value and finishes the statement (value is NOT NULL: None = absent)
        data = cursor.execute("SELECT value FROM _actors_kv WHERE key = ?", (key,)).get
        return default if data is None else _codec.loads(data)

    def get_many(self, keys: Iterable[str]) -> dict[str, Any]:
        """The stored keys among ``keys`` with their values (missing keys are left out)."""
        keys = _check_keys(keys)
        conn = self._in_turn().readable()
        if conn is None or not keys:
            return {}
        marks = ",".join("?" * len(keys))
        rows = conn.execute(f"SELECT key, value FROM _actors_kv WHERE key IN ({marks})", keys)
        found = {k: _codec.loads(v) for k, v in rows}
        return {k: found[k] for k in keys if k in found}

    def put(self, key: str, value: Any) -> None:
        """Store ``value`` under ``key`` (replacing any value)."""
        _check_key(key)
        data = _encode_value(key, value)
        self._in_turn().write_cursor().execute(
            "INSERT OR REPLACE INTO _actors_kv (key, value) VALUES (?, ?)", (key, data)
        )

    def put_many(self, entries: Mapping[str, Any]) -> None:
        """Store every pair of ``entries`` (all or none, like every write of a turn)."""
        if not isinstance(entries, Mapping):
            raise InvalidArgument(f"put_many takes a mapping, not {type(entries).__name__}")
        _check_keys(entries.keys())
        rows = [(key, _encode_value(key, value)) for key, value in entries.items()]
        self._in_turn().writable().executemany(
            "INSERT OR REPLACE INTO _actors_kv (key, value) VALUES (?, ?)", rows
        )

    def delete(self, key: str) -> bool:
        """Delete ``key``; True if it existed."""
        _check_key(key)
        file = self._in_turn()
        if file.readable() is None:
            return False
        conn = file.writable()
        conn.execute("DELETE FROM _actors_kv WHERE key = ?", (key,))
        return conn.changes() > 0

    def delete_many(self, keys: Iterable[str]) -> int:
        """Delete every key of ``keys``; returns how many existed."""
        keys = _check_keys(keys)
        file = self._in_turn()
        if file.readable() is None or not keys:
            return 0
        conn = file.writable()
        marks = ",".join("?" * len(keys))
        conn.execute(f"DELETE FROM _actors_kv WHERE key IN ({marks})", keys)
        return conn.changes()

    def list(
        self,
        *,
        prefix: str | None = None,
        start: str | None = None,
        end: str | None = None,
        limit: int | None = None,
        reverse: bool = False,
    ) -> dict[str, Any]:
        """Pairs with ``start <= key < end`` and the given prefix, in key order (descending if reverse).

        ``limit`` caps the number of pairs (after ordering, so ``reverse=True, limit=1`` is the last key).
        """
        clauses: list[str] = []
        params: list[Any] = []
        for bound, op in ((start, ">="), (end, "<")):
            if bound is not None:
                _check_key(bound, what="bound")
                clauses.append(f"key {op} ?")
                params.append(bound)
        if prefix is not None:
            _check_key(prefix, what="prefix")
            if prefix:
                clauses.append("key >= ?")
                params.append(prefix)
                upper = _prefix_upper_bound(prefix)
                if upper is not None:
                    clauses.append("key < ?")
                    params.append(upper)
        if limit is not None and (type(limit) is not int or limit < 0):
            raise InvalidArgument("limit must be a non-negative int")
        conn = self._in_turn().readable()
        if conn is None or limit == 0:
            return {}
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        order = "DESC" if reverse else "ASC"
        query = f"SELECT key, value FROM _actors_kv {where} ORDER BY key {order} LIMIT ?"
        params.append(-1 if limit is None else limit)
        return {k: _codec.loads(v) for k, v in conn.execute(query, params)}

    #### SQL

    def sql(self, query: str, *params: Any) -> SqlResult:
        """Run SQL on the object's own database (its user tables live beside the runtime's).

        Raises SqlNotAllowed for BEGIN/COMMIT/SAVEPOINT (use ``transaction()``), ATTACH, PRAGMAs other
        than read-only ones and ``user_version``, and any use of the runtime's ``_actors_*`` tables.
        SQLite's own errors propagate as ``apsw`` exceptions.
        """
        if type(query) is not str:
            raise InvalidArgument("sql() takes the query as a str")
        rows, columns, written = self._in_turn().run_user_sql(query, params)
        return SqlResult(rows, columns, written)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """An atomic part of a turn: if the block raises, only its writes roll back (then it re-raises)."""
        file = self._in_turn()
        file.push_level()
        try:
            yield
        except BaseException:
            file.pop_level(ok=False)
            raise
        file.pop_level(ok=True)

    #### Alarm

    def set_alarm(self, at: float | datetime.datetime) -> None:
        """Run ``alarm()`` at or after ``at`` (epoch seconds or an aware datetime); replaces any alarm."""
        when = _alarm_time(at)
        file = self._in_turn()
        file.writable().execute("INSERT OR REPLACE INTO _actors_alarm (slot, at) VALUES (0, ?)", (when,))
        file.alarm_touched = True
        file.alarm_writes += 1

    def get_alarm(self) -> float | None:
        """The pending alarm's time in epoch seconds, or None."""
        return self._in_turn().stored_alarm()

    def delete_alarm(self) -> None:
        """Cancel the pending alarm, if any."""
        file = self._in_turn()
        if file.readable() is None:
            return
        file.writable().execute("DELETE FROM _actors_alarm")
        file.alarm_touched = True
        file.alarm_writes += 1

    def delete_all(self) -> None:
        """Delete every key, every user table and the alarm, atomically with the turn.

        Once committed, an object left empty has its file deleted and leaves the node's catalog.
        """
        file = self._in_turn()
        if file.readable() is None:
            return
        conn = file.writable()
        conn.execute("DELETE FROM _actors_kv; DELETE FROM _actors_alarm;")
        drop_user_schema(conn)
        file.alarm_touched = True
        file.deleted_all = True


def _check_key(key: Any, *, what: str = "key") -> None:
    if type(key) is not str:
        raise InvalidArgument(f"storage {what} must be a str, not {type(key).__name__}")
    if key.isascii():
        size = len(key)
    else:
        try:
            size = len(key.encode("utf-8"))
        except UnicodeEncodeError:
            raise InvalidArgument(f"storage {what} is not valid Unicode (a lone surrogate)") from None
    if size > MAX_KEY_BYTES:
        raise LimitExceeded(
            f"storage {what} is {size} bytes; MAX_KEY_BYTES is {MAX_KEY_BYTES}", limit="MAX_KEY_BYTES"
        )


def _check_keys(keys: Iterable[str]) -> list[str]:
    if isinstance(keys, str | bytes):
        raise InvalidArgument("expected an iterable of keys, not a single key")
    keys = list(keys)
    if len(keys) > MAX_KEYS_PER_CALL:
        raise LimitExceeded(
            f"{len(keys)} keys in one call; MAX_KEYS_PER_CALL is {MAX_KEYS_PER_CALL}",
            limit="MAX_KEYS_PER_CALL",
        )
    for key in keys:
        _check_key(key)
    return keys


_PLAIN_SCALARS = (type(None), bool, int, float, str, bytes)


def _encode_value(key: str, value: Any) -> bytes:
    if type(value) not in _PLAIN_SCALARS:  # a scalar needs no walk (and no message made for it)
        problem = _codec.describe_unserializable(value, f"value of {key!r}")
        if problem:
            raise InvalidArgument(problem)
    try:
        data = _codec.dumps(value)
    except UnicodeEncodeError:
        raise InvalidArgument(f"value of {key!r} holds a string that is not valid Unicode") from None
    if len(data) > MAX_VALUE_BYTES:
        raise LimitExceeded(
            f"value of {key!r} is {len(data)} bytes encoded; MAX_VALUE_BYTES is {MAX_VALUE_BYTES}",
            limit="MAX_VALUE_BYTES",
        )
    return data


def _prefix_upper_bound(prefix: str) -> str | None:
    """The least string above every string that starts with ``prefix`` (None: no upper bound)."""
    stripped = prefix.rstrip(chr(_MAX_CODE_POINT))
    if not stripped:
        return None
    last = ord(stripped[-1]) + 1
    if 0xD800 <= last <= 0xDFFF:  # surrogates are not valid UTF-8; skip to the next scalar value
        last = 0xE000
    return stripped[:-1] + chr(last)


def _alarm_time(at: Any) -> float:
    if isinstance(at, datetime.datetime):
        if at.tzinfo is None:
            raise InvalidArgument("set_alarm needs an aware datetime (with tzinfo) or epoch seconds")
        return at.timestamp()
    if type(at) in (int, float) and math.isfinite(at):
        return float(at)
    raise InvalidArgument(f"set_alarm takes epoch seconds or an aware datetime, not {at!r}")
