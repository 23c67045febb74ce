"""The SDK against a real node process: typed stubs, concurrency on one connection, every error type,
the node's own deadline, the token. Real processes and real time, bounded (``tests/conftest.py``)."""

from __future__ import annotations

import pytest
import trio

from actors.errors import CallTimeout, InvalidArgument, LimitExceeded, UnknownClass, UnknownMethod, UserError
from client import Rejected, RemoteError, connect
from server.rooms import Counter
from tests.server.nodes import Node, fetch

#: one bound for every test here: a node answers in milliseconds
LIMIT = 20


async def test_a_typed_stub_calls_the_object_and_the_node_agrees(node: Node, unique: str):
    with trio.fail_after(LIMIT):
        async with connect(node.url) as client:
            counter = client.get(Counter, unique)
            assert await counter.increment(by=2) == 2
            assert await counter.increment() == 3
            assert await client.call("Counter", unique, "get") == 3
            assert await client.get("Tally", unique).add("bugs", by=4) == 4
        reply = await fetch(node.url, "GET", f"/counter/{unique}")
    assert reply.json() == {"value": 3}


async def test_many_calls_share_one_connection_and_finish_as_the_node_answers(node: Node, unique: str):
    finished: list[str] = []
    with trio.fail_after(LIMIT):
        async with connect(node.url) as client:

            async def one(name: str, method: str, *args: object) -> None:
                await client.call("Probe", name, method, *args)
                finished.append(name)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(one, "slow", "slow", 0.5)
                for i in range(50):
                    nursery.start_soon(one, f"{unique}-{i}", "echo", i)
            stats = client.statistics().connections[0]
    assert finished[-1] == "slow"
    assert len(finished) == 51
    assert (stats.connects, stats.calls_sent) == (1, 51)
    assert stats.messages_sent < 51  # calls ready together shared messages


async def test_every_error_comes_back_as_its_named_exception(node: Node, unique: str):
    with trio.fail_after(LIMIT):
        async with connect(node.url) as client:
            with pytest.raises(UnknownClass, match=r"Nope"):
                await client.call("Nope", unique, "get")
            with pytest.raises(UnknownMethod):
                await client.call("Counter", unique, "nope")
            with pytest.raises(UnknownMethod):
                await client.call("Counter", unique, "_notify", 1)
            with pytest.raises(InvalidArgument, match=r"^by must be an int, not str$"):
                await client.get("Counter", unique).increment(by="x")
            with pytest.raises(LimitExceeded) as caught:
                await client.call("Counter", unique, "m" * 200)
            assert caught.value.limit == "MAX_METHOD_NAME_BYTES"
            with pytest.raises(RemoteError, match=r"^boom$") as raised:
                await client.call("Probe", unique, "fail", "boom")
            assert (raised.value.type, isinstance(raised.value, UserError)) == ("ValueError", True)
            assert await client.call("Counter", unique, "get") == 0  # nothing above was applied


async def test_the_node_enforces_the_calls_timeout_and_applies_nothing(node: Node, unique: str):
    with trio.fail_after(LIMIT):
        async with connect(node.url) as client:
            t0 = trio.current_time()
            with pytest.raises(CallTimeout):
                await client.call("Probe", unique, "slow", 10, timeout=0.5)
            assert 0.5 <= trio.current_time() - t0 < 5
            assert await client.call("Probe", unique, "slow_calls") == 0  # the turn's write rolled back


async def test_a_wrong_token_is_rejected_and_the_right_one_works(token_node: Node, unique: str):
    with trio.fail_after(LIMIT):
        with pytest.raises(Rejected, match=r"HTTP 401: Unauthorized") as caught:
            async with connect(token_node.url, token="wrong"):
                pytest.fail("connected with a wrong token")
        assert (caught.value.status, caught.value.type) == (401, "Unauthorized")
        async with connect(token_node.url, token=token_node.token) as client:
            assert await client.call("Counter", unique, "increment") == 1
