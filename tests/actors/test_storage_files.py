"""Storage on disk: one SQLite file per object, lazy creation, delete_all, the catalog, durability."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import cbor2
import pytest

from actors import App, Durability, Settings, open_runtime
from actors.errors import UserError
from actors.testing import TestRuntime, open_test_runtime

from .storage_objects import Other, Store

APP = App([Store, Other])


def object_file(t: TestRuntime, cls: str, name: str) -> Path:
    hex_id = t.id(cls, name).hex
    return t.data_dir / "objects" / cls / hex_id[:2] / f"{hex_id}.sqlite3"


def files_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file())


def listed(t: TestRuntime, **options: object) -> list[tuple[str, str | None]]:
    return [(e.id.cls, e.id.name) for e in t.runtime.list_objects(**options)]  # type: ignore[arg-type]


#### One file per object


async def test_a_written_object_has_exactly_one_sqlite_file_at_its_sharded_path(tmp_path):
    async with open_test_runtime(APP, tmp_path) as t:
        await t.get("Store", "s").put("k", 1)
        path = object_file(t, "Store", "s")
        assert sorted((tmp_path / "objects").rglob("*.sqlite3")) == [path]
    # Closed: the WAL was checkpointed into the file and nothing else is left beside it.
    assert files_under(tmp_path / "objects") == [path]


async def test_the_closed_file_is_plain_sqlite_with_the_users_tables_and_the_kv_rows(tmp_path):
    async with open_test_runtime(APP, tmp_path) as t:
        store = t.get("Store", "s")
        await store.put_many({"b": [1, "two"], "a": {"x": None}})
        await store.sql_steps(["CREATE TABLE person (name TEXT)", "INSERT INTO person VALUES ('ann')"])
        path = object_file(t, "Store", "s")
    connection = sqlite3.connect(path)
    try:
        assert connection.execute("SELECT name FROM person").fetchall() == [("ann",)]
        rows = connection.execute("SELECT key, value FROM _actors_kv ORDER BY key").fetchall()
        assert [(key, cbor2.loads(value)) for key, value in rows] == [
            ("a", {"x": None}),
            ("b", [1, "two"]),
        ]
    finally:
        connection.close()


async def test_reading_an_object_that_was_never_written_creates_no_file(tmp_path):
    async with open_test_runtime(APP, tmp_path) as t:
        store = t.get("Store", "s")
        assert await store.get("k", "default") == "default"
        assert await store.get_many(["a", "b"]) == []
        assert await store.list(prefix="a", reverse=True) == []
        assert await store.delete("k") is False
        assert await store.delete_many(["a", "b"]) == 0
        assert await store.get_alarm() is None
        await store.delete_all()
        assert not (tmp_path / "objects").exists()
        assert listed(t) == []
        await t.evict("Store", "s")
        assert not (tmp_path / "objects").exists()
    assert not (tmp_path / "objects").exists()


async def test_a_read_only_sql_query_on_a_new_object_leaves_no_file_and_no_entry(tmp_path):
    async with open_test_runtime(APP, tmp_path) as t:
        store = t.get("Store", "s")
        assert (await store.sql("SELECT 1 + 1"))["rows"] == [[2]]
        assert (await store.sql("PRAGMA user_version"))["rows"] == [[0]]
        assert files_under(tmp_path / "objects") == []
        assert listed(t) == []


async def test_an_object_whose_only_writes_rolled_back_has_no_file_and_no_entry(tmp_path):
    async with open_test_runtime(APP, tmp_path) as t:
        store = t.get("Store", "s")
        with pytest.raises(UserError):
            await store.put_then_fail("k", 1)
        assert files_under(tmp_path / "objects") == []
        assert listed(t) == []


#### delete_all


async def test_delete_all_removes_keys_tables_and_alarm_then_the_file_and_the_entry(tmp_path):
    async with open_test_runtime(APP, tmp_path) as t:
        store = t.get("Store", "s")
        await store.put_many({"a": 1, "b": 2})
        await store.sql_steps(
            [
                "CREATE TABLE t (x)",
                "CREATE INDEX t_x ON t (x)",
                "CREATE VIEW v AS SELECT x FROM t",
                "CREATE TRIGGER t_trigger AFTER INSERT ON t BEGIN SELECT 1; END",
                "INSERT INTO t VALUES (1)",
            ]
        )
        at = t.now() + 3600
        await store.set_alarm(at)
        hex_id = t.id("Store", "s").hex
        assert t.pending_alarms() == {hex_id: at}
        assert listed(t) == [("Store", "s")]
        path = object_file(t, "Store", "s")

        await store.delete_all()
        assert not path.exists()
        assert files_under(tmp_path / "objects") == []
        assert listed(t) == []
        assert t.pending_alarms() == {}
        assert await store.list() == []
        assert await store.get_alarm() is None
        with pytest.raises(UserError, match=r"^no such table: t$"):
            await store.sql("SELECT x FROM t")
        await t.restart()
        assert listed(t) == []
        assert t.pending_alarms() == {}
        assert await store.list() == []


async def test_an_object_written_again_after_delete_all_comes_back(tmp_path):
    async with open_test_runtime(APP, tmp_path) as t:
        store = t.get("Store", "s")
        await store.put("old", 1)
        await store.delete_all()
        await store.put("new", 2)
        assert object_file(t, "Store", "s").exists()
        assert listed(t) == [("Store", "s")]
        await t.restart()
        assert await store.list() == [["new", 2]]
        assert listed(t) == [("Store", "s")]


async def test_delete_all_then_a_write_in_the_same_turn_keeps_only_the_new_write(tmp_path):
    async with open_test_runtime(APP, tmp_path) as t:
        store = t.get("Store", "s")
        await store.put("old", 1)
        await store.sql("CREATE TABLE t (x)")
        await store.delete_all_then_put("new", 2)
        assert listed(t) == [("Store", "s")]
        await t.restart()
        assert await store.list() == [["new", 2]]
        tables = await store.sql("SELECT name FROM sqlite_schema WHERE name = 't'")
        assert tables["rows"] == []


async def test_delete_all_in_a_turn_that_raises_deletes_nothing(tmp_path):
    async with open_test_runtime(APP, tmp_path) as t:
        store = t.get("Store", "s")
        await store.put("k", 1)
        await store.sql_steps(["CREATE TABLE t (x)", "INSERT INTO t VALUES ('row')"])
        at = t.now() + 60
        await store.set_alarm(at)
        with pytest.raises(UserError, match=r"^refused after delete_all$"):
            await store.delete_all_then_fail()
        assert await store.list() == [["k", 1]]
        assert (await store.sql("SELECT x FROM t"))["rows"] == [["row"]]
        assert await store.get_alarm() == at
        assert t.pending_alarms() == {t.id("Store", "s").hex: at}
        assert listed(t) == [("Store", "s")]


async def test_delete_all_removes_tables_linked_by_a_foreign_key(tmp_path):
    async with open_test_runtime(APP, tmp_path) as t:
        store = t.get("Store", "s")
        await store.sql_steps(
            [
                "CREATE TABLE parent (id INTEGER PRIMARY KEY)",
                "CREATE TABLE child (id INTEGER PRIMARY KEY, parent INTEGER REFERENCES parent (id))",
                "INSERT INTO parent VALUES (1)",
                "INSERT INTO child VALUES (1, 1)",
            ]
        )
        await store.delete_all()
        assert listed(t) == []
        assert files_under(tmp_path / "objects") == []


#### The catalog


async def test_list_objects_lists_objects_with_storage_by_class_and_name_prefix(tmp_path):
    async with open_test_runtime(APP, tmp_path) as t:
        for name in ("b1", "a2", "a_x", "a%y", "abz", "a1"):
            await t.get("Store", name).put("k", 1)
        await t.get("Other", "a1").put("k", 1)
        assert await t.get("Store", "a3").get("k") is None  # read only: not listed
        assert await t.get("Store", "a4").list() == []
        expected = ["a%y", "a1", "a2", "a_x", "abz", "b1"]
        assert listed(t, cls="Store") == [("Store", n) for n in expected]
        assert listed(t) == [("Other", "a1")] + [("Store", n) for n in expected]
        assert listed(t, cls="Store", prefix="a") == [("Store", n) for n in expected[:5]]
        assert listed(t, cls="Store", prefix="a_") == [("Store", "a_x")]  # "_" is no wildcard
        assert listed(t, cls="Store", prefix="a%") == [("Store", "a%y")]  # nor is "%"
        assert listed(t, prefix="a1") == [("Other", "a1"), ("Store", "a1")]
        assert listed(t, cls="Other", prefix="b") == []
        assert listed(t, cls="Nope") == []


async def test_a_name_prefix_ending_in_the_last_code_point_still_finds_every_name_under_it(tmp_path):
    # The prefix filter is an index range up to the prefix's successor; U+10FFFF has none.
    names = ["z\U0010ffff", "z\U0010ffff\U0010ffffa", "z\U0010ffffb", "z\ud7ffq", "z\ue000", "{"]
    async with open_test_runtime(APP, tmp_path) as t:
        for name in names:
            await t.get("Store", name).put("k", 1)
        assert listed(t, prefix="z\U0010ffff") == [("Store", n) for n in sorted(names[:3])]
        assert listed(t, prefix="z\ud7ff") == [("Store", "z\ud7ffq")]  # its successor skips surrogates
        assert listed(t, prefix="z") == [("Store", n) for n in sorted(names[:5])]


async def test_list_objects_entries_carry_the_id_the_creation_time_and_the_alarm(
    tmp_path, autojump_clock
):
    async with open_test_runtime(APP, tmp_path) as t:
        created = t.now()
        await t.get("Store", "s").put("k", 1)
        at = created + 100
        await t.get("Store", "s").set_alarm(at)
        (entry,) = t.runtime.list_objects()
        assert (entry.id, entry.created, entry.alarm) == (t.id("Store", "s"), created, at)


async def test_list_objects_pages_with_limit_and_after(tmp_path):
    names = [f"n{i}" for i in range(5)]
    async with open_test_runtime(APP, tmp_path) as t:
        for name in reversed(names):
            await t.get("Store", name).put("k", 1)
        unique = t.app.new_unique_id("Store")
        await t.runtime.get_by_id(unique).put("k", 1)  # no name: sorts as ""
        pages: list[list[str | None]] = []
        after = None
        while True:
            page = t.runtime.list_objects(cls="Store", limit=2, after=after)
            if not page:
                break
            pages.append([e.id.name for e in page])
            last = page[-1].id
            after = (last.cls, last.name or "", last.hex)
        assert pages == [[None, "n0"], ["n1", "n2"], ["n3", "n4"]]
        assert [e.id for e in t.runtime.list_objects(limit=1)] == [unique]


#### Durability settings


@pytest.mark.parametrize("durability", [Durability.FSYNC, Durability.POWER_LOSS_UNSAFE])
async def test_committed_writes_survive_restart_and_crash_under_each_durability(
    tmp_path, durability
):
    settings = Settings(durability=durability)
    async with open_test_runtime(APP, tmp_path, settings=settings) as t:
        store = t.get("Store", "s")
        await store.put("a", 1)
        await store.sql_steps(["CREATE TABLE t (x)", "INSERT INTO t VALUES (1)"])
        await t.restart()
        assert await store.list() == [["a", 1]]
        await store.put("b", 2)
        await store.sql("INSERT INTO t VALUES (2)")
        await t.restart(crash=True)
        assert await store.list() == [["a", 1], ["b", 2]]
        assert (await store.sql("SELECT x FROM t ORDER BY x"))["rows"] == [[1], [2]]
        await store.put("c", 3)
        await t.restart(crash=True)
        assert await store.keys() == ["a", "b", "c"]


#### New files made off the event loop (pipelined FSYNC, real threads)


async def test_a_new_object_is_written_in_memory_then_made_durable_through_a_temporary_file(tmp_path):
    object_id = APP.id_from_name("Store", "s")
    hex_id = object_id.hex
    folder = tmp_path / "objects" / "Store" / hex_id[:2]
    folder.mkdir(parents=True)
    stray = folder / f"{hex_id}.sqlite3.new"
    stray.write_bytes(b"half of a file left by a crash before its rename")
    async with open_runtime(APP, tmp_path) as runtime:
        assert runtime.pipelined_sync
        await runtime.call(object_id, "sql_steps", [["CREATE TABLE t (x)", "INSERT INTO t VALUES (1)"]])
        await runtime.call(object_id, "put", ["k", "v"])
        path = folder / f"{hex_id}.sqlite3"
        assert not stray.exists()
        assert str(folder) in runtime.durable_folders
        assert [(e.id.cls, e.id.name) for e in runtime.list_objects()] == [("Store", "s")]
    assert files_under(tmp_path / "objects") == [path]
    connection = sqlite3.connect(path)
    try:
        assert connection.execute("PRAGMA journal_mode").fetchall() == [("wal",)]
        assert connection.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert connection.execute("SELECT x FROM t").fetchall() == [(1,)]
    finally:
        connection.close()
    async with open_runtime(APP, tmp_path) as runtime:
        assert await runtime.call(object_id, "list") == [["k", "v"]]


async def test_a_new_objects_file_serves_the_calls_after_its_creation_like_any_other(tmp_path):
    # The creating batch leaves the file closed; the next read or write opens it.
    ids = [APP.id_from_name("Store", name) for name in ("read", "fail", "write", "alarm", "idle")]
    async with open_runtime(APP, tmp_path) as runtime:
        for object_id in ids:
            await runtime.call(object_id, "put", ["k", 1])
        read, fail, write, alarm, idle = ids
        assert await runtime.call(read, "get", ["k"]) == 1
        with pytest.raises(UserError):
            await runtime.call(fail, "put_then_fail", ["k", 2])  # rolls back; the file stays
        assert await runtime.call(fail, "list") == [["k", 1]]
        await runtime.call(write, "put", ["k", 3])
        assert await runtime.call(alarm, "get_alarm") is None
        await runtime.call(alarm, "set_alarm", [4e9])
        assert await runtime.call(alarm, "get_alarm") == 4e9
    # Shut down cleanly, every object (including one never opened again) is one file, no WAL beside it.
    assert len(files_under(tmp_path / "objects")) == len(ids)
    async with open_runtime(APP, tmp_path) as runtime:
        expected = {read: 1, fail: 1, write: 3, alarm: 1, idle: 1}
        for object_id, value in expected.items():
            assert await runtime.call(object_id, "list") == [["k", value]]
        assert [e.alarm for e in runtime.list_objects(prefix="alarm")] == [4e9]


async def test_a_new_object_whose_first_batch_rolled_back_in_memory_leaves_no_file(tmp_path):
    object_id = APP.id_from_name("Store", "s")
    async with open_runtime(APP, tmp_path) as runtime:
        with pytest.raises(UserError):
            await runtime.call(object_id, "put_then_fail", ["k", 1])
        assert files_under(tmp_path) == sorted([*tmp_path.glob("catalog.sqlite3*"), tmp_path / "lock"])
        assert runtime.list_objects() == []
        await runtime.call(object_id, "put", ["k", 2])
        assert await runtime.call(object_id, "list") == [["k", 2]]


async def test_a_file_in_the_older_two_level_layout_is_moved_into_place_on_first_use(tmp_path):
    # Versions before the flat layout kept files under objects/<Class>/<h0h1>/<h2h3>/.
    object_id = APP.id_from_name("Store", "old")
    hex_id = object_id.hex
    async with open_runtime(APP, tmp_path) as runtime:
        await runtime.call(object_id, "put", ["k", "kept"])
    path = tmp_path / "objects" / "Store" / hex_id[:2] / f"{hex_id}.sqlite3"
    legacy = tmp_path / "objects" / "Store" / hex_id[:2] / hex_id[2:4] / f"{hex_id}.sqlite3"
    legacy.parent.mkdir()
    path.rename(legacy)
    async with open_runtime(APP, tmp_path) as runtime:
        assert await runtime.call(object_id, "get", ["k"]) == "kept"
        await runtime.call(object_id, "put", ["k2", "new"])
    assert files_under(tmp_path / "objects") == [path]
    async with open_runtime(APP, tmp_path) as runtime:
        assert await runtime.call(object_id, "get", ["k2"]) == "new"
