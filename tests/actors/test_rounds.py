"""Group commit (``actors/_rounds.py``): one round for what was submitted meanwhile, errors to all."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from actors._rounds import Rounds


async def test_callers_at_once_share_rounds_and_each_returns_after_its_items_ran(autojump_clock):
    rounds_run: list[list[int]] = []
    finished: dict[int, int] = {}

    async def run(items: list[int]) -> None:
        await trio.sleep(1)  # a disk flush
        rounds_run.append(sorted(items))

    rounds = Rounds(run)

    async def caller(i: int) -> None:
        await rounds.submit([i])
        finished[i] = len(rounds_run)  # the round with i ran before submit returned

    async with trio.open_nursery() as nursery:
        for i in range(10):
            nursery.start_soon(caller, i)
    first, rest = rounds_run  # the first caller's alone, then all that came meanwhile in one round
    assert len(first) == 1
    assert sorted(first + rest) == list(range(10))
    assert all(any(i in r for r in rounds_run[: finished[i]]) for i in range(10))


async def test_every_caller_of_a_failed_round_gets_its_error_and_the_next_round_runs(autojump_clock):
    calls: list[list[str]] = []

    async def run(items: list[str]) -> None:
        calls.append(items)
        await trio.sleep(1)
        if "bad" in items:
            raise OSError("disk full")

    rounds = Rounds(run)
    errors: dict[str, BaseException | None] = {}

    async def caller(item: str) -> None:
        try:
            await rounds.submit([item])
            errors[item] = None
        except OSError as exc:
            errors[item] = exc

    async with trio.open_nursery() as nursery:
        nursery.start_soon(caller, "first")
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(caller, "bad")
        nursery.start_soon(caller, "unlucky")
    assert [sorted(c) for c in calls] == [["first"], ["bad", "unlucky"]]
    assert errors["first"] is None
    assert isinstance(errors["bad"], OSError)
    assert errors["unlucky"] is errors["bad"]
    await rounds.submit(["later"])
    assert calls[-1] == ["later"]


async def test_a_round_runs_to_its_end_when_its_caller_is_cancelled(autojump_clock):
    ran: list[list[int]] = []

    async def run(items: list[int]) -> None:
        await trio.sleep(5)
        ran.append(items)

    rounds = Rounds(run)
    with trio.move_on_after(1):
        await rounds.submit([1])
    assert ran == [[1]]  # shielded: seen through
    with pytest.raises(trio.TooSlowError):
        with trio.fail_after(1):
            await trio.sleep(2)
