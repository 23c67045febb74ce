"""The SDK's route ``/v1/connect`` on real nodes, spoken raw: trio-websocket plus ``actors.wire``.

Covers the handshake (Hello/Welcome, token), concurrent calls answered out of order and batched,
every error as an Error frame, the in-flight cap, malformed messages (Error(None) and 4400, the node
unharmed), the drain on SIGTERM, ``GET /v1/cluster`` and the cluster settings. Clients and bounds
are ``sockets.py``'s; the protocol is ``actors/wire.py``, the route ``server/rpc.py``.
"""

from __future__ import annotations

import re
import signal
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import cbor2
import pytest
import trio
from trio_websocket import ConnectionRejected, WebSocketConnection

from actors import errors, wire
from actors.placement import PLACEMENT_FUNCTION
from actors.wire import Call, Error, Hello, Result, Welcome
from server.cli import _build_parser, config_from_args
from server.config import Config
from server.errors import close_reason
from server.rpc import (
    HELLO_TIMEOUT_CLOSE_CODE,
    HELLO_TIMEOUT_SECONDS,
    IN_FLIGHT_RETRY_AFTER,
    MAX_IN_FLIGHT_PER_CONNECTION,
)

from .conftest import APP, TOKEN
from .nodes import STOP_TIMEOUT, Node, fetch, open_node
from .sockets import SOCKET_TIMEOUT, open_socket, scrape, value, wait_closed, wait_for_metric

HELLO = wire.encode([Hello((wire.PROTOCOL_VERSION,), "tests")])


@asynccontextmanager
async def open_rpc(node: Node, *, token: str | None = None) -> AsyncIterator[WebSocketConnection]:
    """A connection past its handshake: Hello sent, the Welcome read and checked."""
    headers = [("Authorization", f"Bearer {token}")] if token else None
    async with open_socket(node, "/v1/connect", headers=headers) as ws:
        await ws.send_message(HELLO)
        (welcome,) = await read(ws)
        assert isinstance(welcome, Welcome)
        yield ws


async def read(ws: WebSocketConnection) -> list[wire.Frame]:
    """The frames of the next message."""
    with trio.fail_after(SOCKET_TIMEOUT):
        message = await ws.get_message()
    assert isinstance(message, bytes), message
    return wire.decode(message)


async def read_within(ws: WebSocketConnection, seconds: float) -> list[wire.Frame]:
    """The frames of the next message, waiting up to ``seconds``."""
    with trio.fail_after(seconds):
        message = await ws.get_message()
    assert isinstance(message, bytes), message
    return wire.decode(message)


async def replies(ws: WebSocketConnection, count: int) -> tuple[dict[int, wire.Frame], list[int]]:
    """Read until ``count`` replies arrived: the replies by call id, and their ids in arrival order."""
    by_id: dict[int, wire.Frame] = {}
    order: list[int] = []
    while len(by_id) < count:
        for frame in await read(ws):
            assert isinstance(frame, (Result, Error)), frame
            assert frame.id is not None, frame
            assert frame.id not in by_id, f"two replies for call {frame.id}"
            by_id[frame.id] = frame
            order.append(frame.id)
    return by_id, order


async def call_one(ws: WebSocketConnection, call: Call) -> wire.Frame:
    """Send ``call`` alone and return its reply."""
    await ws.send_message(wire.encode([call]))
    by_id, _ = await replies(ws, 1)
    return by_id[call.id]


#### Handshake


async def test_hello_gets_one_welcome_naming_the_version_the_node_its_limits_and_the_cluster(
    node: Node,
) -> None:
    before = value(await scrape(node), "actors_http_requests_total", route="/v1/connect", status="101")
    async with open_socket(node, "/v1/connect") as ws:
        await ws.send_message(wire.encode([Hello((0, wire.PROTOCOL_VERSION, 99), "tests/1.0")]))
        frames = await read(ws)
        name = node.url.removeprefix("http://")
        limits = (MAX_IN_FLIGHT_PER_CONNECTION, 1024 * 1024)
        assert frames == [Welcome(wire.PROTOCOL_VERSION, name, *limits, ((name, node.url),), 0)]
        text = await scrape(node)
        assert value(text, "actors_http_requests_total", route="/v1/connect", status="101") == before + 1
        assert value(text, "actors_websocket_connections") >= 1


async def test_the_token_is_required_as_a_bearer_header_or_a_query_parameter(strict_node: Node) -> None:
    for path, headers in [
        ("/v1/connect", None),
        ("/v1/connect", [("Authorization", "Bearer wrong")]),
        ("/v1/connect?token=wrong", None),
    ]:
        with pytest.raises(ConnectionRejected) as refused:
            async with open_socket(strict_node, path, headers=headers):
                pass
        assert refused.value.status_code == 401
    for path, headers in [
        ("/v1/connect", [("Authorization", f"Bearer {TOKEN}")]),
        (f"/v1/connect?token={TOKEN}", None),
    ]:
        async with open_socket(strict_node, path, headers=headers) as ws:
            await ws.send_message(HELLO)
            assert [type(frame) for frame in await read(ws)] == [Welcome]


async def test_a_connection_that_sends_no_hello_in_time_is_closed_4408(node: Node) -> None:
    async with open_socket(node, "/v1/connect") as ws:
        started = trio.current_time()
        (error,) = await read_within(ws, HELLO_TIMEOUT_SECONDS + SOCKET_TIMEOUT)
        assert error == Error(
            None,
            {
                "type": "InvalidArgument",
                "message": f"no Hello within HELLO_TIMEOUT_SECONDS ({HELLO_TIMEOUT_SECONDS:g} s) "
                "of the connection",
            },
        )
        assert trio.current_time() - started >= HELLO_TIMEOUT_SECONDS - 0.5
        code, reason = await wait_closed(ws)
        assert code == HELLO_TIMEOUT_CLOSE_CODE
        assert (reason or "").startswith("no Hello within HELLO_TIMEOUT_SECONDS")
    async with open_rpc(node) as ws:  # the node serves on
        reply = await call_one(ws, Call(1, "Probe", "x", "echo", [], {}))
        assert reply == Result(1, {"args": [], "kwargs": {}})


async def test_v1_cluster_lists_this_node_and_needs_the_token(node: Node, strict_node: Node) -> None:
    reply = await fetch(node.url, "GET", "/v1/cluster")
    name = node.url.removeprefix("http://")
    body = reply.json()
    assert reply.status == 200
    assert body["epoch"] == 0
    assert body["nodes"] == [{"node": name, "url": node.url, "up": True}]
    assert body["self"] == name
    assert body["placement"]["function"] == PLACEMENT_FUNCTION
    assert (await fetch(strict_node.url, "GET", "/v1/cluster")).status == 401
    reply = await fetch(strict_node.url, "GET", "/v1/cluster", token=TOKEN)
    assert reply.json()["nodes"] == [
        {"node": strict_node.url.removeprefix("http://"), "url": strict_node.url, "up": True}
    ]


#### Calls


async def test_calls_run_concurrently_and_are_answered_as_they_finish(node: Node, unique: str) -> None:
    async with open_rpc(node) as ws:
        await ws.send_message(
            wire.encode(
                [
                    Call(1, "Probe", f"{unique}-slow", "slow", [1.0], {}),
                    Call(2, "Probe", f"{unique}-fast", "echo", ["hi"], {"k": b"\x00"}),
                ]
            )
        )
        by_id, order = await replies(ws, 2)
        assert order == [2, 1]
        assert by_id == {1: Result(1, 1), 2: Result(2, {"args": ["hi"], "kwargs": {"k": b"\x00"}})}

        # ten 0.5 s turns on ten objects, sent in one message: concurrent, not 5 s in a row
        calls = [Call(10 + i, "Probe", f"{unique}-{i}", "slow", [0.5], {}) for i in range(10)]
        started = trio.current_time()
        await ws.send_message(wire.encode(calls))
        by_id, _ = await replies(ws, 10)
        assert by_id == {call.id: Result(call.id, 1) for call in calls}
        assert trio.current_time() - started < 3.0


async def test_many_calls_to_one_object_in_one_message_come_back_batched(node: Node, unique: str) -> None:
    calls = [Call(i, "Counter", unique, "increment", [], {}) for i in range(1, 501)]
    async with open_rpc(node) as ws:
        await ws.send_message(wire.encode(calls[:250]))
        await ws.send_message(wire.encode(calls[250:]))
        by_id: dict[int, wire.Frame] = {}
        messages = 0
        while len(by_id) < len(calls):
            frames = await read(ws)
            messages += 1
            by_id.update((frame.id, frame) for frame in frames if isinstance(frame, Result))
        # calls to one object run in the order they were sent: call i sees the counter at i
        assert by_id == {i: Result(i, i) for i in range(1, 501)}
        # group commit finishes turns together, and their replies leave together
        assert messages <= 20, messages
    reply = await fetch(node.url, "GET", f"/counter/{unique}")
    assert reply.json() == {"value": 500}


async def test_calls_sent_while_their_object_activates_still_apply_in_the_order_sent(
    node: Node, unique: str
) -> None:
    # A new object's first calls wait for its activation on the node's worker tasks; calls that
    # arrive once it is live are queued on it at once. Those must not overtake the first ones:
    # per object, two calls in one message, then one per message right behind them.
    objects = [f"{unique}-{i}" for i in range(30)] + [f"slowstart-{unique}"]  # (0.3 s on_start)
    call_id = 0
    sent: dict[int, tuple[str, int]] = {}
    async with open_rpc(node) as ws:
        for name in objects:
            for message in ([1, 2], [3], [4], [5]):
                frames = []
                for item in message:
                    call_id += 1
                    sent[call_id] = (name, item)
                    frames.append(Call(call_id, "Probe", name, "append", [item], {}))
                await ws.send_message(wire.encode(frames))
        by_id, _ = await replies(ws, call_id)
    for call, (name, item) in sent.items():
        assert by_id[call] == Result(call, list(range(1, item + 1))), name


async def test_calls_still_queued_when_the_client_closes_never_run(node: Node, unique: str) -> None:
    async with open_rpc(node) as ws:
        assert await call_one(ws, Call(1, "Probe", unique, "slow", [0], {})) == Result(1, 1)  # live
        await ws.send_message(wire.encode([Call(2, "Probe", unique, "slow", [1.0], {})]))
        await ws.send_message(wire.encode([Call(i, "Probe", unique, "append", [i], {}) for i in range(3, 8)]))
        await trio.sleep(0.3)  # the slow turn is running, the appends are queued behind it
    await trio.sleep(1.0)  # the slow turn has finished
    async with open_rpc(node) as ws:
        # the running turn committed; the queued calls were dropped with their connection
        assert await call_one(ws, Call(1, "Probe", unique, "slow_calls", [], {})) == Result(1, 2)
        assert await call_one(ws, Call(2, "Probe", unique, "append", [99], {})) == Result(2, [99])


ERRORS: list[tuple[Call, type[errors.ActorError], str]] = [
    (Call(1, "Nope", "x", "m", [], {}), errors.UnknownClass, "no object class named 'Nope'"),
    (Call(1, "Probe", "x", "nope", [], {}), errors.UnknownMethod, "Probe has no public async method 'nope'"),
    (
        Call(1, "Probe", "x", "_secret", [], {}),
        errors.UnknownMethod,
        "Probe has no public async method '_secret'",
    ),
    (
        Call(1, "Probe", "x", "fail", [], {}),
        errors.InvalidArgument,
        "fail(): missing a required argument: 'message'",
    ),
    (
        Call(1, "Probe", "x", "echo", [{1, 2}], {}),
        errors.InvalidArgument,
        "args[0]: set is not serializable",
    ),
    (
        Call(1, "Probe", "é" * 513, "echo", [], {}),
        errors.LimitExceeded,
        "object name is 1026 bytes; MAX_OBJECT_NAME_BYTES is 1024",
    ),
    (
        Call(1, "Probe", "x", "m" * 129, [], {}),
        errors.LimitExceeded,
        "method name is over MAX_METHOD_NAME_BYTES (128)",
    ),
    (
        Call(1, "Counter", "x", "increment", ["one"], {}),
        errors.InvalidArgument,
        "by must be an int, not str",
    ),
]


@pytest.mark.parametrize(
    ("call", "kind", "message"), ERRORS, ids=[e[0].method[:8] + "-" + e[1].__name__ for e in ERRORS]
)
async def test_each_named_error_is_an_error_frame_for_its_call(
    node: Node, call: Call, kind: type[errors.ActorError], message: str
) -> None:
    async with open_rpc(node) as ws:
        reply = await call_one(ws, call)
        assert isinstance(reply, Error)
        assert reply.id == call.id
        assert reply.error["message"] == message
        exc = reply.exception()
        assert type(exc) is kind
        assert reply.error["type"] == kind.__name__
        # the connection serves on after an error
        assert await call_one(ws, Call(2, "Probe", "x", "echo", [], {})) == Result(
            2, {"args": [], "kwargs": {}}
        )


async def test_a_user_exception_comes_back_as_its_own_type_and_message(node: Node, unique: str) -> None:
    async with open_rpc(node) as ws:
        reply = await call_one(ws, Call(7, "Probe", unique, "fail", ["it broke"], {}))
        assert reply == Error(7, {"type": "ValueError", "message": "it broke"})
        exc = reply.exception()
        assert isinstance(exc, errors.UserError)
        assert exc.type == "ValueError"


async def test_a_call_past_its_own_timeout_is_call_timeout_and_never_runs(node: Node, unique: str) -> None:
    async with open_rpc(node) as ws:
        await ws.send_message(
            wire.encode(
                [
                    Call(1, "Probe", unique, "slow", [1.0], {}),
                    Call(2, "Probe", unique, "slow", [0.0], {}, timeout=0.2),  # queued behind call 1
                ]
            )
        )
        by_id, order = await replies(ws, 2)
        assert order == [2, 1]
        assert by_id[2] == Error(2, by_id[2].error)  # type: ignore[union-attr]
        assert isinstance(by_id[2].exception(), errors.CallTimeout)  # type: ignore[union-attr]
        assert by_id[1] == Result(1, 1)
        assert await call_one(ws, Call(3, "Probe", unique, "slow_calls", [], {})) == Result(3, 1)


async def test_an_object_queue_at_max_queue_depth_answers_overloaded(strict_node: Node, unique: str) -> None:
    async with open_rpc(strict_node, token=TOKEN) as ws:  # max_queue_depth 1
        await ws.send_message(wire.encode([Call(i, "Probe", unique, "slow", [0.3], {}) for i in (1, 2, 3)]))
        by_id, order = await replies(ws, 3)
        # call 1 waits in the queue while the object activates; 2 and 3 find the queue full
        assert order == [2, 3, 1]
        for refused in (by_id[2], by_id[3]):
            overloaded = refused.exception()  # type: ignore[union-attr]
            assert isinstance(overloaded, errors.Overloaded)
            assert overloaded.retry_after > 0
        assert by_id[1] == Result(1, 1)


async def test_calls_past_the_in_flight_cap_get_overloaded_without_reaching_their_object(
    node: Node, unique: str
) -> None:
    # 4,096 two-second turns held on 5 objects (1 running and up to 1,000 queued each), then one more
    cap, per_message = MAX_IN_FLIGHT_PER_CONNECTION, wire.MAX_FRAMES_PER_MESSAGE
    calls = [Call(i + 1, "Probe", f"{unique}-{i % 5}", "slow", [2.0], {}) for i in range(cap)]
    extra = Call(cap + 1, "Probe", f"{unique}-extra", "slow", [0.0], {})
    async with open_rpc(node) as ws:
        for start in range(0, cap - 1, per_message):
            await ws.send_message(wire.encode(calls[start : min(start + per_message, cap - 1)]))
        await ws.send_message(wire.encode([calls[-1], extra]))  # the cap is reached mid-message
        (first, *_) = await read(ws)
        assert isinstance(first, Error)
        assert first.id == extra.id
        refused = first.exception()
        assert isinstance(refused, errors.Overloaded)
        assert refused.retry_after == IN_FLIGHT_RETRY_AFTER
        assert refused.message == (
            f"this connection has MAX_IN_FLIGHT_PER_CONNECTION ({cap}) calls in flight; the call did not run"
        )
    async with open_rpc(node) as ws:
        assert await call_one(ws, Call(1, "Probe", f"{unique}-extra", "slow_calls", [], {})) == Result(1, 0)


async def test_a_result_over_max_frame_bytes_is_limit_exceeded_and_big_batches_are_split(
    node: Node, unique: str
) -> None:
    limit = 1024 * 1024
    async with open_rpc(node) as ws:
        reply = await call_one(ws, Call(1, "Probe", unique, "big", [limit + 1], {}))
        exc = reply.exception()  # type: ignore[union-attr]
        assert isinstance(exc, errors.LimitExceeded)
        assert exc.limit == "max_frame_bytes"
        assert exc.message.endswith("; the call's writes were applied")
        # three 400 KB results finish together but cannot share one 1 MiB message
        await ws.send_message(
            wire.encode([Call(i, "Probe", unique, "big", [400_000], {}) for i in (2, 3, 4)])
        )
        by_id, _ = await replies(ws, 3)
        assert by_id == {i: Result(i, b"x" * 400_000) for i in (2, 3, 4)}


#### Malformed messages: Error(None) and 4400, and the node serves on

MALFORMED: list[tuple[str, list[bytes | str], str]] = [
    (
        "a call before the hello",
        [wire.encode([Call(1, "Probe", "x", "echo", [], {})])],
        "the first message must be exactly one Hello frame",
    ),
    (
        "two hellos at once",
        [wire.encode([Hello((1,), "a"), Hello((1,), "b")])],
        "the first message must be exactly one Hello frame",
    ),
    (
        "no version in common",
        [wire.encode([Hello((2, 99), "future")])],
        r"no protocol version in common: the node speaks \[1\], the client \[2, 99\]",
    ),
    ("a text hello", ["hello"], "text messages are not part of the protocol: send binary CBOR"),
    ("a text message", [HELLO, "{}"], "text messages are not part of the protocol: send binary CBOR"),
    ("not CBOR", [HELLO, b"\xff"], "the message is not valid CBOR: CBORDecodeError: .*"),
    ("deep nesting", [HELLO, b"\x81" * 100_000 + b"\x00"], "the message is not valid CBOR: .*nesting.*"),
    ("a second hello", [HELLO, HELLO], "Hello is only the first message of a connection"),
    ("a result", [HELLO, wire.encode([Result(1, None)])], "Result frames are sent by the node only"),
    (
        "an error",
        [HELLO, wire.encode([Error(1, {"type": "X", "message": ""})])],
        "Error frames are sent by the node only",
    ),
    (
        "a welcome",
        [HELLO, wire.encode([Welcome(1, "n", 1, 1, (("n", "u"),), 0)])],
        "Welcome frames are sent by the node only",
    ),
    (
        "a duplicate id in a message",
        [HELLO, wire.encode([Call(1, "Probe", "x", "echo", [], {})] * 2)],
        "a call id is already in flight on this connection",
    ),
    (
        "an id already in flight",
        [
            HELLO,
            wire.encode([Call(1, "Probe", "dup", "slow", [1.0], {})]),
            wire.encode([Call(1, "Probe", "x", "echo", [], {})]),
        ],
        "a call id is already in flight on this connection",
    ),
]


@pytest.mark.parametrize(("messages", "reason"), [m[1:] for m in MALFORMED], ids=[m[0] for m in MALFORMED])
async def test_a_malformed_message_gets_error_none_then_close_4400_and_the_node_serves_on(
    node: Node, messages: list[bytes | str], reason: str
) -> None:
    async with open_socket(node, "/v1/connect") as ws:
        for message in messages:
            await ws.send_message(message)
        frames = await read(ws)
        if frames and isinstance(frames[0], Welcome):
            frames = frames[1:] or await read(ws)
        assert len(frames) == 1, frames
        error = frames[0]
        assert isinstance(error, Error)
        assert error.id is None
        assert error.error["type"] == "InvalidArgument"
        assert re.fullmatch(reason, error.error["message"]), error.error["message"]
        assert await wait_closed(ws) == (4400, close_reason(error.error["message"]))
    async with open_rpc(node) as ws:
        assert await call_one(ws, Call(1, "Probe", "x", "echo", [1], {})) == Result(
            1, {"args": [1], "kwargs": {}}
        )


async def test_none_of_the_calls_of_a_malformed_message_run(node: Node, unique: str) -> None:
    async with open_rpc(node) as ws:
        await ws.send_message(
            cbor2.dumps([[3, 1, "Counter", unique, "increment", [], {}, None], [3, 2, "Counter", unique]])
        )
        (error,) = await read(ws)
        assert error == Error(
            None, {"type": "InvalidArgument", "message": "frame 1 (Call) must have 8 items, not 4"}
        )
        assert (await wait_closed(ws))[0] == 4400
    assert (await fetch(node.url, "GET", f"/counter/{unique}")).json() == {"value": 0}


#### Drain


async def test_sigterm_answers_calls_in_flight_refuses_new_ones_then_closes_1001(tmp_path: Path) -> None:
    async with open_node(tmp_path / "data", "--app", APP) as node, open_rpc(node) as ws:
        await ws.send_message(wire.encode([Call(1, "Probe", "p", "slow", [1.0], {})]))
        await wait_for_metric(node, lambda text: value(text, "actors_live_objects") == 1, "the call to start")
        node.process.send_signal(signal.SIGTERM)
        # until the drain begins, echo calls run; from then on they are refused with ShuttingDown
        got: dict[int, wire.Frame] = {}
        call_id = 1
        with trio.fail_after(SOCKET_TIMEOUT):
            while True:
                call_id += 1
                await ws.send_message(wire.encode([Call(call_id, "Probe", "q", "echo", [], {})]))
                while call_id not in got:
                    got.update((frame.id, frame) for frame in await read(ws))  # type: ignore[misc]
                if isinstance(got[call_id], Error):
                    break
                await trio.sleep(0.01)
        refused = got[call_id].exception()  # type: ignore[union-attr]
        assert isinstance(refused, errors.ShuttingDown)
        assert refused.message == "the node is shutting down; the call did not run"
        while 1 not in got:
            got.update((frame.id, frame) for frame in await read(ws))  # type: ignore[misc]
        assert got[1] == Result(1, 1)
        assert await wait_closed(ws) == (1001, "node shutting down")
        with trio.fail_after(STOP_TIMEOUT):
            assert await node.process.wait() == 0


#### The cluster settings


def test_the_node_name_and_url_default_to_the_bound_address() -> None:
    assert Config().cluster_node("http://127.0.0.1:5000") == ("127.0.0.1:5000", "http://127.0.0.1:5000")
    host = socket.gethostname()
    for wildcard in ("http://0.0.0.0:5000", "http://[::]:5000"):
        assert Config(host="0.0.0.0").cluster_node(wildcard) == (f"{host}:5000", f"http://{host}:5000")
    config = Config(node_name="n1", advertise_url="https://nodes.example/a/")
    assert config.cluster_node("http://127.0.0.1:5000") == ("n1", "https://nodes.example/a")
    assert Config(advertise_url="http://lb:80").cluster_node("http://127.0.0.1:1") == (
        "lb:80",
        "http://lb:80",
    )


def test_the_cluster_settings_come_from_flags_and_variables() -> None:
    args = _build_parser().parse_args(["serve", "--node-name", "n1"])
    config = config_from_args(args, {"ACTORS_ADVERTISE_URL": "http://a:1", "ACTORS_NODE_NAME": "n2"})
    assert (config.node_name, config.advertise_url) == ("n1", "http://a:1")


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"node_name": ""}, "node_name must be 1 to 256 bytes of printable text"),
        ({"node_name": "a\x00b"}, "node_name must be 1 to 256 bytes of printable text"),
        ({"node_name": "é" * 129}, "node_name must be 1 to 256 bytes of printable text"),
        (
            {"advertise_url": "ftp://a"},
            "advertise_url must look like http(s)://host[:port][/path], not 'ftp://a'",
        ),
        (
            {"advertise_url": "http://"},
            "advertise_url must look like http(s)://host[:port][/path], not 'http://'",
        ),
        (
            {"advertise_url": "http://a?x=1"},
            "advertise_url must look like http(s)://host[:port][/path], not .*",
        ),
        (
            {"advertise_url": "http://a:port"},
            "advertise_url must look like http(s)://host[:port][/path], not .*",
        ),
    ],
)
def test_bad_cluster_settings_are_refused_naming_them(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=f"^{re.escape(message).replace(re.escape('.*'), '.*')}$"):
        Config(**fields)
