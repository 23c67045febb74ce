"""Turns: one at a time, in order, atomic, reentrant by chain, deadlock-free."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from actors import App, Settings, open_runtime
from actors.errors import (
    CallTimeout,
    Deadlock,
    InvalidArgument,
    Overloaded,
    ResultNotSerializable,
    UnknownMethod,
    UserError,
)
from actors.testing import open_test_runtime

from .objects import Counter, PingPong, Recorder, Values

APP = App([Counter, Recorder, PingPong, Values])


async def test_calls_to_one_object_run_one_at_a_time_in_arrival_order(tmp_path, autojump_clock):
    Recorder.log = []
    async with open_test_runtime(APP, tmp_path) as t:
        stub = t.get("Recorder", "r")
        async with trio.open_nursery() as nursery:
            for label in "abc":
                nursery.start_soon(stub.record, label, 1.0)
                await trio.testing.wait_all_tasks_blocked()
    assert Recorder.log == ["start a", "end a", "start b", "end b", "start c", "end c"]


async def test_different_objects_run_concurrently(tmp_path, autojump_clock):
    async with open_test_runtime(APP, tmp_path) as t:
        started = trio.current_time()
        async with trio.open_nursery() as nursery:
            for name in ("x", "y", "z"):
                nursery.start_soon(t.get("Recorder", name).record, name, 5.0)
        assert trio.current_time() - started == 5.0


async def test_a_turn_that_raises_rolls_back_its_writes_and_reports_type_and_message(tmp_path):
    async with open_test_runtime(APP, tmp_path) as t:
        counter = t.get("Counter", "c")
        await counter.increment()
        with pytest.raises(UserError, match=r"^refused after writing$") as info:
            await counter.increment_then_fail()
        assert info.value.type == "ValueError"
        assert await counter.get() == 1


async def test_private_sync_and_lifecycle_methods_are_unknown(tmp_path):
    async with open_test_runtime(APP, tmp_path) as t:
        counter = t.get("Counter", "c")
        for name in ("_private", "sync_method", "alarm", "on_start", "__init__", "storage", "nope"):
            with pytest.raises(UnknownMethod):
                await counter.call(name)


async def test_arguments_that_do_not_bind_are_refused_before_the_object_runs(tmp_path):
    async with open_test_runtime(APP, tmp_path) as t:
        counter = t.get("Counter", "c")
        with pytest.raises(InvalidArgument, match=r"^increment\(\): got an unexpected keyword"):
            await counter.increment(step=2)
        with pytest.raises(InvalidArgument, match=r"^increment\(\): too many positional"):
            await counter.increment(1, 2)
        assert not t.is_live("Counter", "c")


async def test_unserializable_arguments_and_results_name_type_and_place(tmp_path):
    async with open_test_runtime(APP, tmp_path) as t:
        values = t.get("Values", "v")
        with pytest.raises(InvalidArgument, match=r"^args\[0\]\['k'\]: set is not serializable$"):
            await values.echo({"k": {1}})
        with pytest.raises(ResultNotSerializable, match=r"result\[2\]: set is not serializable$"):
            await values.bad_result()
        assert await values.echo({"a": [1, b"x", None, 2.5]}) == {"a": [1, b"x", None, 2.5]}


async def test_arguments_are_copied_so_caller_and_object_share_nothing(tmp_path):
    async with open_test_runtime(APP, tmp_path) as t:
        values = t.get("Values", "v")
        sent = {"list": [1]}
        received = await values.echo(sent)
        received["list"].append(2)
        assert sent == {"list": [1]}


async def test_a_chain_that_reenters_an_object_runs_instead_of_deadlocking(tmp_path, autojump_clock):
    async with open_test_runtime(APP, tmp_path) as t:
        assert await t.get("PingPong", "a").ping("b", 4) == ["a", "b", "a", "b", "a"]


async def test_an_object_may_call_itself(tmp_path):
    async with open_test_runtime(APP, tmp_path) as t:
        assert await t.get("Counter", "self").mirror("self") == 1


async def test_two_chains_waiting_on_each_other_fail_with_deadlock_not_a_hang(
    tmp_path, autojump_clock
):
    async with open_test_runtime(APP, tmp_path) as t:
        results: dict[str, object] = {}

        async def run(name: str, other: str) -> None:
            try:
                results[name] = await t.get("PingPong", name).wait_then_call(other, 1.0)
            except Exception as exc:
                results[name] = exc

        started = trio.current_time()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(run, "a", "b")
            nursery.start_soon(run, "b", "a")
        assert trio.current_time() - started == 1.0
        errors = [r for r in results.values() if isinstance(r, Deadlock)]
        assert len(errors) == 1
        assert sorted(r for r in results.values() if isinstance(r, str)) == ["hello from a"] or sorted(
            r for r in results.values() if isinstance(r, str)
        ) == ["hello from b"]


async def test_a_turn_past_its_deadline_is_cancelled_and_rolled_back(tmp_path, autojump_clock):
    async with open_test_runtime(APP, tmp_path) as t:
        counter = t.get("Counter", "c")
        started = trio.current_time()
        with pytest.raises(CallTimeout, match="rolled back"):
            await counter.call("slow_increment", 100.0, timeout=3.0)
        assert trio.current_time() - started == 3.0
        assert await counter.get() == 0


async def test_a_queued_call_past_its_deadline_fails_at_the_deadline_and_never_runs(
    tmp_path, autojump_clock
):
    async with open_test_runtime(APP, tmp_path) as t:
        counter = t.get("Counter", "c")
        outcome: list[object] = []
        async with trio.open_nursery() as nursery:
            nursery.start_soon(counter.call, "slow_increment", 10.0)
            await trio.testing.wait_all_tasks_blocked()
            started = trio.current_time()
            with pytest.raises(CallTimeout, match="never ran"):
                await counter.call("increment", timeout=2.0)
            outcome.append(trio.current_time() - started)
        assert outcome == [2.0]
        assert await counter.get() == 1


async def test_a_full_queue_refuses_calls_at_once_with_a_retry_hint(tmp_path, autojump_clock):
    settings = Settings(max_queue_depth=2)
    async with open_test_runtime(APP, tmp_path, settings=settings) as t:
        counter = t.get("Counter", "c")
        async with trio.open_nursery() as nursery:
            for _ in range(3):  # one running, two queued
                nursery.start_soon(counter.call, "slow_increment", 1.0)
                await trio.testing.wait_all_tasks_blocked()
            with pytest.raises(Overloaded) as info:
                await counter.increment()
            assert info.value.retry_after > 0
        assert await counter.get() == 3


async def test_calls_in_one_batch_share_a_commit_but_keep_their_own_rollback(tmp_path):
    async with open_test_runtime(APP, tmp_path) as t:
        counter = t.get("Counter", "c")
        await counter.increment()  # activate first so the calls below queue together
        outcomes: list[object] = []

        async def call(method: str) -> None:
            try:
                outcomes.append(await counter.call(method))
            except UserError as exc:
                outcomes.append(exc.type)

        before = t.statistics().batches_committed
        async with trio.open_nursery() as nursery:
            for method in ("increment", "increment_then_fail", "increment"):
                nursery.start_soon(call, method)
        assert sorted(map(str, outcomes)) == ["2", "3", "ValueError"]
        assert t.statistics().batches_committed == before + 1
        assert await counter.get() == 3


class Napper(Counter):
    async def nap(self, seconds: float) -> None:
        await trio.sleep(seconds)  # a turn that writes nothing


@pytest.mark.parametrize("failing", [0, 1, 2])
async def test_any_turn_of_a_batch_that_fails_loses_exactly_its_own_writes(tmp_path, autojump_clock, failing):
    """Whichever turn writes first opens the batch's transaction; failing, it loses only its writes."""
    methods = ["increment"] * 3
    methods[failing] = "increment_then_fail"
    async with open_test_runtime(App([Napper]), tmp_path) as t:
        napper = t.get("Napper", "n")
        outcomes: dict[int, object] = {}

        async def call(index: int, method: str) -> None:
            try:
                outcomes[index] = await napper.call(method)
            except UserError as exc:
                outcomes[index] = exc.type

        async with trio.open_nursery() as nursery:
            nursery.start_soon(napper.call, "nap", 1.0)  # busy: the calls below queue in order
            await trio.testing.wait_all_tasks_blocked()
            for index, method in enumerate(methods):
                nursery.start_soon(call, index, method)
                await trio.testing.wait_all_tasks_blocked()
        assert t.statistics().batches_committed == 1  # the nap and the three calls: one batch
        expected: list[object] = [1, 2]
        expected.insert(failing, "ValueError")
        assert [outcomes[i] for i in range(3)] == expected
        assert await napper.get() == 2


#### Group commit hold (pipelined FSYNC, real threads)


async def test_an_idle_event_loop_commits_at_once_whatever_the_commit_hold(tmp_path):
    async with open_runtime(APP, tmp_path, settings=Settings(commit_hold=30.0)) as runtime:
        counter = APP.id_from_name("Counter", "c")
        with trio.fail_after(5):  # the hold ends as soon as nothing else is runnable
            for expected in (1, 2, 3):
                assert await runtime.call(counter, "increment") == expected


async def _busy() -> None:  # keeps the loop from ever being idle
    while True:
        await trio.lowlevel.checkpoint()


async def test_a_busy_event_loop_holds_a_batch_for_more_calls_but_only_until_the_commit_hold(tmp_path):
    settings = Settings(commit_hold=0.2)
    async with open_runtime(APP, tmp_path, settings=settings) as runtime, trio.open_nursery() as nursery:
        counter = APP.id_from_name("Counter", "c")
        await runtime.call(counter, "increment")  # the object exists and is live
        async with trio.open_nursery() as callers:  # a hot object: calls arrive together
            for _ in range(5):
                callers.start_soon(runtime.call, counter, "increment")

        nursery.start_soon(_busy)
        before = runtime.statistics().batches_committed
        started = trio.current_time()
        async with trio.open_nursery() as callers:
            for _ in range(3):
                callers.start_soon(runtime.call, counter, "increment")
                await trio.sleep(0.01)  # arrive one by one, while the first batch is held
        assert 0.2 <= trio.current_time() - started < 5  # bounded by the hold
        assert runtime.statistics().batches_committed == before + 1
        assert await runtime.call(counter, "get") == 9
        nursery.cancel_scope.cancel()


async def test_a_busy_event_loop_does_not_hold_an_object_that_gets_one_call_at_a_time(tmp_path):
    # A spread workload: each call goes to a different object (most of them new), so no other call
    # would join its batch; holding it would only delay its reply by the whole commit_hold.
    settings = Settings(commit_hold=60.0)
    async with open_runtime(APP, tmp_path, settings=settings) as runtime, trio.open_nursery() as nursery:
        nursery.start_soon(_busy)
        with trio.fail_after(30):
            for name in ("a", "b", "c"):
                counter = APP.id_from_name("Counter", name)
                assert await runtime.call(counter, "increment") == 1
                assert await runtime.call(counter, "increment") == 2  # a live object, one call again
        nursery.cancel_scope.cancel()


async def test_an_object_that_stops_getting_calls_together_stops_being_held(tmp_path):
    # Hot once (calls arriving together), then one call at a time: after a few batches it commits
    # at once again, instead of holding every lone call for the whole commit_hold.
    settings = Settings(commit_hold=0.5)
    async with open_runtime(APP, tmp_path, settings=settings) as runtime, trio.open_nursery() as nursery:
        counter = APP.id_from_name("Counter", "cooling")
        for _ in range(5):
            async with trio.open_nursery() as callers:  # several hot batches
                for _ in range(20):
                    callers.start_soon(runtime.call, counter, "increment")
        nursery.start_soon(_busy)
        lone = []
        for _ in range(30):
            started = trio.current_time()
            await runtime.call(counter, "increment")
            lone.append(trio.current_time() - started)
        assert max(lone[:3]) >= 0.5  # still held right after being hot
        assert max(lone[-10:]) < 0.5  # cooled down: no longer held
        assert await runtime.call(counter, "get") == 130
        nursery.cancel_scope.cancel()
