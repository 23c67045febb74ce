"""The SQL half of ``self.storage``: user tables, what user SQL may not touch, transactions, rollback."""

from __future__ import annotations

import pytest
import trio

from actors import App
from actors.errors import InvalidArgument, ObjectReset, SqlNotAllowed, UserError
from actors.testing import open_test_runtime

from .storage_objects import Ledger, Parts, Store

APP = App([Store, Ledger, Parts])

TRANSACTION_HINT = (
    r"^transactions are managed by the runtime: a turn commits as one transaction; "
    r"use `with self\.storage\.transaction\(\):` for an atomic part of a turn$"
)


def runtime_table(name: str) -> str:
    return rf"^table {name} belongs to the runtime; use the key-value API instead$"


#### User tables and SqlResult


async def test_user_tables_take_inserts_and_answer_selects_with_rows_and_columns(tmp_path):
    async with open_test_runtime(APP, tmp_path) as t:
        store = t.get("Store", "s")
        await store.sql("CREATE TABLE person (name TEXT PRIMARY KEY, age INTEGER, photo BLOB)")
        inserted = await store.sql(
            "INSERT INTO person VALUES (?, ?, ?), (?, ?, NULL)", "ann", 31, b"\x89PNG", "bob", 42
        )
        assert inserted == {"rows": [], "columns": [], "rows_written": 2}
        selected = await store.sql("SELECT name, age AS years, photo FROM person ORDER BY name")
        assert selected["rows"] == [["ann", 31, b"\x89PNG"], ["bob", 42, None]]
        assert selected["columns"] == ["name", "years", "photo"]
        returning = await store.sql("INSERT INTO person (name) VALUES ('cy') RETURNING name, age")
        assert (returning["rows"], returning["columns"]) == ([["cy", None]], ["name", "age"])
        assert (await store.sql("UPDATE person SET age = age + 1 WHERE age > 0"))["rows_written"] == 2
        assert (await store.sql("DELETE FROM person"))["rows_written"] == 3


async def test_sql_result_offers_one_scalar_dicts_len_and_iteration(tmp_path):
    # SqlResult is built from a real query inside the object, then inspected there.
    class Views(Store):
        async def views(self) -> dict[str, object]:
            self.storage.sql("CREATE TABLE p (name TEXT, age INTEGER)")
            self.storage.sql("INSERT INTO p VALUES ('ann', 31), ('bob', 42)")
            both = self.storage.sql("SELECT name, age FROM p ORDER BY name")
            one = self.storage.sql("SELECT name, age FROM p WHERE name = ?", "bob")
            none = self.storage.sql("SELECT name FROM p WHERE 0")
            errors = []
            for result in (both, none):
                try:
                    result.one()
                except ValueError as exc:
                    errors.append(str(exc))
            return {
                "one": list(one.one()),
                "scalar": self.storage.sql("SELECT count(*) FROM p").scalar(),
                "dicts": both.dicts(),
                "len": [len(both), len(one), len(none)],
                "iter": [list(row) for row in both],
                "errors": errors,
                "repr": repr(both),
            }

    async with open_test_runtime(App([Views]), tmp_path) as t:
        assert await t.get("Views", "v").views() == {
            "one": ["bob", 42],
            "scalar": 2,
            "dicts": [{"name": "ann", "age": 31}, {"name": "bob", "age": 42}],
            "len": [2, 1, 0],
            "iter": [["ann", 31], ["bob", 42]],
            "errors": ["expected exactly one row, got 2", "expected exactly one row, got 0"],
            "repr": "SqlResult(columns=('name', 'age'), rows=2)",
        }


async def test_a_select_that_matches_no_row_still_names_its_columns(tmp_path):
    async with open_test_runtime(APP, tmp_path) as t:
        store = t.get("Store", "s")
        await store.sql("CREATE TABLE p (name TEXT, age INTEGER)")
        assert (await store.sql("SELECT name, age FROM p"))["columns"] == ["name", "age"]


async def test_a_statement_that_writes_no_row_reports_zero_rows_written(tmp_path):
    async with open_test_runtime(APP, tmp_path) as t:
        store = t.get("Store", "s")
        result = await store.sql_steps(
            ["CREATE TABLE p (name TEXT)", "INSERT INTO p VALUES ('a'), ('b')", "SELECT name FROM p"]
        )
        assert result["rows_written"] == 0


async def test_pragma_user_version_can_be_set_and_read_back_and_survives_restart(tmp_path):
    async with open_test_runtime(APP, tmp_path) as t:
        store = t.get("Store", "s")
        assert (await store.sql("PRAGMA user_version"))["rows"] == [[0]]
        await store.sql_steps(["CREATE TABLE migrated (x)", "PRAGMA user_version = 3"])
        version = await store.sql("PRAGMA user_version")
        assert (version["rows"], version["columns"]) == ([[3]], ["user_version"])
        await t.restart()
        assert (await store.sql("PRAGMA user_version"))["rows"] == [[3]]


async def test_sql_errors_reach_the_caller_as_user_error_named_after_the_apsw_exception(tmp_path):
    async with open_test_runtime(APP, tmp_path) as t:
        store = t.get("Store", "s")
        with pytest.raises(UserError, match=r'^near "SELEC": syntax error$') as info:
            await store.sql("SELEC 1")
        assert info.value.type == "SQLError"
        with pytest.raises(UserError, match=r"^no such table: missing$") as info:
            await store.sql("SELECT * FROM missing")
        assert info.value.type == "SQLError"
        await store.sql("CREATE TABLE u (x UNIQUE)")
        await store.sql("INSERT INTO u VALUES (1)")
        with pytest.raises(UserError, match=r"^UNIQUE constraint failed: u\.x$") as info:
            await store.sql("INSERT INTO u VALUES (1)")
        assert info.value.type == "ConstraintError"


async def test_a_query_that_is_not_a_str_is_refused(tmp_path):
    async with open_test_runtime(APP, tmp_path) as t:
        with pytest.raises(InvalidArgument, match=r"^sql\(\) takes the query as a str$"):
            await t.get("Store", "s").sql(b"SELECT 1")


#### What user SQL may not do


@pytest.mark.parametrize(
    "query",
    [
        "BEGIN",
        "BEGIN IMMEDIATE",
        "COMMIT",
        "END",
        "ROLLBACK",
        "SAVEPOINT mine",
        "RELEASE mine",
        "RELEASE s0",
        "ROLLBACK TO s0",
        "SELECT 1; COMMIT",
    ],
)
async def test_transaction_control_is_refused_with_a_pointer_to_transaction(tmp_path, query):
    async with open_test_runtime(APP, tmp_path) as t:
        store = t.get("Store", "s")
        await store.put("k", 1)
        with pytest.raises(SqlNotAllowed, match=TRANSACTION_HINT):
            await store.sql(query)
        assert await store.get("k") == 1


@pytest.mark.parametrize(
    ("query", "params", "table"),
    [
        ("SELECT value FROM _actors_kv WHERE key = ?", ("k",), "_actors_kv"),
        ("SELECT 1; SELECT value FROM _actors_kv WHERE key = ?", ("k",), "_actors_kv"),
        ("INSERT OR REPLACE INTO _actors_kv (key, value) VALUES (?, ?)", ("k", b"\xf6"), "_actors_kv"),
        ("SELECT * FROM main._actors_kv", (), "_actors_kv"),
        ('SELECT count(*) FROM "_ACTORS_KV"', (), "(?i:_actors_kv)"),
        ("UPDATE _actors_kv SET value = x'f6'", (), "_actors_kv"),
        ("DELETE FROM _actors_kv", (), "_actors_kv"),
        ("DROP TABLE _actors_kv", (), "_actors_kv"),
        ("CREATE INDEX kv_value ON _actors_kv (value)", (), "_actors_kv"),
        ("CREATE TEMP TRIGGER t AFTER INSERT ON _actors_kv BEGIN SELECT 1; END", (), "_actors_kv"),
        ("SELECT at FROM _actors_alarm WHERE slot = 0", (), "_actors_alarm"),
        ("INSERT OR REPLACE INTO _actors_alarm (slot, at) VALUES (0, ?)", (1.0,), "_actors_alarm"),
        ("DELETE FROM _actors_alarm", (), "_actors_alarm"),
        ("SELECT * FROM _actors_meta", (), "_actors_meta"),
        ("UPDATE _actors_meta SET value = 'x'", (), "_actors_meta"),
        ("DROP TABLE _actors_meta", (), "_actors_meta"),
        ("CREATE TABLE _actors_mine (x)", (), "_actors_mine"),
        ('CREATE TABLE "_Actors_Mine" (x)', (), "_Actors_Mine"),
    ],
)
async def test_the_runtime_tables_are_refused_even_to_the_text_of_the_runtime_statements(
    tmp_path, query, params, table
):
    async with open_test_runtime(APP, tmp_path) as t:
        store = t.get("Store", "s")
        with pytest.raises(SqlNotAllowed, match=runtime_table(table)):
            # get() and put() run the runtime's own statements first, so their text is cached
            await store.get_then_sql("k", query, *params)
        assert await store.list() == []  # the refusal failed the turn: its put() rolled back too
        await store.put("k", "kept")
        assert await store.list() == [["k", "kept"]]


async def test_views_and_triggers_cannot_reach_the_runtime_tables(tmp_path):
    async with open_test_runtime(APP, tmp_path) as t:
        store = t.get("Store", "s")
        await store.put("k", "secret")
        with pytest.raises(SqlNotAllowed, match=runtime_table("_actors_kv")):
            await store.sql_steps(["CREATE VIEW v AS SELECT * FROM _actors_kv", "SELECT * FROM v"])
        with pytest.raises(SqlNotAllowed, match=runtime_table("_actors_kv")):
            await store.sql_steps(
                [
                    "CREATE TABLE t (x)",
                    "CREATE TRIGGER t_kv AFTER INSERT ON t "
                    "BEGIN INSERT OR REPLACE INTO _actors_kv VALUES ('k', x'f6'); END",
                    "INSERT INTO t VALUES (1)",
                ]
            )
        assert await store.list() == [["k", "secret"]]


@pytest.mark.parametrize(
    ("query", "table"),
    [
        ("ALTER TABLE _actors_kv RENAME TO mine", "_actors_kv"),
        ("ALTER TABLE _actors_kv ADD COLUMN extra", "_actors_kv"),
        ("ALTER TABLE _actors_meta RENAME COLUMN value TO renamed", "_actors_meta"),
        ("ALTER TABLE _actors_alarm RENAME TO mine", "_actors_alarm"),
    ],
)
async def test_altering_a_runtime_table_is_refused(tmp_path, query, table):
    async with open_test_runtime(APP, tmp_path) as t:
        store = t.get("Store", "s")
        await store.put("k", 1)
        with pytest.raises(SqlNotAllowed, match=runtime_table(table)):
            await store.sql(query)
        assert await store.get("k") == 1


@pytest.mark.parametrize(
    "query", ["ATTACH DATABASE 'other.sqlite3' AS other", "ATTACH ':memory:' AS m", "DETACH other"]
)
async def test_attach_and_detach_are_refused(tmp_path, query):
    async with open_test_runtime(APP, tmp_path) as t:
        with pytest.raises(
            SqlNotAllowed,
            match=r"^ATTACH and DETACH are not allowed: an object sees only its own database$",
        ):
            await t.get("Store", "s").sql(query)


@pytest.mark.parametrize(
    ("query", "pragma"),
    [
        ("PRAGMA journal_mode", "journal_mode"),
        ("PRAGMA journal_mode = DELETE", "journal_mode"),
        ("PRAGMA synchronous = OFF", "synchronous"),
        ("PRAGMA foreign_keys = OFF", "foreign_keys"),
        ("PRAGMA locking_mode = NORMAL", "locking_mode"),
        ("PRAGMA writable_schema = ON", "writable_schema"),
    ],
)
async def test_pragmas_the_runtime_manages_are_refused(tmp_path, query, pragma):
    async with open_test_runtime(APP, tmp_path) as t:
        with pytest.raises(
            SqlNotAllowed,
            match=rf"^PRAGMA {pragma} is not allowed in object SQL \(it is managed by the runtime\)$",
        ):
            await t.get("Store", "s").sql(query)


#### Atomicity: turns and transaction() blocks


async def test_a_turn_that_raises_rolls_back_its_kv_and_sql_writes(tmp_path):
    class Mixed(Store):
        async def write_everything_then_fail(self) -> None:
            self.storage.put("a", "changed")
            self.storage.delete("b")
            self.storage.put("new", 1)
            self.storage.sql("INSERT INTO t VALUES ('new')")
            self.storage.sql("UPDATE t SET x = 'changed'")
            self.storage.sql("CREATE TABLE t2 (y)")
            self.storage.sql("PRAGMA user_version = 9")
            raise KeyError("refused after writing")

    async with open_test_runtime(App([Mixed]), tmp_path) as t:
        mixed = t.get("Mixed", "m")
        await mixed.put_many({"a": "original", "b": 2})
        await mixed.sql_steps(["CREATE TABLE t (x)", "INSERT INTO t VALUES ('original')"])
        with pytest.raises(UserError, match=r"^'refused after writing'$") as info:
            await mixed.write_everything_then_fail()
        assert info.value.type == "KeyError"
        assert await mixed.list() == [["a", "original"], ["b", 2]]
        assert (await mixed.sql("SELECT x FROM t"))["rows"] == [["original"]]
        tables = "SELECT name FROM sqlite_schema WHERE name IN ('t', 't2') ORDER BY name"
        assert (await mixed.sql(tables))["rows"] == [["t"]]
        assert (await mixed.sql("PRAGMA user_version"))["rows"] == [[0]]


async def test_a_transaction_block_that_raises_rolls_back_only_its_own_writes(tmp_path):
    async with open_test_runtime(APP, tmp_path) as t:
        parts = t.get("Parts", "p")
        await parts.setup()
        assert await parts.block_fails_inside_turn() == "abandon the block"
        assert await parts.state() == {"keys": ["after", "before"], "log": ["after"]}


async def test_a_transaction_block_reraises_so_an_uncaught_failure_rolls_back_the_turn(tmp_path):
    async with open_test_runtime(APP, tmp_path) as t:
        parts = t.get("Parts", "p")
        await parts.setup()
        with pytest.raises(UserError, match=r"^abandon the block and the turn$"):
            await parts.block_fails_and_turn_fails()
        assert await parts.state() == {"keys": [], "log": []}


async def test_a_transaction_block_that_completes_keeps_its_writes(tmp_path):
    async with open_test_runtime(APP, tmp_path) as t:
        parts = t.get("Parts", "p")
        await parts.setup()
        await parts.block_succeeds()
        await t.restart()
        assert await parts.state() == {"keys": ["inside"], "log": ["inside"]}


async def test_a_failed_inner_block_leaves_the_outer_block_and_its_earlier_writes(tmp_path):
    async with open_test_runtime(APP, tmp_path) as t:
        parts = t.get("Parts", "p")
        await parts.inner_fails()  # the object's first writes happen inside the blocks
        await parts.setup()
        assert await parts.state() == {"keys": ["outer", "outer after inner"], "log": []}
        assert await parts.get("outer") == 1


async def test_a_failed_outer_block_also_undoes_an_inner_block_that_completed(tmp_path):
    async with open_test_runtime(APP, tmp_path) as t:
        parts = t.get("Parts", "p")
        await parts.setup()
        await parts.outer_fails_after_inner_succeeded()
        assert await parts.state() == {"keys": ["turn"], "log": []}


#### Group commit failure


async def test_a_failed_batch_commit_fails_every_call_of_the_batch_and_resets_the_object(tmp_path):
    Ledger.activations = 0
    async with open_test_runtime(APP, tmp_path) as t:
        ledger = t.get("Ledger", "l")
        await ledger.open_account(1)  # activate first so the calls below queue together
        assert Ledger.activations == 1
        outcomes: dict[str, object] = {}

        async def post(account: int, key: str) -> None:
            try:
                outcomes[key] = await ledger.post(account, key)
            except Exception as exc:
                outcomes[key] = exc

        async with trio.open_nursery() as nursery:
            for account, key in ((1, "first"), (2, "no such account"), (1, "third")):
                nursery.start_soon(post, account, key)
        assert sorted(outcomes) == ["first", "no such account", "third"]
        for outcome in outcomes.values():
            assert isinstance(outcome, ObjectReset)
            assert str(outcome) == "Ledger/l: the commit of this turn's batch failed; nothing was applied"
        assert await ledger.state() == {"accounts": [1], "entries": [], "keys": []}
        assert Ledger.activations == 2  # the instance was discarded; on_start ran again
        await ledger.post(1, "after the reset")
        await t.restart()
        assert await ledger.state() == {"accounts": [1], "entries": [1], "keys": ["after the reset"]}
