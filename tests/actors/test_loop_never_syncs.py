"""The event loop never waits for a sync of an object's file: SQLite's checkpoints, and the sync of a
new WAL's header that SQLite makes inside the first COMMIT after a checkpoint or an open, run in
worker threads; and a busy object's WAL stays bounded (``CHECKPOINT_PAGES``), so reopening it stays
cheap."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import apsw
import pytest

from actors import App, Settings, open_runtime
from actors._file import CHECKPOINT_PAGES, PAGE_SIZE

from .objects import Counter

APP = App([Counter])


class _RecordingFile(apsw.VFSFile):
    def __init__(self, vfs: RecordingVFS, name: apsw.URIFilename | str, flags: list[int]) -> None:
        self._vfs = vfs
        self._name = name.filename() if isinstance(name, apsw.URIFilename) else str(name)
        super().__init__(vfs.base, name, flags)

    def xSync(self, flags: int) -> None:
        self._vfs.syncs.append((self._name, threading.current_thread() is threading.main_thread()))
        super().xSync(flags)


class RecordingVFS(apsw.VFS):
    """The system's VFS, passing every call through, recording which thread synced which file."""

    def __init__(self) -> None:
        self.syncs: list[tuple[str, bool]] = []
        self.base = apsw.vfs_names()[0]  # the default: the system's
        super().__init__("record-syncs", self.base, makedefault=True)

    def xOpen(self, name: apsw.URIFilename | str | None, flags: list[int]) -> apsw.VFSFile:
        assert name is not None
        return _RecordingFile(self, name, flags)


@pytest.fixture
def recording() -> Iterator[RecordingVFS]:
    vfs = RecordingVFS()
    try:
        yield vfs
    finally:
        vfs.unregister()


def _object_syncs(vfs: RecordingVFS, data_dir: Path) -> list[tuple[str, bool]]:
    objects = str(data_dir / "objects")
    return [(name, main) for name, main in vfs.syncs if name.startswith(objects)]


async def test_checkpoints_and_new_wal_headers_sync_in_threads_and_the_wal_stays_bounded(tmp_path, recording):
    commits = 3 * CHECKPOINT_PAGES
    async with open_runtime(APP, tmp_path, settings=Settings(idle_timeout=3600)) as runtime:
        counter = APP.id_from_name(Counter, "c")
        for expected in range(1, commits + 1):
            assert await runtime.call(counter, "increment") == expected
        (wal,) = (tmp_path / "objects").rglob("*.sqlite3-wal")
        # one frame of 24 bytes' header per page, a 32-byte file header, and one batch past the mark
        assert wal.stat().st_size <= 32 + (CHECKPOINT_PAGES + 4) * (PAGE_SIZE + 24)
    async with open_runtime(APP, tmp_path) as runtime:  # opened without a WAL: a new header
        assert await runtime.call(counter, "increment") == commits + 1
    syncs = _object_syncs(recording, tmp_path)
    database_syncs = [name for name, _ in syncs if name.endswith(".sqlite3")]
    assert len(database_syncs) >= 2  # checkpoints ran (each syncs the file), and the closes' ones
    assert [name for name, main in syncs if main] == []
