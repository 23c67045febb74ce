"""Alarms: durable, one per object, at least once, retried with backoff, surviving restarts."""

from __future__ import annotations

import datetime

import pytest
import trio

from actors import ALARM_MAX_RETRIES, App, DurableObject, Hooks
from actors.errors import InvalidArgument
from actors.testing import open_test_runtime


class Reminder(DurableObject):
    """Records when its alarm ran (virtual epoch seconds) and can fail on purpose."""

    fired: list[tuple[str, float]] = []
    failures_left = 0

    async def remind_at(self, at: float) -> None:
        self.storage.set_alarm(at)

    async def remind_in(self, seconds: float) -> None:
        self.storage.set_alarm(self.env.now() + seconds)

    async def cancel(self) -> None:
        self.storage.delete_alarm()

    async def pending(self) -> float | None:
        return self.storage.get_alarm()

    async def runs(self) -> int:
        return self.storage.get("runs", 0)  # type: ignore[no-any-return]

    async def alarm(self) -> None:
        Reminder.fired.append((self.id.name or "", trio.current_time()))
        self.storage.put("runs", self.storage.get("runs", 0) + 1)
        if Reminder.failures_left > 0:
            Reminder.failures_left -= 1
            raise RuntimeError("not yet")


class Outcomes(Hooks):
    def __init__(self) -> None:
        self.outcomes: list[str] = []

    def alarm_finished(self, cls: str, outcome: str) -> None:
        self.outcomes.append(outcome)


APP = App([Reminder])


@pytest.fixture(autouse=True)
def _reset_reminder() -> None:
    Reminder.fired = []
    Reminder.failures_left = 0


async def test_an_alarm_runs_at_its_time_and_is_then_cleared(tmp_path, autojump_clock):
    async with open_test_runtime(APP, tmp_path) as t:
        reminder = t.get("Reminder", "r")
        due = t.now() + 30
        await reminder.remind_at(due)
        assert await reminder.pending() == due
        started = trio.current_time()
        await t.advance(30)
        assert [(name, at - started) for name, at in Reminder.fired] == [("r", 30.0)]
        assert await reminder.pending() is None
        assert await reminder.runs() == 1


async def test_setting_an_alarm_replaces_the_previous_one(tmp_path, autojump_clock):
    async with open_test_runtime(APP, tmp_path) as t:
        reminder = t.get("Reminder", "r")
        started = trio.current_time()
        await reminder.remind_at(t.now() + 10)
        await reminder.remind_in(20)  # env.now() is the runtime's virtual epoch time
        await t.advance(60)
        assert [at - started for _, at in Reminder.fired] == [20.0]


async def test_a_deleted_alarm_never_runs(tmp_path, autojump_clock):
    async with open_test_runtime(APP, tmp_path) as t:
        reminder = t.get("Reminder", "r")
        await reminder.remind_at(t.now() + 10)
        await reminder.cancel()
        await t.advance(60)
        assert Reminder.fired == []
        assert t.pending_alarms() == {}


async def test_an_alarm_accepts_an_aware_datetime_and_refuses_a_naive_one(tmp_path):
    class WhenObject(DurableObject):
        async def at(self, iso: str) -> float | None:
            self.storage.set_alarm(datetime.datetime.fromisoformat(iso))
            return self.storage.get_alarm()

    async with open_test_runtime(App([WhenObject]), tmp_path) as t:
        stub = t.get("WhenObject", "w")
        assert await stub.at("2030-01-01T00:00:00+00:00") == 1893456000.0
        with pytest.raises(InvalidArgument, match="aware datetime"):
            await stub.at("2030-01-01T00:00:00")


async def test_a_failing_alarm_is_retried_with_doubling_backoff_then_succeeds(
    tmp_path, autojump_clock
):
    Reminder.failures_left = 3
    hooks = Outcomes()
    async with open_test_runtime(APP, tmp_path, hooks=hooks) as t:
        reminder = t.get("Reminder", "r")
        started = trio.current_time()
        await reminder.remind_at(t.now() + 1)
        await t.advance(100)
        assert [at - started for _, at in Reminder.fired] == [1.0, 3.0, 7.0, 15.0]
        assert hooks.outcomes == ["retry", "retry", "retry", "ok"]
        assert await reminder.runs() == 1  # the failed runs' writes were rolled back
        assert await reminder.pending() is None


async def test_an_alarm_that_always_fails_gives_up_after_the_last_retry_and_is_deleted(
    tmp_path, autojump_clock
):
    Reminder.failures_left = 1000
    hooks = Outcomes()
    async with open_test_runtime(APP, tmp_path, hooks=hooks) as t:
        reminder = t.get("Reminder", "r")
        started = trio.current_time()
        await reminder.remind_at(t.now())
        await t.advance(3600)
        delays = [at - started for _, at in Reminder.fired]
        assert delays == [0.0, 2.0, 6.0, 14.0, 30.0, 62.0, 126.0]
        assert len(delays) == 1 + ALARM_MAX_RETRIES
        assert hooks.outcomes == ["retry"] * ALARM_MAX_RETRIES + ["failed"]
        assert await reminder.pending() is None
        assert t.pending_alarms() == {}


async def test_alarms_fire_after_a_restart_without_any_call_waking_the_object(
    tmp_path, autojump_clock
):
    async with open_test_runtime(APP, tmp_path) as t:
        await t.get("Reminder", "r").remind_at(t.now() + 50)
        await t.restart(crash=True)
        assert not t.is_live("Reminder", "r")
        await t.advance(50)
        assert [name for name, _ in Reminder.fired] == ["r"]


async def test_an_alarm_due_during_downtime_fires_right_after_restart(tmp_path, autojump_clock):
    async with open_test_runtime(APP, tmp_path) as t:
        await t.get("Reminder", "r").remind_at(t.now() + 5)
        await t.restart()
        await t.advance(0)
        assert len(Reminder.fired) in (0, 1)
        await t.advance(5)
        assert len(Reminder.fired) == 1


async def test_an_alarm_set_by_a_rolled_back_turn_does_not_exist(tmp_path, autojump_clock):
    class Flaky(DurableObject):
        async def set_then_fail(self, at: float) -> None:
            self.storage.set_alarm(at)
            raise ValueError("no")

        async def alarm(self) -> None:
            Reminder.fired.append(("flaky", trio.current_time()))

    async with open_test_runtime(App([Flaky]), tmp_path) as t:
        with pytest.raises(Exception, match="no"):
            await t.get("Flaky", "f").set_then_fail(t.now() + 1)
        await t.advance(10)
        assert Reminder.fired == []
        assert t.pending_alarms() == {}
        assert t.runtime.list_objects() == []


async def test_fire_alarms_runs_every_pending_alarm_now(tmp_path, autojump_clock):
    async with open_test_runtime(APP, tmp_path) as t:
        for name in ("a", "b"):
            await t.get("Reminder", name).remind_at(t.now() + 10_000)
        started = trio.current_time()
        await t.fire_alarms()
        assert sorted(name for name, _ in Reminder.fired) == ["a", "b"]
        assert trio.current_time() == started


async def test_the_catalog_lists_the_pending_alarm(tmp_path, autojump_clock):
    async with open_test_runtime(APP, tmp_path) as t:
        due = t.now() + 10
        await t.get("Reminder", "r").remind_at(due)
        [entry] = t.runtime.list_objects(cls="Reminder")
        assert (entry.id.name, entry.alarm) == ("r", due)
        await t.advance(10)
        [entry] = t.runtime.list_objects(cls="Reminder")
        assert entry.alarm is None


async def test_alarms_beyond_the_loaded_window_fire_in_order_when_due(tmp_path, autojump_clock, monkeypatch):
    # Only the next ALARM_WINDOW alarms are held in memory; the rest stay in the catalog until the
    # earlier ones have fired. A window of 3 makes 10 alarms span four windows.
    monkeypatch.setattr("actors._alarms.ALARM_WINDOW", 3)
    names = [f"r{i}" for i in range(10)]
    order = [7, 2, 9, 0, 5, 3, 8, 1, 6, 4]  # set in a scrambled order
    async with open_test_runtime(APP, tmp_path) as t:
        base = t.now()
        for i in order[:5]:
            await t.get(Reminder, names[i]).remind_at(base + 1000 + 10 * i)
        await t.restart()  # loads the first window from the catalog
        assert len(t.pending_alarms()) == 3
        for i in order[5:]:  # set while running: before, inside and past the loaded window
            await t.get(Reminder, names[i]).remind_at(base + 1000 + 10 * i)
        assert len(t.pending_alarms()) <= 2 * 3
        await t.advance(1000 + 10 * 9 + 1)
        assert [name for name, _ in Reminder.fired] == names
        due = [t.runtime.clock.to_trio(base + 1000 + 10 * i) for i in range(10)]
        assert [at for _, at in Reminder.fired] == pytest.approx(due, abs=1e-6)  # on time, not later
        assert t.pending_alarms() == {}


async def test_many_alarms_set_while_running_are_left_to_the_catalog_and_fire_in_order(
    tmp_path, autojump_clock, monkeypatch
):
    # Past twice the window, the scheduler keeps the next ALARM_WINDOW and forgets the rest (the
    # catalog has them); they are read back as the earlier ones fire.
    monkeypatch.setattr("actors._alarms.ALARM_WINDOW", 3)
    names = [f"m{i}" for i in range(12)]
    async with open_test_runtime(APP, tmp_path) as t:
        base = t.now()
        for i in reversed(range(12)):  # latest first: each new one is the earliest so far
            await t.get(Reminder, names[i]).remind_at(base + 500 + 10 * i)
            assert len(t.pending_alarms()) <= 2 * 3
        await t.advance(500 + 10 * 11 + 1)
        assert [name for name, _ in Reminder.fired] == names
        due = [t.runtime.clock.to_trio(base + 500 + 10 * i) for i in range(12)]
        assert [at for _, at in Reminder.fired] == pytest.approx(due, abs=1e-6)
