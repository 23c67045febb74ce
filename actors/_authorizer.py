"""What user SQL may do: the authorizer's rules, and the schema objects the user made.

Guarantees
- User SQL (``storage.sql``) never touches the runtime's tables (``_actors_*``), never controls
  transactions (the runtime does: a turn is one savepoint), never attaches another database, and runs
  only PRAGMAs that read or check (plus ``user_version`` for the user's own migrations).
- ``drop_user_schema`` (``delete_all``) drops every table, view, trigger and index the user made,
  and nothing of the runtime's.

Mechanism: ``ObjectFile`` installs an authorizer that asks ``refusal`` while user SQL is prepared;
a reason refuses the statement (``SqlNotAllowed`` with that reason).
"""

from __future__ import annotations

import apsw

INTERNAL_PREFIX = "_actors_"

TRANSACTION_HINT = (
    "transactions are managed by the runtime: a turn commits as one transaction; "
    "use `with self.storage.transaction():` for an atomic part of a turn"
)

# PRAGMAs user SQL may run: read-only introspection, checks, and user_version for the user's own
# migrations (Cloudflare forbids it; ANCHORS.md §4.I lists that as a user complaint).
_ALLOWED_PRAGMAS = frozenset(
    {
        "user_version", "table_info", "table_xinfo", "table_list", "index_list", "index_info",
        "index_xinfo", "foreign_key_list", "foreign_key_check", "defer_foreign_keys",
        "integrity_check", "quick_check", "optimize", "page_count", "page_size", "freelist_count",
        "data_version", "collation_list", "function_list", "compile_options",
    }
)  # fmt: skip

_TABLE_ACTIONS = frozenset(
    {
        apsw.SQLITE_READ, apsw.SQLITE_INSERT, apsw.SQLITE_UPDATE, apsw.SQLITE_DELETE,
        apsw.SQLITE_CREATE_TABLE, apsw.SQLITE_DROP_TABLE,
        apsw.SQLITE_CREATE_TEMP_TABLE, apsw.SQLITE_DROP_TEMP_TABLE, apsw.SQLITE_ANALYZE,
        apsw.SQLITE_CREATE_VTABLE, apsw.SQLITE_DROP_VTABLE,
    }
)  # fmt: skip
# Actions whose second argument is the table (for ALTER TABLE the first is the schema, "main").
_ON_TABLE_ACTIONS = frozenset(
    {
        apsw.SQLITE_ALTER_TABLE, apsw.SQLITE_CREATE_INDEX, apsw.SQLITE_DROP_INDEX, apsw.SQLITE_CREATE_TRIGGER,
        apsw.SQLITE_DROP_TRIGGER, apsw.SQLITE_CREATE_TEMP_INDEX, apsw.SQLITE_CREATE_TEMP_TRIGGER,
    }
)  # fmt: skip


def refusal(action: int, p1: str | None, p2: str | None) -> str | None:
    if action in (apsw.SQLITE_TRANSACTION, apsw.SQLITE_SAVEPOINT):
        return TRANSACTION_HINT
    if action in (apsw.SQLITE_ATTACH, apsw.SQLITE_DETACH):
        return "ATTACH and DETACH are not allowed: an object sees only its own database"
    if action == apsw.SQLITE_PRAGMA:
        if (p1 or "").lower() in _ALLOWED_PRAGMAS:
            return None
        return f"PRAGMA {p1} is not allowed in object SQL (it is managed by the runtime)"
    table = p1 if action in _TABLE_ACTIONS else p2 if action in _ON_TABLE_ACTIONS else None
    if table is not None and table.lower().startswith(INTERNAL_PREFIX):
        return f"table {table} belongs to the runtime; use the key-value API instead"
    return None


def user_schema_objects(conn: apsw.Connection) -> list[tuple[str, str, str]]:
    """(type, name, sql) of every schema object the user created."""
    rows = conn.execute(
        "SELECT type, name, coalesce(sql, '') FROM sqlite_schema "
        "WHERE name NOT LIKE 'sqlite\\_%' ESCAPE '\\' AND name NOT LIKE '\\_actors\\_%' ESCAPE '\\'"
    ).fetchall()
    return [(str(t), str(n), str(s)) for t, n, s in rows]


def drop_user_schema(conn: apsw.Connection) -> None:
    """Drop every table, view, trigger and index the user made (virtual tables first: they own shadows)."""
    objects = user_schema_objects(conn)
    # Parents may be dropped before their children: check foreign keys at COMMIT, when all are gone.
    conn.execute("PRAGMA defer_foreign_keys = ON")
    order: dict[str, int] = {"trigger": 0, "view": 1, "index": 2, "table": 3}
    objects.sort(key=lambda o: (order.get(o[0], 9), not o[2].upper().startswith("CREATE VIRTUAL")))
    for kind, name, _ in objects:
        quoted = '"' + name.replace('"', '""') + '"'
        if kind == "table" and not _exists(conn, name):
            continue  # a shadow table dropped with its virtual table
        if kind == "index" and not _exists(conn, name):
            continue
        conn.execute(f"DROP {kind.upper()} IF EXISTS {quoted}")


def _exists(conn: apsw.Connection, name: str) -> bool:
    return conn.execute("SELECT 1 FROM sqlite_schema WHERE name = ?", (name,)).fetchone() is not None
