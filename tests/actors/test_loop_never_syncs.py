"""The event loop never waits for a sync of an object's file: SQLite's checkpoints, and the sync of a
new WAL's header that SQLite makes inside the first COMMIT after a checkpoint or an open, run in
worker threads; and a busy object's WAL stays bounded (``CHECKPOINT_PAGES``), so reopening it stays
cheap."""

from __future__ import annotations

from actors import App, Settings, open_runtime
from actors._file import CHECKPOINT_PAGES, PAGE_SIZE

from .objects import Counter
from .vfs import object_syncs

APP = App([Counter])


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
    syncs = object_syncs(recording, tmp_path)
    database_syncs = [name for name, _ in syncs if name.endswith(".sqlite3")]
    assert len(database_syncs) >= 2  # checkpoints ran (each syncs the file), and the closes' ones
    assert [name for name, main in syncs if main] == []
