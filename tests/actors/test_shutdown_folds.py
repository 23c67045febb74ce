"""A clean shutdown folds every WAL into its file with one barrier for all (``actors/_folds.py``):
no object file is fsynced on its own, none keeps a ``-wal``, and at no point can a crash lose a
commit (the WAL stays whole until its file is durable)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import trio

from actors import App, Settings, _movework, open_runtime
from actors._leftovers import fold_wal

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
