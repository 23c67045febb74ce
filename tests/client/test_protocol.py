"""What the SDK makes of the node's answers, against an in-process node in virtual time: named errors,
the retries it may do (and those it must not), malformed messages, handshakes, cluster routing."""

from __future__ import annotations

from typing import Any

import cbor2
import pytest
import trio
import trio.testing

from actors import ObjectId, wire
from actors.errors import (
    CallTimeout,
    InvalidArgument,
    LimitExceeded,
    ObjectReset,
    Overloaded,
    ShuttingDown,
    UnknownMethod,
    UserError,
)
from actors.placement import ClusterMap
from client import ConnectionLost, Rejected, RemoteError, Unreachable
from client._calls import message_header
from client._client import open_client

from .fake_node import URL, FakeNode, open_fake_node


@pytest.mark.parametrize("frames", [1, 23, 24, 255, 256, wire.MAX_FRAMES_PER_MESSAGE])
def test_a_message_is_a_cbor_array_of_the_frames(frames: int):
    frame = wire.encode([wire.Result(7, "x")])[1:]
    decoded = wire.decode(message_header(frames) + frame * frames)
    assert decoded == [wire.Result(7, "x")] * frames


@pytest.mark.parametrize(
    "error",
    [
        InvalidArgument("by must be an int, not str"),
        UnknownMethod("Counter has no method 'nope'"),
        LimitExceeded("key is too long", limit="MAX_KEY_BYTES"),
        CallTimeout("deadline passed"),
        ObjectReset("commit failed"),
    ],
)
async def test_named_errors_come_back_as_themselves(fake: FakeNode, autojump_clock: object, error: Any):
    async def handler(call: wire.Call) -> None:
        raise error

    fake.handler = handler
    async with open_client(URL, dialer=fake.dial) as client:
        with pytest.raises(type(error)) as caught:
            await client.call("Counter", "a", "increment")
    assert type(caught.value) is type(error)
    assert caught.value.to_dict() == error.to_dict()
    assert len(fake.calls) == 1  # none of these is retried


async def test_the_objects_own_exception_is_a_remote_error(fake: FakeNode, autojump_clock: object):
    async def handler(call: wire.Call) -> None:
        raise UserError("ValueError", "bad input")

    fake.handler = handler
    async with open_client(URL, dialer=fake.dial) as client:
        with pytest.raises(RemoteError, match=r"^bad input$") as caught:
            await client.call("Probe", "a", "fail")
    assert isinstance(caught.value, UserError)
    assert caught.value.type == "ValueError"


async def test_overloaded_is_retried_after_its_retry_after(fake: FakeNode, autojump_clock: object):
    async def handler(call: wire.Call) -> str:
        if len(fake.calls) < 3:
            raise Overloaded("queue full", retry_after=0.5)
        return "done"

    fake.handler = handler
    async with open_client(URL, dialer=fake.dial) as client:
        t0 = trio.current_time()
        assert await client.call("Counter", "a", "increment") == "done"
        assert trio.current_time() - t0 == 1.0
    assert len(fake.calls) == 3
    assert [call.timeout for call in fake.calls] == [30.0, 29.5, 29.0]  # one deadline for every attempt


async def test_overloaded_is_raised_when_the_retry_would_pass_the_deadline(
    fake: FakeNode, autojump_clock: object
):
    async def handler(call: wire.Call) -> None:
        raise Overloaded("queue full", retry_after=2)

    fake.handler = handler
    async with open_client(URL, dialer=fake.dial) as client:
        t0 = trio.current_time()
        with pytest.raises(Overloaded) as caught:
            await client.call("Counter", "a", "increment", timeout=5)
        assert trio.current_time() - t0 == 4
    assert caught.value.retry_after == 2
    assert len(fake.calls) == 3


async def test_shutting_down_is_retried(fake: FakeNode, autojump_clock: object):
    async def handler(call: wire.Call) -> str:
        if len(fake.calls) == 1:
            raise ShuttingDown("draining")
        return "done"

    fake.handler = handler
    async with open_client(URL, dialer=fake.dial) as client:
        assert await client.call("Counter", "a", "increment") == "done"
    assert len(fake.calls) == 2


async def test_arguments_and_names_are_checked_before_anything_is_sent(
    fake: FakeNode, autojump_clock: object
):
    async with open_client(URL, dialer=fake.dial) as client:
        with pytest.raises(
            InvalidArgument, match=r"^Counter/a\.increment: kwargs\['by'\]: set is not serializable$"
        ):
            await client.call("Counter", "a", "increment", by={1})
        with pytest.raises(LimitExceeded) as caught:
            client.get("Counter", "n" * 2000)
        assert caught.value.limit == "MAX_OBJECT_NAME_BYTES"
        with pytest.raises(InvalidArgument, match=r"is not an identifier$"):
            await client.call("not a class", "a", "get")
        with pytest.raises(ValueError, match=r"^timeout must be a positive number of seconds"):
            client.get("Counter", "a", timeout=0)
        with pytest.raises(ValueError, match=r"^timeout must be a positive number of seconds"):
            await client.call("Counter", "a", "get", timeout=float("nan"))
    assert fake.calls == []


@pytest.mark.parametrize(
    ("reply", "problem"),
    [
        (b"\xff\x00", "the message is not valid CBOR"),
        ("a text frame", "a text message"),
        (cbor2.dumps([[3, 1, "C", "n", "m", [], {}, None]]), "a Call frame"),
        (wire.encode([wire.Error(None, {"type": "InvalidArgument", "message": "bad"})]), "reports a fault"),
        (
            cbor2.dumps([[5, 1, {"type": "Overloaded", "message": "m", "retry_after": "soon"}]]),
            "does not parse",
        ),
    ],
)
async def test_a_malformed_message_ends_the_socket_with_4400_and_fails_written_calls(
    fake: FakeNode, autojump_clock: object, reply: bytes | str, problem: str
):
    async def handler(call: wire.Call) -> Any:
        if call.method == "garble":
            await fake.sockets[0].send_raw(reply)
            await trio.sleep_forever()
        return "fine"

    fake.handler = handler
    async with open_client(URL, dialer=fake.dial) as client:
        with pytest.raises(
            ConnectionLost, match=rf"the node sent a malformed message \(.*{problem}"
        ) as caught:
            await client.call("Probe", "a", "garble")
        assert "may or may not have been applied" in str(caught.value)
        await trio.testing.wait_all_tasks_blocked()
        assert fake.sockets[0].close_code == 4400
        assert await client.call("Probe", "a", "other") == "fine"  # on a new socket


@pytest.mark.parametrize(
    "welcome",
    [b"\x80", "text", wire.encode([wire.Result(1, None)])],
)
async def test_a_node_that_answers_hello_wrongly_is_unreachable(autojump_clock: object, welcome: Any):
    async with open_fake_node(welcome_override=welcome) as fake:
        with pytest.raises(Unreachable, match=r"the node answered Hello with"):
            async with open_client(URL, dialer=fake.dial, timeout=2):
                pytest.fail("connected")


async def test_no_common_protocol_version_is_rejected_at_once(autojump_clock: object):
    refusal = wire.encode([wire.Error(None, {"type": "InvalidArgument", "message": "no version in common"})])
    async with open_fake_node(welcome_override=refusal) as fake:
        t0 = trio.current_time()
        with pytest.raises(Rejected, match=r"refused the connection: InvalidArgument: no version in common$"):
            async with open_client(URL, dialer=fake.dial):
                pytest.fail("connected")
        assert trio.current_time() - t0 < 0.1
        assert len(fake.sockets) == 1


async def test_each_call_goes_to_the_node_that_owns_its_object(autojump_clock: object):
    nodes = (("a", URL), ("b", "http://node-b:8080"), ("c", "http://node-c:8080"))
    async with open_fake_node(nodes=nodes, epoch=3) as fake, open_client(URL, dialer=fake.dial) as client:
        assert client.cluster == ClusterMap(nodes, 3)
        names = [f"counter-{i}" for i in range(30)]
        for name in names:
            await client.call("Counter", name, "get")
    cluster = ClusterMap(nodes, 3)
    for url, call in fake.routed:
        owner_url = cluster.owner(ObjectId.from_name(call.cls, call.name).hex)[1]
        assert url == f"{owner_url.replace('http', 'ws')}/v1/connect"
    assert {url for url, _ in fake.routed} == {
        f"ws://{host}/v1/connect" for host in ("fake-node:8080", "node-b:8080", "node-c:8080")
    }


async def test_the_node_keeps_the_url_the_client_was_given(autojump_clock: object):
    nodes = (("fake-node:8080", "http://10.0.0.7:8080"),)  # what the node believes its URL is
    async with open_fake_node(nodes=nodes) as fake, open_client(URL, dialer=fake.dial) as client:
        await client.call("Counter", "a", "get")
        assert client.cluster.nodes == (("fake-node:8080", URL),)
    assert [socket.url for socket in fake.sockets] == ["ws://fake-node:8080/v1/connect"]


async def test_the_token_travels_as_a_bearer_header(fake: FakeNode, autojump_clock: object):
    async with open_client(URL, dialer=fake.dial, token="t0ken"):
        pass
    assert (b"authorization", b"Bearer t0ken") in fake.sockets[0].headers
