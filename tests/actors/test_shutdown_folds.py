"""A clean shutdown folds every WAL into its file with one barrier for all (``actors/_folds.py``):
no object file is fsynced on its own, none keeps a ``-wal``, and at no point can a crash lose a
commit (the WAL stays whole until its file is durable)."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import pytest
import trio

from actors import App, Settings, _movework, open_runtime
from actors._walfold import fold_wal
from actors.testing import open_test_runtime

from .objects import Counter
from .vfs import object_syncs

APP = App([Counter])
NAMES = [f"c{i}" for i in range(40)]


def _wal_files(data_dir: Path) -> list[Path]:
    return sorted((data_dir / "objects").rglob("*.sqlite3-wal"))


async def _write_twice(runtime, names: list[str]) -> None:  # type: ignore[no-untyped-def]
    """Each object's second commit goes through its WAL (the first one makes its file)."""
    async with trio.open_nursery() as nursery:
        for name in names:
            nursery.start_soon(runtime.call, APP.id_from_name(Counter, name), "increment", [1])
    async with trio.open_nursery() as nursery:
        for name in names:
            nursery.start_soon(runtime.call, APP.id_from_name(Counter, name), "increment", [2])


async def _values(data_dir: Path, names: list[str]) -> list[int]:
    async with open_runtime(APP, data_dir) as runtime:
        return [await runtime.call(APP.id_from_name(Counter, name), "get") for name in names]


@pytest.mark.parametrize("barrier", ["syncfs", "fsync of each file"])
async def test_a_clean_shutdown_syncs_no_object_file_on_its_own_and_leaves_no_wal(
    tmp_path, recording, monkeypatch, barrier
):
    if barrier != "syncfs":
        monkeypatch.setattr(_movework, "_syncfs", None)
    elif _movework._syncfs is None:
        pytest.skip("no syncfs in this C library")
    async with open_runtime(APP, tmp_path, settings=Settings(idle_timeout=3600)) as runtime:
        await _write_twice(runtime, NAMES)
        assert len(_wal_files(tmp_path)) == len(NAMES)
        before_shutdown = len(object_syncs(recording, tmp_path))
    # Before: every eviction's checkpoint fsynced its file through SQLite, one after the other.
    assert object_syncs(recording, tmp_path)[before_shutdown:] == []
    assert _wal_files(tmp_path) == []
    assert await _values(tmp_path, NAMES) == [3] * len(NAMES)


async def test_the_wal_a_fold_leaves_recovers_everything_if_the_folded_pages_never_reach_the_disk(tmp_path):
    # What a power cut between the shutdown's folds and its barrier can leave: the WAL, whole, and
    # the file as it was before the fold (its new pages only in the lost page cache).
    async with open_runtime(APP, tmp_path, settings=Settings(idle_timeout=3600)) as runtime:
        await _write_twice(runtime, NAMES)
        runtime.crash()  # leaves every WAL beside its file, as a crash does
    wals = _wal_files(tmp_path)
    assert len(wals) == len(NAMES)
    for wal in wals:
        path = wal.with_name(wal.name.removesuffix("-wal"))
        shutil.copyfile(path, tmp_path / "before")
        assert fold_wal(path, sync=False) is True
        assert wal.exists()
        shutil.copyfile(tmp_path / "before", path)  # the folded pages are lost
    assert await _values(tmp_path, NAMES) == [3] * len(NAMES)


async def test_a_failed_barrier_deletes_no_wal_and_the_next_clean_shutdown_folds_them(tmp_path, monkeypatch):
    def failing_barrier(folder: Path) -> None:
        raise OSError(5, f"syncfs of {folder}: Input/output error")

    monkeypatch.setattr(_movework, "_syncfs", _movework._syncfs or (lambda fd: 0))
    monkeypatch.setattr(_movework, "_sync_filesystem", failing_barrier)
    async with open_runtime(APP, tmp_path, settings=Settings(idle_timeout=3600)) as runtime:
        await _write_twice(runtime, NAMES)
    assert len(_wal_files(tmp_path)) == len(NAMES)  # kept: their files may not be durable
    monkeypatch.undo()
    # The run stayed marked unfinished, so the next start lists the WAL files and its clean
    # shutdown folds them, though no object is used meanwhile.
    async with open_runtime(APP, tmp_path):
        pass
    assert _wal_files(tmp_path) == []
    assert await _values(tmp_path, NAMES) == [3] * len(NAMES)


#### Idle and capacity evictions


async def _wait_for(condition, seconds: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    with trio.fail_after(seconds):
        while not condition():  # noqa: ASYNC110  # polls the runtime from outside
            await trio.sleep(0.02)


async def test_idle_evictions_fold_without_an_fsync_each_and_their_wal_files_go_after_the_round(
    tmp_path, recording
):
    async with open_runtime(APP, tmp_path, settings=Settings(idle_timeout=0.3)) as runtime:
        before = len(object_syncs(recording, tmp_path))
        await _write_twice(runtime, NAMES)
        after_commits = len(object_syncs(recording, tmp_path))
        await _wait_for(lambda: runtime.statistics().live_objects == 0 and not _wal_files(tmp_path))
        # Before: each eviction's checkpoint fsynced its file through SQLite.
        assert object_syncs(recording, tmp_path)[after_commits:] == []
        assert after_commits >= before
    assert await _values(tmp_path, NAMES) == [3] * len(NAMES)


async def test_an_object_activated_while_its_fold_round_syncs_keeps_its_wal_and_every_commit(
    tmp_path, monkeypatch
):
    # The round's barrier (an fsync of each file here) waits until the object is live again and
    # has committed more: a round that still deleted its WAL then would lose those commits.
    release = threading.Event()
    real_fsync = _movework._fsync_if_exists

    def held_fsync(path: Path) -> None:
        release.wait(30)
        real_fsync(path)

    monkeypatch.setattr(_movework, "_fsync_if_exists", held_fsync)
    counter = APP.id_from_name(Counter, "c0")
    async with open_runtime(APP, tmp_path, settings=Settings(idle_timeout=0.3)) as runtime:
        await _write_twice(runtime, ["c0"])
        await _wait_for(lambda: runtime.statistics().live_objects == 0)
        assert len(runtime.folds) == 1  # folded, its round held in the barrier
        assert await runtime.call(counter, "increment", [10]) == 13
        release.set()
        await _wait_for(lambda: len(runtime.folds) == 0)
        assert len(_wal_files(tmp_path)) == 1  # its WAL, in use again, was left alone
        assert await runtime.call(counter, "increment", [100]) == 113
        runtime.crash()  # nothing folded at a shutdown: the WAL must hold the last commits
    assert await _values(tmp_path, ["c0"]) == [113]


async def test_an_idle_eviction_of_a_resting_file_folds_it_unsynced_too(tmp_path, recording, autojump_clock):
    settings = Settings(idle_timeout=60, max_open_files=1)
    async with open_test_runtime(APP, tmp_path, settings=settings) as t:
        counter = t.get("Counter", "c")
        assert await counter.increment() == 1
        assert await counter.increment() == 2
        await t.get("Counter", "other").increment()
        await t.get("Counter", "other").increment()  # past max_open_files: c's file rests
        assert t.is_live("Counter", "c")
        assert t.runtime.statistics().files_rested == 1
        assert len(_wal_files(tmp_path)) == 2  # c's beside its closed file, and other's
        synced = len(object_syncs(recording, tmp_path))
        await t.advance(60)  # idle eviction: the WAL is folded in; a round deletes it
        assert not t.is_live("Counter", "c")
        assert _wal_files(tmp_path) == []
        assert object_syncs(recording, tmp_path)[synced:] == []  # no checkpoint's fsync through SQLite
        assert await counter.increment() == 3
    assert await _values(tmp_path, ["c"]) == [3]
