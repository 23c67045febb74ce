"""Activation and eviction: lazy activation, on_start, idle and capacity eviction, restart."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from actors import App, DurableObject, Hooks, Settings
from actors.errors import ActivationFailed, ShuttingDown
from actors.testing import open_test_runtime

from .objects import Counter


class Starting(DurableObject):
    """Counts its activations durably and in memory."""

    activations = 0
    fail_next = False

    def __init__(self) -> None:
        self.cache: int | None = None

    async def on_start(self) -> None:
        Starting.activations += 1
        if Starting.fail_next:
            Starting.fail_next = False
            raise RuntimeError("migration failed")
        self.storage.put("starts", self.storage.get("starts", 0) + 1)
        self.cache = self.storage.get("starts")

    async def starts(self) -> int | None:
        return self.cache


class EventLog(Hooks):
    def __init__(self) -> None:
        self.events: list[str] = []

    def activated(self, cls: str, seconds: float) -> None:
        self.events.append(f"activated {cls}")

    def evicted(self, cls: str, reason: str) -> None:
        self.events.append(f"evicted {cls} {reason}")


APP = App([Counter, Starting])


async def test_on_start_runs_once_per_activation_before_any_call(tmp_path, autojump_clock):
    Starting.activations = 0
    async with open_test_runtime(APP, tmp_path) as t:
        stub = t.get("Starting", "s")
        assert await stub.starts() == 1
        assert await stub.starts() == 1
        await t.evict("Starting", "s")
        assert await stub.starts() == 2
    assert Starting.activations == 2


async def test_on_start_failure_fails_queued_calls_and_the_next_call_retries(tmp_path):
    Starting.activations = 0
    Starting.fail_next = True
    async with open_test_runtime(APP, tmp_path) as t:
        stub = t.get("Starting", "s")
        with pytest.raises(ActivationFailed, match=r"^on_start raised RuntimeError: migration failed$"):
            await stub.starts()
        assert not t.is_live("Starting", "s")
        assert await stub.starts() == 1  # the failed on_start wrote nothing
    assert Starting.activations == 2


async def test_an_idle_object_is_evicted_after_the_idle_timeout_with_state_intact(
    tmp_path, autojump_clock
):
    hooks = EventLog()
    async with open_test_runtime(APP, tmp_path, hooks=hooks) as t:
        counter = t.get("Counter", "c")
        await counter.increment()
        idle_timeout = Settings().idle_timeout  # the default
        await t.advance(idle_timeout - 0.001)
        assert t.is_live("Counter", "c")
        await t.advance(0.001)
        assert not t.is_live("Counter", "c")
        assert await counter.increment() == 2
    assert hooks.events[:3] == ["activated Counter", "evicted Counter idle", "activated Counter"]


async def test_an_object_is_never_evicted_mid_turn(tmp_path, autojump_clock):
    async with open_test_runtime(APP, tmp_path, settings=Settings(idle_timeout=1.0)) as t:
        counter = t.get("Counter", "c")
        assert await counter.call("slow_increment", 5.0) == 1
        assert t.is_live("Counter", "c")
        await t.advance(1.0)
        assert not t.is_live("Counter", "c")


async def test_the_live_object_cap_evicts_the_least_recently_used_idle_object(tmp_path):
    hooks = EventLog()
    async with open_test_runtime(APP, tmp_path, settings=Settings(max_live_objects=2), hooks=hooks) as t:
        for name in ("a", "b"):
            await t.get("Counter", name).increment()
        await t.get("Counter", "a").increment()  # b is now least recently used
        await t.get("Counter", "c").increment()
        await trio.testing.wait_all_tasks_blocked()
        assert [t.is_live("Counter", n) for n in "abc"] == [True, False, True]
        assert "evicted Counter capacity" in hooks.events
        assert await t.get("Counter", "b").increment() == 2


async def test_one_id_has_at_most_one_live_instance(tmp_path, autojump_clock):
    async with open_test_runtime(APP, tmp_path, settings=Settings(idle_timeout=0.5)) as t:
        counter = t.get("Counter", "c")
        async with trio.open_nursery() as nursery:
            for i in range(50):
                nursery.start_soon(counter.increment)
                if i % 7 == 0:
                    await t.advance(0.5)  # evictions race with new calls
        assert await counter.get() == 50
        assert t.statistics().live_objects <= 1


async def test_state_survives_restart_and_crash_restart(tmp_path):
    async with open_test_runtime(APP, tmp_path) as t:
        counter = t.get("Counter", "c")
        await counter.increment()
        await t.restart()
        assert await counter.increment() == 2
        await t.restart(crash=True)
        assert await counter.get() == 2


async def test_a_crash_loses_the_uncommitted_turn_but_nothing_committed(tmp_path, autojump_clock):
    async with open_test_runtime(APP, tmp_path) as t:
        counter = t.get("Counter", "c")
        await counter.increment()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_expect_shutting_down, counter.call("slow_increment", 60.0))
            await trio.testing.wait_all_tasks_blocked()
            await t.restart(crash=True)
        assert await counter.get() == 1


async def _expect_shutting_down(call):  # type: ignore[no-untyped-def]
    with pytest.raises(ShuttingDown):
        await call


async def test_closing_drains_queued_calls_before_returning(tmp_path, autojump_clock):
    results: list[int] = []
    async with open_test_runtime(APP, tmp_path) as t:
        counter = t.get("Counter", "c")

        async def call() -> None:
            results.append(await counter.call("slow_increment", 1.0))

        async with trio.open_nursery() as nursery:
            for _ in range(3):
                nursery.start_soon(call)
            await trio.testing.wait_all_tasks_blocked()
            draining = t.runtime
            nursery.start_soon(t.restart)
            await trio.testing.wait_all_tasks_blocked()
            with pytest.raises(ShuttingDown, match=r"^the runtime is shutting down$"):
                await draining.call(counter.id, "increment")
        assert sorted(results) == [1, 2, 3]
        assert await counter.get() == 3


async def test_export_is_a_consistent_snapshot_that_sqlite3_opens(tmp_path):
    import sqlite3

    from actors import ObjectId
    from actors.errors import ObjectNotFound

    async with open_test_runtime(APP, tmp_path / "data") as t:
        counter = t.get("Counter", "c")
        await counter.increment()  # the object has storage before the export can run
        async with trio.open_nursery() as nursery:
            for _ in range(10):
                nursery.start_soon(counter.increment)
            nursery.start_soon(t.runtime.export, counter.id, tmp_path / "snapshot.sqlite3")
        with pytest.raises(ObjectNotFound):
            await t.runtime.export(ObjectId.from_name("Counter", "never"), tmp_path / "none.sqlite3")
    with sqlite3.connect(tmp_path / "snapshot.sqlite3") as db:
        [(raw,)] = db.execute("SELECT value FROM _actors_kv WHERE key = 'value'").fetchall()
        meta = dict(db.execute("SELECT key, value FROM _actors_meta").fetchall())
    import cbor2

    assert 1 <= cbor2.loads(raw) <= 11  # a turn boundary: whatever had committed when it ran
    assert (meta["class"], meta["name"]) == ("Counter", "c")


async def test_admin_delete_removes_the_file_and_the_catalog_entry(tmp_path):
    async with open_test_runtime(APP, tmp_path) as t:
        counter = t.get("Counter", "c")
        await counter.increment()
        assert [e.id.name for e in t.runtime.list_objects()] == ["c"]
        await t.runtime.delete_object(counter.id)
        assert t.runtime.list_objects() == []
        assert list((tmp_path / "objects").rglob("*.sqlite3")) == []
        assert await counter.get() == 0


async def test_many_callers_at_the_live_object_cap_wait_for_room_and_never_exceed_it(tmp_path):
    peak = 0

    class Peak(EventLog):
        def activated(self, cls: str, seconds: float) -> None:
            nonlocal peak
            peak = max(peak, t.statistics().live_objects)

    async with open_test_runtime(
        APP, tmp_path, settings=Settings(max_live_objects=3), hooks=Peak()
    ) as t:
        async with trio.open_nursery() as nursery:
            for i in range(40):
                nursery.start_soon(t.get("Counter", f"c{i % 20}").increment)
        assert [await t.get("Counter", f"c{i}").get() for i in range(20)] == [2] * 20
    assert peak == 3
