"""Hooks report what the node counts; statistics() reports the state of the runtime."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from actors import App, Hooks
from actors.errors import UnknownMethod, UserError
from actors.testing import open_test_runtime

from .objects import Counter


class Recording(Hooks):
    def __init__(self) -> None:
        self.calls: list[tuple[str, str, str]] = []
        self.turns: list[str] = []
        self.batches: list[int] = []

    def call_finished(self, cls: str, method: str, outcome: str, seconds: float) -> None:
        self.calls.append((cls, method, outcome))

    def turn_finished(self, cls: str, method: str, seconds: float) -> None:
        self.turns.append(method)

    def committed(self, seconds: float, turns: int) -> None:
        self.batches.append(turns)


async def test_hooks_see_every_call_with_its_outcome_and_every_commit_with_its_batch_size(tmp_path):
    hooks = Recording()
    async with open_test_runtime(App([Counter]), tmp_path, hooks=hooks) as t:
        counter = t.get("Counter", "c")
        await counter.increment()
        with pytest.raises(UserError):
            await counter.increment_then_fail()
        with pytest.raises(UnknownMethod):
            await counter.nope()
        async with trio.open_nursery() as nursery:
            for _ in range(5):
                nursery.start_soon(counter.increment)
    assert hooks.calls[:3] == [
        ("Counter", "increment", "ok"),
        ("Counter", "increment_then_fail", "ValueError"),
        ("Counter", "nope", "UnknownMethod"),
    ]
    # Counter has no on_start of its own: none runs (a class with one gets an "on_start" turn).
    assert hooks.turns[:2] == ["increment", "increment_then_fail"]
    # The failed call's batch began with its writes, so rolling them back rolls the batch back and
    # there is no commit; the five queued calls share one commit.
    assert hooks.batches == [1, 5]


async def test_statistics_report_live_objects_queues_and_commits(tmp_path, autojump_clock):
    async with open_test_runtime(App([Counter]), tmp_path) as t:
        counter = t.get("Counter", "c")
        await counter.increment()
        async with trio.open_nursery() as nursery:
            for _ in range(3):
                nursery.start_soon(counter.call, "slow_increment", 1.0)
            await trio.testing.wait_all_tasks_blocked()
            stats = t.statistics()
            assert (stats.live_objects, stats.queued_calls, stats.max_queue_depth) == (1, 2, 2)
        stats = t.statistics()
        assert (stats.queued_calls, stats.turns_committed) == (0, 4)  # calls; on_start is not one
