"""Creation rounds: many new objects made durable together (catalog entries and files), replies only
after, a failed file failing only its own object.

These run the real runtime (pool threads, real files). A round is held with a named pipe in place of
one object's ``<name>.new``: its writer blocks opening the pipe until the test opens the other end
(then the write or the fsync fails on the pipe). A file that cannot be written is a folder put where
its ``.new`` goes. Every wait is bounded (``fail_after``).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
import trio
import trio.testing

from actors import App, Runtime, Settings, _creations, open_runtime
from actors.errors import ObjectReset

from .objects import Counter
from .storage_objects import Store

APP = App([Counter])
OTHERS = 12


def path_of(runtime: Runtime, name: str) -> Path:
    return runtime.object_path(APP.id_from_name("Counter", name))


def temporary_of(runtime: Runtime, name: str) -> Path:
    path = path_of(runtime, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    return Path(f"{path}.new")


def leftovers(folder: Path) -> list[Path]:
    """Temporary files under ``folder`` (a sync helper: no pathlib walk inside an async test)."""
    return list(folder.rglob("*.new"))


def catalog_names(runtime: Runtime) -> set[str | None]:
    return {entry.id.name for entry in runtime.list_objects(limit=1000)}


def increment_into(runtime: Runtime, replies: dict[str, object]) -> Callable[[str], Awaitable[None]]:
    """A call of ``increment`` on a counter that leaves its result, or its ObjectReset, in ``replies``."""

    async def call(name: str) -> None:
        try:
            replies[name] = await runtime.get("Counter", name).increment()
        except ObjectReset as exc:
            replies[name] = exc

    return call


@contextlib.asynccontextmanager
async def close_after(fds: list[int]) -> AsyncIterator[None]:
    """Close the descriptors ``fds`` holds once the block is done (a named pipe's reader)."""
    try:
        yield
    finally:
        for fd in fds:
            os.close(fd)


async def test_creations_wait_for_their_round_and_a_file_that_cannot_be_written_fails_only_its_object(
    tmp_path,
):
    names = [f"o{i}" for i in range(OTHERS)]
    with trio.fail_after(20):
        async with open_runtime(APP, tmp_path) as runtime:
            # The blocker's round writes its file into a named pipe: the writer waits for a reader.
            os.mkfifo(temporary_of(runtime, "blocker"))
            # o0's file cannot be written: a folder stands where its .new goes.
            temporary_of(runtime, "o0").mkdir()
            replies: dict[str, object] = {}
            call = increment_into(runtime, replies)

            readers: list[int] = []

            def release_blocker() -> None:
                """Open the pipe's other end, and keep it open until the calls are done: the held
                write goes on (and fails on the pipe), whether the thread opened its end already or
                opens it later (a loaded machine can delay it past ``wait_all_tasks_blocked``)."""
                readers.append(os.open(temporary_of(runtime, "blocker"), os.O_RDONLY | os.O_NONBLOCK))

            async with close_after(readers), trio.open_nursery() as nursery:
                nursery.start_soon(call, "blocker")
                await trio.testing.wait_all_tasks_blocked()  # its round is in flight, held
                try:
                    for name in names:
                        nursery.start_soon(call, name)
                    await trio.testing.wait_all_tasks_blocked()
                    # Every other object ran its turn and waits for the next round: no reply, no
                    # file under its name and no catalog entry yet.
                    assert replies == {}
                    assert runtime.creations.waiting == OTHERS
                    assert not any(path_of(runtime, name).exists() for name in names)
                    assert catalog_names(runtime) == {"blocker"}
                finally:
                    release_blocker()  # even if an assertion failed: closing waits for the round

            assert isinstance(replies.pop("blocker"), ObjectReset)
            assert isinstance(replies.pop("o0"), ObjectReset)
            assert replies == {name: 1 for name in names[1:]}
            # The failed ones have no file under their name (their entries ran ahead: harmless).
            assert not path_of(runtime, "blocker").exists()
            assert not path_of(runtime, "o0").exists()
            assert catalog_names(runtime) == {"blocker", *names}
            # Once the obstacle is gone, the next call creates the object.
            temporary_of(runtime, "o0").rmdir()
            assert await runtime.get("Counter", "o0").increment() == 1
        async with open_runtime(APP, tmp_path) as runtime:
            for name in names:
                assert await runtime.get("Counter", name).get() == 1
            assert await runtime.get("Counter", "blocker").get() == 0


async def test_with_sync_volume_a_file_that_cannot_be_written_fails_only_its_object(tmp_path):
    """Two ``syncfs`` per round instead of the files' and folders' fsyncs; a failed write still
    fails only its own object."""
    names = [f"v{i}" for i in range(OTHERS)]
    with trio.fail_after(20):
        async with open_runtime(APP, tmp_path, settings=Settings(sync_volume=True)) as runtime:
            temporary_of(runtime, "v3").mkdir()
            replies: dict[str, object] = {}
            call = increment_into(runtime, replies)

            async with trio.open_nursery() as nursery:
                for name in names:
                    nursery.start_soon(call, name)
            assert isinstance(replies.pop("v3"), ObjectReset)
            assert replies == {name: 1 for name in names if name != "v3"}
        async with open_runtime(APP, tmp_path) as runtime:
            for name in names:
                assert await runtime.get("Counter", name).get() == (0 if name == "v3" else 1)


async def test_a_failed_catalog_transaction_fails_its_round_and_renames_none_of_its_files(
    tmp_path, monkeypatch
):
    names = [f"c{i}" for i in range(OTHERS)]
    with trio.fail_after(20):
        async with open_runtime(APP, tmp_path) as runtime:
            os.mkfifo(temporary_of(runtime, "blocker"))
            errors: dict[str, BaseException] = {}

            async def call(name: str) -> None:
                try:
                    await runtime.get("Counter", name).increment()
                except ObjectReset as exc:
                    errors[name] = exc

            def refuse(*args: object) -> None:
                raise OSError("the catalog's disk is full")

            readers: list[int] = []
            async with close_after(readers), trio.open_nursery() as nursery:
                nursery.start_soon(call, "blocker")
                await trio.testing.wait_all_tasks_blocked()
                try:
                    monkeypatch.setattr(runtime.catalog, "record_all", refuse)
                    for name in names:
                        nursery.start_soon(call, name)
                    await trio.testing.wait_all_tasks_blocked()
                finally:  # the pipe's reader stays open until the calls are done (see above)
                    readers.append(os.open(temporary_of(runtime, "blocker"), os.O_RDONLY | os.O_NONBLOCK))
            monkeypatch.undo()
            assert sorted(errors) == sorted(["blocker", *names])
            assert not any(path_of(runtime, name).exists() for name in names)
            # (The blocker's own round may have recorded it before the catalog was made to fail.)
            assert catalog_names(runtime) - {"blocker"} == set()
            # The next round records and creates them.
            async with trio.open_nursery() as nursery:
                for name in names:
                    nursery.start_soon(runtime.get("Counter", name).increment)
            assert catalog_names(runtime) - {"blocker"} == set(names)
        async with open_runtime(APP, tmp_path) as runtime:
            for name in names:
                assert await runtime.get("Counter", name).get() == 1


@pytest.mark.parametrize("sync_volume", [False, True], ids=["fsync", "syncfs"])
@pytest.mark.parametrize("objects", [1, 200])
async def test_created_objects_survive_a_restart_with_complete_files_and_catalog_entries(
    tmp_path, objects, sync_volume
):
    names = [f"n{i}" for i in range(objects)]
    settings = Settings(sync_volume=sync_volume)
    with trio.fail_after(30):
        async with open_runtime(APP, tmp_path, settings=settings) as runtime:
            async with trio.open_nursery() as nursery:
                for name in names:
                    nursery.start_soon(runtime.get("Counter", name).increment, 7)
            # Every folder a file was made in is known durable now; no .new is left.
            assert {str(path_of(runtime, name).parent) for name in names} <= runtime.durable_folders
            assert not leftovers(tmp_path / "objects")
        async with open_runtime(APP, tmp_path) as runtime:
            assert catalog_names(runtime) == set(names)
            for name in names:
                assert await runtime.get("Counter", name).get() == 7


async def test_a_new_objects_temporary_table_never_reaches_the_next_new_object(tmp_path):
    """First batches run in memory, on connections kept across creations: never one that ran user
    SQL (a TEMP table outlives the main database's replacement)."""
    app = App([Store])
    with trio.fail_after(20):
        async with open_runtime(app, tmp_path) as runtime:
            for name in ("a", "b", "c"):
                object_id = app.id_from_name("Store", name)
                seen = await runtime.call(object_id, "sql", ["SELECT name FROM sqlite_temp_schema"])
                assert seen["rows"] == []
                # One batch creates the object and a TEMP table on its in-memory connection.
                await runtime.call(object_id, "get_then_sql", ["k", "CREATE TEMP TABLE scratch (x)"])
            for name in ("a", "b", "c"):
                stored = await runtime.call(app.id_from_name("Store", name), "get", ["k"])
                assert stored == "written by put"


async def test_no_byte_of_a_new_objects_first_batch_reaches_the_next_new_objects_file(tmp_path):
    """The in-memory connection of one first batch serves the next new object, emptied: the deleted
    rows are zeroed (secure_delete), not left in the free space of the next file's pages."""
    app = App([Store])
    secret = "secret-" * 20  # fits the template's pages (no overflow page): the connection is kept
    with trio.fail_after(20):
        async with open_runtime(app, tmp_path) as runtime:
            first = app.id_from_name("Store", "a-first-object-with-a-long-name")
            second = app.id_from_name("Store", "b")
            await runtime.call(first, "put", ["key", secret])
            await runtime.call(second, "put", ["k", 1])
            image = read_bytes(runtime.object_path(second))
        assert len(image) == 4096  # the template's four pages
        assert b"secret-" not in image
        assert b"a-first-object" not in image
        async with open_runtime(app, tmp_path) as runtime:
            assert await runtime.call(first, "get", ["key"]) == secret
            assert await runtime.call(second, "list") == [["k", 1]]


def read_bytes(path: Path) -> bytes:
    """(A sync helper: no blocking pathlib call inside an async test.)"""
    return path.read_bytes()


async def test_an_alarm_set_by_the_first_batch_is_in_the_catalog_entry_its_round_records(tmp_path):
    app = App([Store])
    at = 4_102_444_800.0  # 2100-01-01: never due during the test
    with trio.fail_after(20):
        async with open_runtime(app, tmp_path) as runtime:
            with_alarm = app.id_from_name("Store", "with-alarm")
            without = app.id_from_name("Store", "without")
            await runtime.call(with_alarm, "set_alarm", [at])
            await runtime.call(without, "put", ["k", 1])
            alarms = {entry.id.name: entry.alarm for entry in runtime.list_objects()}
            assert alarms == {"with-alarm": at, "without": None}
        async with open_runtime(app, tmp_path) as runtime:
            assert await runtime.call(with_alarm, "get_alarm") == at


async def test_an_unexpected_error_in_a_round_fails_its_creations_instead_of_hanging_them(
    tmp_path, monkeypatch
):
    def broken(current: object, names: list[str]) -> Callable[[], None]:
        def fail() -> None:
            raise RuntimeError("a bug in the second stage")

        return fail

    with trio.fail_after(20):
        async with open_runtime(APP, tmp_path) as runtime:
            monkeypatch.setattr(_creations, "_folder_part", broken)
            with pytest.raises(ObjectReset):
                await runtime.get("Counter", "x").increment()
            monkeypatch.undo()
            assert await runtime.get("Counter", "x").increment() == 1
