"""The open-file budget (``max_open_files``, ``_resting.py``): at most that many live objects keep
their SQLite file open, the least recently active resting ones close it first, a busy one never, and
no file closes merely because its object has been idle for a while."""

from __future__ import annotations

import os

import pytest
import trio

from actors import App, DurableObject, Settings
from actors.testing import open_test_runtime


class Counter(DurableObject):
    async def increment(self) -> int:
        value: int = self.storage.get("value", 0) + 1
        self.storage.put("value", value)
        return value


class Held(DurableObject):
    """Writes, then waits for ``Held.release`` inside the same turn (uncommitted meanwhile)."""

    release: trio.Event

    async def write_and_wait(self) -> int:
        value: int = self.storage.get("value", 0) + 1
        self.storage.put("value", value)
        await Held.release.wait()
        return value


APP = App([Counter, Held])


@pytest.fixture(autouse=True)
def _fresh_event() -> None:
    Held.release = trio.Event()


def open_object_files(tmp_path) -> set[str]:
    """Object files (not WALs, not the catalog) this process holds a descriptor on."""
    objects = str(tmp_path / "objects")
    paths = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            path = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue  # closed meanwhile (the listing's own descriptor)
        if path.startswith(objects) and path.endswith(".sqlite3"):
            paths.add(path)
    return paths


async def use(t, name: str) -> int:
    """Two calls: the first creates the object, the second opens its file (as later calls find it)."""
    await t.get(Counter, name).increment()
    return await t.get(Counter, name).increment()


async def test_open_files_stay_within_the_budget_and_every_object_stays_live(tmp_path, autojump_clock):
    settings = Settings(idle_timeout=600.0, max_open_files=3)
    async with open_test_runtime(APP, tmp_path, settings=settings) as t:
        for i in range(10):
            await use(t, f"c{i}")
            assert len(open_object_files(tmp_path)) <= 3
        assert all(t.is_live(Counter, f"c{i}") for i in range(10))
        stats = t.runtime.statistics()
        assert stats.open_files == 3
        assert stats.files_rested == 7
        for i in range(10):  # every rested object reopens its file with its state
            assert await t.get(Counter, f"c{i}").increment() == 3
            assert len(open_object_files(tmp_path)) <= 3
        await t.restart(crash=True)  # nothing a rest closed is lost
        for i in range(10):
            assert await t.get(Counter, f"c{i}").increment() == 4


async def test_the_least_recently_active_file_closes_first(tmp_path, autojump_clock):
    settings = Settings(idle_timeout=600.0, max_open_files=2)
    async with open_test_runtime(APP, tmp_path, settings=settings) as t:
        await use(t, "a")
        await use(t, "b")
        await t.get(Counter, "a").increment()  # a is now more recent than b
        await use(t, "c")  # past the budget: b closes, not a
        path = {name: str(t.runtime.object_path(t.id(Counter, name))) for name in "abc"}
        assert open_object_files(tmp_path) == {path["a"], path["c"]}


async def test_no_file_closes_only_because_its_object_is_idle(tmp_path, autojump_clock):
    async with open_test_runtime(APP, tmp_path, settings=Settings(idle_timeout=600.0)) as t:
        for i in range(5):
            await use(t, f"c{i}")
        opened = open_object_files(tmp_path)
        assert len(opened) == 5
        await t.advance(300)  # idle, live, under the budget: a cache, not a timer
        assert open_object_files(tmp_path) == opened
        assert t.runtime.statistics().files_rested == 0


async def test_a_busy_object_keeps_its_file_past_the_budget_until_it_rests(tmp_path, autojump_clock):
    settings = Settings(idle_timeout=600.0, max_open_files=1)
    async with open_test_runtime(APP, tmp_path, settings=settings) as t:
        held = t.get(Held, "h")
        Held.release.set()
        await held.write_and_wait()  # creates it
        Held.release = trio.Event()
        held_path = str(t.runtime.object_path(t.id(Held, "h")))
        results: list[int] = []
        async with trio.open_nursery() as nursery:

            async def hold() -> None:
                results.append(await held.write_and_wait())

            nursery.start_soon(hold)
            await t.advance(1)  # its turn has written and waits, uncommitted, its file open
            assert held_path in open_object_files(tmp_path)
            await use(t, "c")  # past the budget, but h is busy: its file stays open
            assert held_path in open_object_files(tmp_path)
            assert len(open_object_files(tmp_path)) == 2
            Held.release.set()
        assert results == [2]
        await t.advance(5)  # the watch closes the least recently active resting file: c's (h committed last)
        assert open_object_files(tmp_path) == {held_path}
        assert await t.get(Counter, "c").increment() == 3  # reopens c's file: h's closes
        assert open_object_files(tmp_path) == {str(t.runtime.object_path(t.id(Counter, "c")))}
        Held.release = trio.Event()
        Held.release.set()
        assert await held.write_and_wait() == 3


def test_the_budget_must_be_positive():
    with pytest.raises(ValueError, match="max_open_files"):
        Settings(max_open_files=0)
