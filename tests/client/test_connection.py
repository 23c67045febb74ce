"""The multiplexed connection against an in-process node, in virtual time: batching, out-of-order
replies, the in-flight cap, deadlines, and what happens to calls when the socket drops."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from actors import wire
from actors.errors import CallTimeout, LimitExceeded
from client import REPLY_GRACE_SECONDS, ConnectionLost, ReplyTimeout, Unreachable
from client._client import open_client

from .fake_node import URL, FakeNode, open_fake_node


async def test_calls_complete_out_of_order_on_one_connection(fake: FakeNode, autojump_clock: object):
    async def handler(call: wire.Call) -> str:
        await trio.sleep(call.args[0])
        return call.method

    fake.handler = handler
    finished: list[str] = []
    async with open_client(URL, dialer=fake.dial) as client:

        async def one(method: str, seconds: float) -> None:
            assert await client.call("Probe", "p", method, seconds) == method
            finished.append(method)

        t0 = trio.current_time()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(one, "slow", 3)
            nursery.start_soon(one, "fast", 1)
            nursery.start_soon(one, "middle", 2)
        assert trio.current_time() - t0 == 3
    assert finished == ["fast", "middle", "slow"]
    assert len(fake.sockets) == 1


async def test_calls_ready_together_leave_in_one_message(fake: FakeNode, autojump_clock: object):
    async with open_client(URL, dialer=fake.dial) as client:
        results: list[object] = []

        async def one(i: int) -> None:
            results.append(await client.call("Counter", f"c{i}", "increment", by=i))

        async with trio.open_nursery() as nursery:
            for i in range(500):
                nursery.start_soon(one, i)
        stats = client.statistics().connections[0]
    assert fake.sockets[0].batches == [500]
    assert (stats.messages_sent, stats.calls_sent) == (1, 500)
    assert len(results) == 500


async def test_a_message_carries_at_most_max_frames_per_message(fake: FakeNode, autojump_clock: object):
    async with (
        open_client(URL, dialer=fake.dial, max_in_flight=2000) as client,
        trio.open_nursery() as nursery,
    ):
        for i in range(wire.MAX_FRAMES_PER_MESSAGE + 100):
            nursery.start_soon(client.call, "Counter", f"c{i}", "increment")
    assert fake.sockets[0].batches == [wire.MAX_FRAMES_PER_MESSAGE, 100]


async def test_a_message_fits_the_nodes_max_message_bytes(autojump_clock: object):
    async with (
        open_fake_node(max_message_bytes=4096) as fake,
        open_client(URL, dialer=fake.dial) as client,
        trio.open_nursery() as nursery,
    ):
        for i in range(1000):
            nursery.start_soon(client.call, "Counter", f"c{i}", "increment")
    socket = fake.sockets[0]
    assert sum(socket.batches) == 1000
    assert max(socket.sizes) <= 4096
    assert min(socket.sizes[:-1]) > 4000  # each message as full as the next call allows


async def test_the_node_is_told_each_calls_timeout(fake: FakeNode, autojump_clock: object):
    async with open_client(URL, dialer=fake.dial, timeout=7) as client:
        await client.call("Counter", "a", "get")
        await client.call("Counter", "a", "get", timeout=2.5)
        await client.get("Counter", "a", timeout=4).get()
    assert [call.timeout for call in fake.calls] == [7.0, 2.5, 4.0]


async def test_callers_past_max_in_flight_wait_in_line(fake: FakeNode, autojump_clock: object):
    release = trio.Event()

    async def handler(call: wire.Call) -> int:
        await release.wait()
        return int(call.name)

    fake.handler = handler
    async with open_client(URL, dialer=fake.dial, max_in_flight=2) as client:
        done: list[int] = []

        async def one(i: int) -> None:
            done.append(await client.call("Counter", str(i), "get"))

        async with trio.open_nursery() as nursery:
            for i in range(5):
                nursery.start_soon(one, i)
            await trio.testing.wait_all_tasks_blocked()
            stats = client.statistics().connections[0]
            assert (stats.calls_written, stats.calls_waiting_for_slot) == (2, 3)
            assert len(fake.calls) == 2
            release.set()
    assert fake.max_seen_in_flight == 2
    assert sorted(done) == [0, 1, 2, 3, 4]


async def test_the_welcome_lowers_max_in_flight(autojump_clock: object):
    async with open_fake_node(max_in_flight=3) as fake, open_client(URL, dialer=fake.dial) as client:
        assert client.statistics().connections[0].max_in_flight == 3


async def test_waiting_for_a_slot_counts_against_the_timeout(fake: FakeNode, autojump_clock: object):
    async def handler(call: wire.Call) -> None:
        await trio.sleep_forever()

    fake.handler = handler
    async with open_client(URL, dialer=fake.dial, max_in_flight=1) as client, trio.open_nursery() as nursery:
        nursery.start_soon(client.call, "Probe", "a", "hold")
        await trio.testing.wait_all_tasks_blocked()
        t0 = trio.current_time()
        with pytest.raises(CallTimeout, match=r"^Probe/b\.get: waited for one of max_in_flight \(1\) slots"):
            await client.call("Probe", "b", "get", timeout=5)
        assert trio.current_time() - t0 == 5
        assert [call.name for call in fake.calls] == ["a"]  # the second call was never sent
        nursery.cancel_scope.cancel()


async def test_a_node_that_never_answers_gives_reply_timeout_after_the_grace(
    fake: FakeNode, autojump_clock: object
):
    async def handler(call: wire.Call) -> None:
        await trio.sleep_forever()

    fake.handler = handler
    async with open_client(URL, dialer=fake.dial) as client:
        t0 = trio.current_time()
        with pytest.raises(ReplyTimeout, match=r"may or may not have been applied$"):
            await client.call("Probe", "a", "hold", timeout=2)
        assert trio.current_time() - t0 == 2 + REPLY_GRACE_SECONDS
        assert client.statistics().connections[0].calls_written == 0


async def test_a_dropped_socket_fails_written_calls_and_never_sends_them_again(
    fake: FakeNode, autojump_clock: object
):
    async def handler(call: wire.Call) -> str:
        if call.method == "hold":
            await trio.sleep_forever()
        return call.name

    fake.handler = handler
    async with open_client(URL, dialer=fake.dial) as client, trio.open_nursery() as nursery:

        async def held() -> None:
            with pytest.raises(ConnectionLost, match=r"may or may not have been applied$"):
                await client.call("Counter", "lost", "hold")

        nursery.start_soon(held)
        await trio.testing.wait_all_tasks_blocked()
        await fake.sockets[0].drop()
        await trio.testing.wait_all_tasks_blocked()
        assert await client.call("Counter", "after", "get") == "after"  # on a new socket
    assert [call.name for call in fake.calls] == ["lost", "after"]
    assert len(fake.sockets) == 2


async def test_calls_left_unanswered_by_a_drain_close_are_sent_again_on_the_next_socket(
    fake: FakeNode, autojump_clock: object
):
    # The node's drain close (1001 "node shutting down") comes only after it answered every call it
    # read: the calls still unanswered never reached an object, so they go out again.
    async def handler(call: wire.Call) -> str:
        if len(fake.sockets) == 1:
            await trio.sleep_forever()  # read by the first socket's node, never answered
        return call.name

    fake.handler = handler
    async with open_client(URL, dialer=fake.dial) as client, trio.open_nursery() as nursery:
        results: list[str] = []

        async def call(name: str) -> None:
            results.append(await client.call("Counter", name, "increment"))

        for name in ("a", "b", "c"):
            nursery.start_soon(call, name)
        await trio.testing.wait_all_tasks_blocked()
        assert client.statistics().connections[0].calls_written == 3
        ws = fake.sockets[0].ws
        assert ws is not None
        await ws.aclose(*wire.DRAIN_CLOSE)
    assert sorted(results) == ["a", "b", "c"]
    assert len(fake.sockets) == 2
    assert sorted(call.name for call in fake.calls) == ["a", "a", "b", "b", "c", "c"]


@pytest.mark.parametrize(("code", "reason"), [(1001, "proxy going away"), (1011, "node shutting down")])
async def test_any_other_close_fails_written_calls_with_connection_lost(
    fake: FakeNode, autojump_clock: object, code: int, reason: str
):
    async def handler(call: wire.Call) -> str:
        await trio.sleep_forever()

    fake.handler = handler
    async with open_client(URL, dialer=fake.dial) as client, trio.open_nursery() as nursery:

        async def held() -> None:
            with pytest.raises(ConnectionLost, match=r"may or may not have been applied$"):
                await client.call("Counter", "lost", "increment")

        nursery.start_soon(held)
        await trio.testing.wait_all_tasks_blocked()
        ws = fake.sockets[0].ws
        assert ws is not None
        await ws.aclose(code, reason)
    assert [call.name for call in fake.calls] == ["lost"]


async def test_calls_made_while_the_node_is_down_wait_for_it_within_their_timeout(
    fake: FakeNode, autojump_clock: object
):
    async with open_client(URL, dialer=fake.dial) as client:
        fake.down = True
        await fake.sockets[0].drop()
        await trio.testing.wait_all_tasks_blocked()  # the client has seen the socket end
        async with trio.open_nursery() as nursery:

            async def call() -> None:
                assert await client.call("Counter", "a", "get", timeout=10) == {
                    "method": "get", "args": [], "kwargs": {}
                }  # fmt: skip

            nursery.start_soon(call)
            await trio.sleep(5)
            assert fake.calls == []
            fake.down = False
    assert len(fake.calls) == 1  # sent once, on the socket that came back
    stats = client.statistics().connections[0]
    assert stats.connects == 2
    assert stats.failed_dials >= 5  # 5 s of backoff: 50 ms doubling to 2 s


async def test_a_call_that_cannot_reach_the_node_is_unreachable_at_its_deadline(
    fake: FakeNode, autojump_clock: object
):
    async with open_client(URL, dialer=fake.dial) as client:
        fake.down = True
        await fake.sockets[0].drop()
        await trio.testing.wait_all_tasks_blocked()  # the client has seen the socket end
        t0 = trio.current_time()
        with pytest.raises(
            Unreachable, match=r"the call was never sent \(last error: ConnectionRefusedError"
        ):
            await client.call("Counter", "a", "get", timeout=3)
        assert trio.current_time() - t0 == 3
    assert fake.calls == []


async def test_connect_is_unreachable_when_the_node_is_down(fake: FakeNode, autojump_clock: object):
    fake.down = True
    t0 = trio.current_time()
    with pytest.raises(Unreachable, match=r"^could not connect to http://fake-node:8080 in time: "):
        async with open_client(URL, dialer=fake.dial, timeout=4):
            pytest.fail("connected to a node that is down")
    assert trio.current_time() - t0 == 4


async def test_a_cancelled_caller_frees_its_slot_and_its_late_reply_is_dropped(
    fake: FakeNode, autojump_clock: object
):
    async def handler(call: wire.Call) -> int:
        await trio.sleep(call.args[0])
        return 1

    fake.handler = handler
    async with open_client(URL, dialer=fake.dial, max_in_flight=1) as client:
        with trio.move_on_after(1):
            await client.call("Probe", "a", "slow", 5)
        assert await client.call("Probe", "b", "slow", 10) == 1  # the late reply of the first is ignored
        stats = client.statistics().connections[0]
        assert (stats.calls_queued, stats.calls_written) == (0, 0)


async def test_a_call_too_big_for_a_message_fails_locally(autojump_clock: object):
    async with open_fake_node(max_message_bytes=200) as fake, open_client(URL, dialer=fake.dial) as client:
        with pytest.raises(LimitExceeded, match=r"max_message_bytes \(200\)$") as caught:
            await client.call("Probe", "a", "echo", "x" * 300)
        assert caught.value.limit == "max_message_bytes"
        await client.call("Probe", "a", "echo", "small")
    assert [call.args for call in fake.calls] == [["small"]]


async def test_closing_the_client_fails_its_calls(fake: FakeNode, autojump_clock: object):
    async def handler(call: wire.Call) -> None:
        await trio.sleep_forever()

    fake.handler = handler
    async with trio.open_nursery() as nursery:
        async with open_client(URL, dialer=fake.dial) as client:

            async def held() -> None:
                with pytest.raises(ConnectionLost, match=r"^Probe/a\.hold: the client was closed after"):
                    await client.call("Probe", "a", "hold")

            nursery.start_soon(held)
            await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(trio.ClosedResourceError):
            await client.call("Probe", "a", "get")
    assert fake.sockets[0].close_code == 1000


async def test_connections_option_spreads_calls_round_robin(fake: FakeNode, autojump_clock: object):
    async with open_client(URL, dialer=fake.dial, connections=3) as client:
        for i in range(6):
            await client.call("Counter", f"c{i}", "get")
    assert len(fake.sockets) == 3
    assert [sum(socket.batches) for socket in fake.sockets] == [2, 2, 2]


async def test_the_body_s_exception_is_not_wrapped(fake: FakeNode, autojump_clock: object):
    with pytest.raises(KeyError):
        async with open_client(URL, dialer=fake.dial):
            raise KeyError("mine")
