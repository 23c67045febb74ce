"""WebSocket routes of a real node: the room protocols, the generic route, formats, errors, checks.

Clients are trio-websocket connections to the session's ``node`` (``strict_node`` for the token);
see ``sockets.py``. Close codes are the table of ``server/errors.py``.
"""

from __future__ import annotations

import json
from urllib.parse import quote

import cbor2
import pytest
import trio
from trio_websocket import ConnectionRejected

from actors import errors
from server.config import Config, normalize_origin, parse_origins
from server.errors import FRAME_LIMIT, SEND_QUEUE_BYTES_LIMIT, SEND_QUEUE_LIMIT, close_code_of, close_reason
from server.websocket import match

from .conftest import TOKEN
from .nodes import Node, fetch
from .sockets import open_socket, receive, scrape, send_json, value, wait_closed

#### The rooms


async def test_chat_sends_history_first_then_every_message_to_every_member_with_increasing_seq(
    node: Node, unique: str
) -> None:
    path = f"/chat/{unique}"
    async with open_socket(node, path) as ann, open_socket(node, path) as bob:
        assert await receive(ann) == {"type": "history", "messages": []}
        assert await receive(bob) == {"type": "history", "messages": []}
        await send_json(ann, {"user": "ann", "text": "one", "ts": 1.5})
        await send_json(ann, {"user": "ann", "text": "two", "ts": 2})
        await send_json(bob, {"user": "bob", "text": "three", "ts": 3})
        got_ann = [await receive(ann) for _ in range(3)]
        got_bob = [await receive(bob) for _ in range(3)]
        assert got_ann == got_bob
        assert [m["seq"] for m in got_ann] == [1, 2, 3]
        sent = [(m["user"], m["text"], m["ts"]) for m in got_ann]
        assert sorted(sent) == [("ann", "one", 1.5), ("ann", "two", 2), ("bob", "three", 3)]
        assert sent.index(("ann", "one", 1.5)) < sent.index(("ann", "two", 2))  # one sender: in order
        async with open_socket(node, path) as late:
            assert await receive(late) == {"type": "history", "messages": got_ann}


async def test_chat_room_names_are_one_percent_decoded_path_segment(node: Node, unique: str) -> None:
    name = f"a/b {unique}"
    async with open_socket(node, f"/chat/{quote(name, safe='')}") as ws:
        await receive(ws)
        await send_json(ws, {"user": "ann", "text": "hi", "ts": 1})
        assert (await receive(ws))["seq"] == 1
    history = await fetch(
        node.url, "POST", f"/v1/objects/ChatRoom/{quote(name, safe='')}/history", json_body={}
    )
    assert [m["text"] for m in history.json()["result"]] == ["hi"]


async def test_presence_tells_members_who_joins_and_who_leaves(node: Node, unique: str) -> None:
    path = f"/presence/{unique}"
    async with open_socket(node, path) as ann:
        await send_json(ann, {"type": "join", "user": "ann", "meta": {"color": "red"}})
        assert await receive(ann) == {"type": "state", "members": [{"user": "ann", "meta": {"color": "red"}}]}
        assert await receive(ann) == {"type": "join", "user": "ann", "meta": {"color": "red"}}
        async with open_socket(node, path) as bob:
            await send_json(bob, {"type": "join", "user": "bob"})
            state = await receive(bob)
            assert [m["user"] for m in state["members"]] == ["ann", "bob"]
            assert await receive(ann) == {"type": "join", "user": "bob", "meta": {}}
        assert await receive(ann) == {"type": "leave", "user": "bob", "reason": "closed"}


async def test_counter_subscribers_get_the_value_on_join_and_after_every_http_change(
    node: Node, unique: str
) -> None:
    await fetch(node.url, "POST", f"/counter/{unique}/increment", json_body={"by": 41})
    async with (
        open_socket(node, f"/counter/{unique}/ws") as a,
        open_socket(node, f"/counter/{unique}/ws") as b,
    ):
        assert await receive(a) == {"type": "value", "value": 41}
        assert await receive(b) == {"type": "value", "value": 41}
        reply = await fetch(node.url, "POST", f"/counter/{unique}/increment")
        assert reply.json() == {"value": 42}
        await fetch(node.url, "POST", f"/v1/objects/Counter/{unique}/decrement", json_body={"args": [2]})
        for ws in (a, b):
            assert await receive(ws) == {"type": "value", "value": 42}
            assert await receive(ws) == {"type": "value", "value": 40}


#### The generic route: a user class


async def test_a_user_class_gets_its_socket_events_on_the_generic_route(node: Node, unique: str) -> None:
    async with open_socket(node, f"/v1/objects/SocketProbe/{unique}/ws") as ws:
        assert await receive(ws) == {"type": "hello", "binary": False, "params": {}}
        await send_json(ws, {"n": 1})
        assert await receive(ws) == {"type": "echo", "data": {"n": 1}, "messages": 1}
        await ws.send_message(cbor2.dumps(["binary", "in"]))  # binary in, JSON text out
        assert await receive(ws) == {"type": "echo", "data": ["binary", "in"], "messages": 2}


async def test_the_object_sees_the_query_parameters_but_not_the_ones_the_node_consumed(
    node: Node, strict_node: Node, unique: str
) -> None:
    path = f"/v1/objects/SocketProbe/{unique}/ws?room=a%20b&token=signed.by.app&format=json"
    async with open_socket(node, path) as ws:  # no node token: ``token`` is the app's own
        assert (await receive(ws))["params"] == {"room": "a b", "token": "signed.by.app"}
    async with open_socket(strict_node, f"/v1/objects/SocketProbe/{unique}/ws?token={TOKEN}&x=1") as ws:
        assert (await receive(ws))["params"] == {"x": "1"}


@pytest.mark.parametrize(
    ("query", "subprotocols", "accepted"),
    [("", ["cbor"], "cbor"), ("?format=cbor", None, None), ("?format=cbor", ["json"], "json")],
)
async def test_a_client_that_asks_for_cbor_gets_binary_cbor_frames(
    node: Node, unique: str, query: str, subprotocols: list[str] | None, accepted: str | None
) -> None:
    async with open_socket(
        node, f"/v1/objects/SocketProbe/{unique}/ws{query}", subprotocols=subprotocols
    ) as ws:
        assert ws.subprotocol == accepted
        hello = await ws.get_message()
        assert isinstance(hello, bytes)
        assert cbor2.loads(hello) == {"type": "hello", "binary": True, "params": {}}
        await ws.send_message(cbor2.dumps({"blob": b"\x00\xff"}))
        assert await receive(ws) == {"type": "echo", "data": {"blob": b"\x00\xff"}, "messages": 1}


async def test_a_raising_on_message_gets_an_error_frame_and_drops_its_sends_and_writes(
    node: Node, unique: str
) -> None:
    async with open_socket(node, f"/v1/objects/SocketProbe/{unique}/ws") as ws:
        await receive(ws)
        await send_json(ws, "raise")
        assert await receive(ws) == {"type": "error", "error": "LookupError", "message": "on_message failed"}
        await send_json(ws, "still open")
        assert await receive(ws) == {"type": "echo", "data": "still open", "messages": 1}


async def test_on_connect_raising_closes_1011_and_closing_in_on_connect_keeps_the_objects_code(
    node: Node, unique: str
) -> None:
    async with open_socket(node, f"/v1/objects/SocketProbe/raise-{unique}/ws") as ws:
        assert await wait_closed(ws) == (1011, "on_connect refused it")
    async with open_socket(node, f"/v1/objects/SocketProbe/refuse-{unique}/ws") as ws:
        assert await wait_closed(ws) == (4001, "go away")


#### Errors


async def test_frames_that_do_not_decode_get_error_frames_and_the_socket_stays_usable(
    node: Node, unique: str
) -> None:
    async with open_socket(node, f"/chat/{unique}") as ws:
        await receive(ws)
        await ws.send_message("{not json")
        bad_json = await receive(ws)
        await ws.send_message('{"user": "ann", "text": "x", "ts": NaN}')
        nan = await receive(ws)
        await ws.send_message(b"\xff\xff")
        bad_cbor = await receive(ws)
        await ws.send_message(cbor2.dumps(cbor2.CBORTag(4000, "x")))
        tagged = await receive(ws)
        await ws.send_message(cbor2.dumps({1: "x"}))
        int_key = await receive(ws)
        await send_json(ws, {"user": "", "text": "x", "ts": 1})  # decodes; the room refuses it
        refused = await receive(ws)
        await send_json(ws, {"user": "ann", "text": "fine", "ts": 1})
        assert (await receive(ws))["seq"] == 1
    assert bad_json["type"] == "error"
    assert bad_json["error"] == "InvalidArgument"
    assert bad_json["message"].startswith("malformed JSON message: ")
    assert nan["message"] == "malformed JSON message: NaN is not JSON"
    assert bad_cbor["message"].startswith("malformed CBOR message: ")
    assert tagged["message"] == "message: CBORTag is not serializable"
    assert int_key["message"] == "message: dict key 1 is a int, not a str"
    assert refused == {
        "type": "error",
        "message": "user must be a non-empty string of at most 64 characters",
    }


async def test_a_message_over_max_frame_bytes_closes_the_socket_with_1009(node: Node, unique: str) -> None:
    limit = Config().max_frame_bytes
    async with open_socket(node, f"/chat/{unique}") as ws:
        await receive(ws)
        await ws.send_message(b"\x00" * limit)  # at the limit: decodes as CBOR 0, an error frame
        assert (await receive(ws))["type"] == "error"
        await ws.send_message(b"\x00" * (limit + 1))
        assert (await wait_closed(ws))[0] == 1009
    async with open_socket(node, f"/chat/{unique}") as ws:  # text counts UTF-8 bytes, not characters
        await receive(ws)
        await ws.send_message(json.dumps("é" * (limit // 2), ensure_ascii=False))
        assert await wait_closed(ws) == (1009, f"message is over max_frame_bytes ({limit})")


async def test_an_unknown_class_closes_4404_and_a_bad_name_4400(node: Node) -> None:
    async with open_socket(node, "/v1/objects/Nope/x/ws") as ws:
        assert await wait_closed(ws) == (4404, "no object class named 'Nope'")
    async with open_socket(node, "/v1/objects/Tally/" + "n" * 1025 + "/ws") as ws:
        code, reason = await wait_closed(ws)
        assert code == 4400
        assert reason is not None
        assert "MAX_OBJECT_NAME_BYTES" in reason


async def test_handshakes_are_refused_before_accept_for_bad_paths_and_formats(node: Node) -> None:
    for path, status, message in [
        ("/nope", 404, "no WebSocket route: /nope"),
        ("/chat/a/b", 404, "no WebSocket route: /chat/a/b"),
        ("/chat/%ff", 400, "the path is not valid percent-encoded UTF-8"),
        ("/chat/x?format=xml", 400, "format must be json or cbor, not 'xml'"),
    ]:
        with pytest.raises(ConnectionRejected) as rejected:
            async with open_socket(node, path):
                pass
        assert rejected.value.status_code == status
        assert rejected.value.body is not None
        assert json.loads(rejected.value.body)["error"]["message"] == message


def test_every_room_route_names_a_class_of_the_rooms() -> None:
    assert match(("chat", "r")) == (match(("chat", "r"))[0], "ChatRoom", "r")
    assert match(("presence", "r"))[1:] == ("Presence", "r")
    assert match(("counter", "c", "ws"))[1:] == ("Counter", "c")
    assert match(("v1", "objects", "Tally", "t", "ws"))[1:] == ("Tally", "t")


#### Auth and Origin


async def test_a_node_with_a_token_takes_it_from_the_header_or_the_query_and_refuses_others(
    strict_node: Node, unique: str
) -> None:
    path = f"/counter/{unique}/ws"
    for headers, query in [(None, ""), ([("Authorization", "Bearer wrong")], ""), (None, "?token=wrong")]:
        with pytest.raises(ConnectionRejected) as rejected:
            async with open_socket(strict_node, path + query, headers=headers):
                pass
        assert rejected.value.status_code == 401
        assert rejected.value.body is not None
        assert json.loads(rejected.value.body)["error"]["type"] == "Unauthorized"
    async with open_socket(strict_node, path, headers=[("Authorization", f"Bearer {TOKEN}")]) as ws:
        assert await receive(ws) == {"type": "value", "value": 0}
    async with open_socket(strict_node, f"{path}?token={quote(TOKEN)}") as ws:
        assert await receive(ws) == {"type": "value", "value": 0}


async def test_a_loopback_node_without_allowed_origins_accepts_any_origin(node: Node, unique: str) -> None:
    async with open_socket(
        node, f"/counter/{unique}/ws", headers=[("Origin", "https://elsewhere.example")]
    ) as ws:
        assert await receive(ws) == {"type": "value", "value": 0}


#### Metrics


async def test_metrics_count_connections_and_messages_both_ways(node: Node, unique: str) -> None:
    before = await scrape(node)
    async with open_socket(node, f"/chat/{unique}") as ws:
        await receive(ws)
        await send_json(ws, {"user": "ann", "text": "hi", "ts": 1})
        await receive(ws)
        during = await scrape(node)
    assert value(during, "actors_websocket_connections") >= 1
    assert value(during, "actors_open_sockets") >= 1
    assert value(during, "actors_websocket_messages_received_total") >= (
        value(before, "actors_websocket_messages_received_total") + 1
    )
    assert value(during, "actors_websocket_messages_sent_total") >= (
        value(before, "actors_websocket_messages_sent_total") + 2
    )
    assert value(during, "actors_http_requests_total", route="/chat/{name}", status="101") >= 1


async def test_protocol_pings_are_answered(node: Node, unique: str) -> None:
    async with open_socket(node, f"/chat/{unique}") as ws:
        await receive(ws)
        with trio.fail_after(5):
            await ws.ping(b"are you there")


#### The origin policy and the close-code table, without sockets


@pytest.mark.parametrize(
    ("origin", "normalized"),
    [
        ("https://App.Example", "https://app.example"),
        ("https://app.example:443/", "https://app.example"),
        ("http://127.0.0.1:8080", "http://127.0.0.1:8080"),
        ("http://[::1]:80", "http://[::1]"),
        ("null", None),
        ("file:///home", None),
        ("https://app.example/path", None),
        ("https://user@app.example", None),
    ],
)
def test_origins_compare_in_lower_case_without_default_ports(origin: str, normalized: str | None) -> None:
    assert normalize_origin(origin) == normalized


def test_allowed_origins_are_checked_when_the_config_is_made() -> None:
    assert parse_origins(" https://a.example, ,http://b.example:8080 ") == (
        "https://a.example",
        "http://b.example:8080",
    )
    assert Config(allowed_origins=("*",)).allowed_origins == ("*",)
    with pytest.raises(
        ValueError, match=r"^allowed_origins: 'a.example' is not '\*' or scheme://host\[:port\]$"
    ):
        Config(allowed_origins=("a.example",))
    with pytest.raises(ValueError, match=r"^max_frame_bytes must be at least 1$"):
        Config(max_frame_bytes=0)


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("127.0.0.1", True), ("127.0.0.2", True), ("::1", True), ("localhost", True), ("0.0.0.0", False),
     ("10.0.0.5", False), ("example.com", False)],
)  # fmt: skip
def test_only_loopback_binds_accept_any_origin_by_default(host: str, loopback: bool) -> None:
    assert Config(host=host).binds_loopback is loopback


def test_each_error_closes_with_the_code_of_the_table() -> None:
    cases: list[tuple[errors.ActorError, int]] = [
        (errors.ShuttingDown("x"), 1001),
        (errors.LimitExceeded("x", limit=FRAME_LIMIT), 1009),
        (errors.UserError("ValueError", "x"), 1011),
        (errors.ActivationFailed("x"), 1011),
        (errors.CallTimeout("x"), 1011),
        (errors.ObjectReset("x"), 1011),
        (errors.InternalError("x"), 1011),
        (errors.LimitExceeded("x", limit="MAX_SOCKETS_PER_OBJECT"), 1013),
        (errors.LimitExceeded("x", limit=SEND_QUEUE_LIMIT), 1013),
        (errors.LimitExceeded("x", limit=SEND_QUEUE_BYTES_LIMIT), 1013),
        (errors.Overloaded("x", retry_after=1.0), 1013),
        (errors.InvalidArgument("x"), 4400),
        (errors.LimitExceeded("x", limit="MAX_OBJECT_NAME_BYTES"), 4400),
        (errors.UnknownClass("x"), 4404),
    ]
    assert [(type(e).__name__, close_code_of(e)) for e, _ in cases] == [
        (type(e).__name__, code) for e, code in cases
    ]
    assert close_reason("é" * 100) == "é" * 60 + "..."
    assert len(close_reason("é" * 100).encode()) <= 123
