"""Footprint promises: one self-contained file per object after a clean shutdown, small files for small
objects, files of older versions still open, resting objects keep their state."""

from __future__ import annotations

import os
from pathlib import Path

import apsw
import pytest

from actors import App, DurableObject, Settings, open_runtime
from actors._codec import dumps
from actors.testing import open_test_runtime


class Counter(DurableObject):
    starts = 0

    async def on_start(self) -> None:
        Counter.starts += 1
        self.calls = 0

    async def increment(self) -> int:
        self.calls += 1
        value: int = self.storage.get("value", 0) + 1
        self.storage.put("value", value)
        return value

    async def calls_since_start(self) -> int:
        return self.calls


APP = App([Counter])


@pytest.fixture(autouse=True)
def _reset_counter() -> None:
    Counter.starts = 0


def open_paths() -> set[str]:
    """Paths this process holds a descriptor on."""
    paths = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            paths.add(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:
            pass  # closed meanwhile (the listing's own descriptor)
    return paths


def files_named(folder: Path, suffix: str) -> list[str]:
    return sorted(p.name for p in folder.rglob(f"*{suffix}"))


async def test_no_wal_file_is_left_after_a_clean_shutdown(tmp_path, autojump_clock):
    settings = Settings(max_live_objects=4, idle_timeout=30.0)
    async with open_test_runtime(APP, tmp_path, settings=settings) as t:
        for round_ in range(2):  # the second write of each goes through its WAL
            for i in range(10):  # 10 objects through 4 places: capacity evictions
                assert await t.get(Counter, f"c{i}").increment() == round_ + 1
        await t.advance(5)  # the live ones rest: their files close, their WALs stay
        await t.get(Counter, "c9").increment()  # one is in use at shutdown
        await t.advance(31)  # the others are evicted for idleness
        await t.get(Counter, "c8").increment()
        assert files_named(tmp_path / "objects", "-wal") != []
    assert files_named(tmp_path / "objects", "-wal") == []
    assert len(files_named(tmp_path / "objects", ".sqlite3")) == 10


async def test_no_wal_file_is_left_after_a_clean_shutdown_with_threads(tmp_path):
    # The node's way: commits, fsyncs and closes in worker threads, real time.
    async with open_runtime(APP, tmp_path, settings=Settings(max_live_objects=64)) as runtime:
        for _ in range(2):
            for i in range(100):
                await runtime.get("Counter", f"c{i}").increment()
    assert files_named(tmp_path / "objects", "-wal") == []


async def test_a_one_key_object_takes_at_most_8_kib_on_disk(tmp_path, autojump_clock):
    async with open_test_runtime(APP, tmp_path) as t:
        await t.get(Counter, "one").increment()
        await t.get(Counter, "one").increment()
        path = t.runtime.object_path(t.id(Counter, "one"))
    assert path.stat().st_size <= 8192
    assert path.stat().st_blocks * 512 <= 8192  # what du counts
    assert files_named(path.parent, "-wal") == []


def write_version_1_file(path: Path, cls: str, name: str, hex_id: str, value: int) -> None:
    """A file as versions before 1 KiB pages wrote it: 4 KiB pages, WAL, schema version 1."""
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = apsw.Connection(str(path))
    conn.execute("PRAGMA page_size=4096")
    conn.execute("PRAGMA journal_mode=WAL").fetchall()
    conn.execute(
        """
        CREATE TABLE _actors_meta (key TEXT PRIMARY KEY, value ANY) WITHOUT ROWID, STRICT;
        CREATE TABLE _actors_kv (key TEXT PRIMARY KEY, value BLOB NOT NULL) WITHOUT ROWID;
        CREATE TABLE _actors_alarm (slot INTEGER PRIMARY KEY CHECK (slot = 0), at REAL NOT NULL);
        INSERT INTO _actors_meta VALUES ('schema_version', 1), ('class', ?), ('name', ?), ('id', ?);
        INSERT INTO _actors_kv VALUES ('value', ?);
        """,
        (cls, name, hex_id, dumps(value)),
    )
    conn.close()


async def test_a_file_with_4_kib_pages_from_an_older_version_still_opens(tmp_path, autojump_clock):
    object_id = APP.id_from_name("Counter", "old")
    async with open_test_runtime(APP, tmp_path) as t:
        path = t.runtime.object_path(object_id)
        write_version_1_file(path, "Counter", "old", object_id.hex, 41)
        assert await t.get(Counter, "old").increment() == 42
        await t.restart()
        assert await t.get(Counter, "old").increment() == 43
    conn = apsw.Connection(str(path))
    assert conn.execute("PRAGMA page_size").fetchall() == [(4096,)]  # kept: it is in the header
    conn.close()


async def test_a_resting_object_stays_live_with_its_state(tmp_path, autojump_clock):
    settings = Settings(idle_timeout=60.0, max_open_files=1)
    async with open_test_runtime(APP, tmp_path, settings=settings) as t:
        counter = t.get(Counter, "c")
        assert await counter.increment() == 1
        assert await counter.increment() == 2  # opens the file
        path = str(t.runtime.object_path(t.id(Counter, "c")))
        assert path in open_paths()
        other = t.get(Counter, "other")
        await other.increment()
        await other.increment()  # opens its file: past max_open_files, c's file closes; c stays
        assert t.is_live(Counter, "c")
        assert path not in open_paths()
        assert await counter.increment() == 3
        assert await counter.calls_since_start() == 3  # the same instance: on_start ran once
        assert Counter.starts == 2
        await t.restart(crash=True)
        assert await counter.increment() == 4


async def test_wal_files_a_crash_left_are_folded_in_by_the_next_clean_shutdown(tmp_path, autojump_clock):
    async with open_test_runtime(APP, tmp_path) as t:
        for i in range(5):
            await t.get(Counter, f"c{i}").increment()
            await t.get(Counter, f"c{i}").increment()  # opens the file: a WAL with this commit
        await t.restart(crash=True)  # the five files keep their WALs
        assert len(files_named(tmp_path / "objects", "-wal")) == 5
        assert await t.get(Counter, "c0").increment() == 3  # one is used again (and evicted at close)
    assert files_named(tmp_path / "objects", "-wal") == []
    async with open_test_runtime(APP, tmp_path) as t:
        for i in range(5):
            assert await t.get(Counter, f"c{i}").increment() == (4 if i == 0 else 3)


async def test_wal_files_a_crash_left_are_folded_in_with_threads(tmp_path):
    async with open_runtime(APP, tmp_path, settings=Settings()) as runtime:
        for i in range(5):
            for _ in range(2):
                await runtime.get("Counter", f"c{i}").increment()
        runtime.crash()
    assert len(files_named(tmp_path / "objects", "-wal")) == 5
    async with open_runtime(APP, tmp_path) as runtime:
        assert await runtime.get("Counter", "c1").increment() == 3
    assert files_named(tmp_path / "objects", "-wal") == []
