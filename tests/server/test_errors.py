"""Every error status a node answers, with its exact JSON body shape, over real HTTP.

Each error reply is ``{"error": {"type": ..., "message": ...}}`` plus the error's own fields
(``limit``, ``retry_after``, and ``traceback`` on a ``--debug`` node only).
"""

from __future__ import annotations

import json

import cbor2
import trio

from .conftest import TOKEN
from .nodes import Node, Reply, fetch, metric


def error_of(reply: Reply) -> dict[str, object]:
    body = reply.json()
    assert list(body) == ["error"], body
    error = body["error"]
    assert isinstance(error, dict)
    assert isinstance(error["type"], str)
    assert isinstance(error["message"], str)
    return error


#### 400


async def test_malformed_json_is_400_invalid_argument(node: Node, unique: str) -> None:
    reply = await fetch(node.url, "POST", f"/v1/objects/Tally/{unique}/add", body=b"{nope")
    assert reply.status == 400
    error = error_of(reply)
    assert error["type"] == "InvalidArgument"
    assert str(error["message"]).startswith("malformed JSON body: ")


async def test_malformed_cbor_is_400(node: Node, unique: str) -> None:
    reply = await fetch(
        node.url,
        "POST",
        f"/v1/objects/Tally/{unique}/add",
        body=b"\xff\xff",
        headers={"Content-Type": "application/cbor"},
    )
    assert reply.status == 400
    error = cbor2.loads(reply.body)["error"]
    assert error["type"] == "InvalidArgument"
    assert error["message"].startswith("malformed CBOR body: ")


async def test_wrong_body_shapes_are_400_naming_the_problem(node: Node, unique: str) -> None:
    path = f"/v1/objects/Probe/{unique}/echo"
    cases = {
        b"[1, 2]": 'the body must be a map {"args": [...], "kwargs": {...}}',
        b'{"args": {"a": 1}}': '"args" must be a list, not a map',
        b'{"kwargs": [1]}': '"kwargs" must be a map, not a list',
        b'{"args": [], "extra": 1}': "unknown keys in the body: extra (allowed: args, kwargs)",
    }
    for body, message in cases.items():
        reply = await fetch(node.url, "POST", path, body=body)
        assert (reply.status, error_of(reply)) == (400, {"type": "InvalidArgument", "message": message})
    cbor_keys = await fetch(
        node.url,
        "POST",
        path,
        body=cbor2.dumps({"kwargs": {1: "x"}}),
        headers={"Content-Type": "application/cbor"},
    )
    assert cbor_keys.status == 400
    assert cbor2.loads(cbor_keys.body)["error"]["message"] == '"kwargs" keys must be strings, not int 1'


async def test_arguments_that_do_not_bind_are_400(node: Node, unique: str) -> None:
    reply = await fetch(
        node.url, "POST", f"/v1/objects/Tally/{unique}/add", json_body={"args": [], "kwargs": {"nope": 1}}
    )
    assert reply.status == 400
    assert error_of(reply)["type"] == "InvalidArgument"
    bad_by = await fetch(node.url, "POST", f"/counter/{unique}/increment", json_body={"by": "two"})
    assert (bad_by.status, error_of(bad_by)["type"]) == (400, "InvalidArgument")


async def test_a_name_over_the_limit_is_400_naming_the_limit(node: Node) -> None:
    reply = await fetch(node.url, "POST", "/counter/" + "n" * 1025 + "/increment")
    assert reply.status == 400
    assert error_of(reply) == {
        "type": "LimitExceeded",
        "message": "object name is 1025 bytes; MAX_OBJECT_NAME_BYTES is 1024",
        "limit": "MAX_OBJECT_NAME_BYTES",
    }


#: a body nested this deep made the JSON decoder raise RecursionError, answered as a 500 (issue 12)
HOSTILE_DEPTH = 50_000
JSON_TYPE, CBOR_TYPE = "application/json", "application/cbor"
DEPTH_ERROR = {
    "type": "LimitExceeded",
    "message": "the body is nested deeper than MAX_VALUE_DEPTH (64) allows",
    "limit": "MAX_VALUE_DEPTH",
}


async def test_a_body_nested_50000_levels_deep_is_400_naming_the_nesting_limit(
    node: Node, unique: str
) -> None:
    as_json = b'{"a":' * HOSTILE_DEPTH + b"1" + b"}" * HOSTILE_DEPTH
    as_cbor = b"\xa1\x61a" * HOSTILE_DEPTH + b"\x01"  # {"a": {"a": ... 1}}
    for path in (f"/counter/{unique}/increment", f"/v1/objects/Counter/{unique}/increment"):
        reply = await fetch(node.url, "POST", path, body=as_json, headers={"Content-Type": JSON_TYPE})
        assert (reply.status, error_of(reply)) == (400, DEPTH_ERROR), path
        reply = await fetch(node.url, "POST", path, body=as_cbor, headers={"Content-Type": CBOR_TYPE})
        assert (reply.status, reply.cbor()) == (400, {"error": DEPTH_ERROR}), path
    assert (await fetch(node.url, "GET", f"/counter/{unique}")).json() == {"value": 0}


async def test_a_json_string_that_is_not_text_is_400(node: Node, unique: str) -> None:
    # a lone surrogate (found by the fuzzers) reached objects, which could neither store nor send it
    body = b'{"args": ["\\ud800"]}'
    reply = await fetch(node.url, "POST", f"/v1/objects/Probe/{unique}/echo", body=body)
    assert (reply.status, error_of(reply)["type"]) == (400, "InvalidArgument")
    assert str(error_of(reply)["message"]).startswith("malformed JSON body: a string holds a lone surrogate")


async def test_invalid_utf8_in_the_path_is_400(node: Node) -> None:
    reply = await fetch(node.url, "GET", "/counter/%ff")
    assert (reply.status, error_of(reply)["type"]) == (400, "InvalidArgument")


async def test_listing_refuses_a_bad_limit_or_cursor(node: Node) -> None:
    for query in ("limit=0", "limit=1001", "limit=ten", "cursor=not-a-cursor"):
        reply = await fetch(node.url, "GET", f"/v1/objects?{query}")
        assert (reply.status, error_of(reply)["type"]) == (400, "InvalidArgument"), query


#### 404, 405, 406


async def test_unknown_routes_classes_and_methods_are_404(node: Node, unique: str) -> None:
    cases = {
        "/nowhere": "NotFound",
        f"/v1/objects/Nope/{unique}/get": "UnknownClass",
        f"/v1/objects/Tally/{unique}/nope": "UnknownMethod",
        f"/v1/objects/Tally/{unique}/_private": "UnknownMethod",
        f"/v1/objects/Probe/{unique}/alarm": "UnknownMethod",  # lifecycle hooks are not callable
    }
    for path, error_type in cases.items():
        reply = await fetch(node.url, "POST", path)
        assert (reply.status, error_of(reply)["type"]) == (404, error_type), path
    assert error_of(await fetch(node.url, "GET", "/nowhere"))["message"] == "no such route: /nowhere"


async def test_a_wrong_http_method_is_405_with_allow(node: Node, unique: str) -> None:
    reply = await fetch(node.url, "GET", f"/counter/{unique}/increment")
    assert reply.status == 405
    assert reply.headers["allow"] == "POST"
    assert error_of(reply) == {"type": "MethodNotAllowed", "message": "GET is not allowed here; use POST"}
    delete = await fetch(node.url, "DELETE", f"/counter/{unique}")
    assert (delete.status, delete.headers["allow"]) == (405, "GET")


async def test_a_result_json_cannot_carry_is_406(node: Node, unique: str) -> None:
    reply = await fetch(node.url, "POST", f"/v1/objects/Probe/{unique}/blob")
    assert reply.status == 406
    assert error_of(reply)["type"] == "NotAcceptable"


#### 500


async def test_user_exceptions_are_500_with_their_class_name_and_no_traceback(
    node: Node, unique: str
) -> None:
    reply = await fetch(node.url, "POST", f"/v1/objects/Probe/{unique}/fail", json_body={"args": ["boom"]})
    assert reply.status == 500
    assert error_of(reply) == {"type": "ValueError", "message": "boom"}


async def test_a_debug_node_adds_the_traceback(strict_node: Node, unique: str) -> None:
    reply = await fetch(
        strict_node.url,
        "POST",
        f"/v1/objects/Probe/{unique}/fail",
        token=TOKEN,
        json_body={"args": ["boom"]},
    )
    assert reply.status == 500
    error = error_of(reply)
    assert (error["type"], error["message"]) == ("ValueError", "boom")
    assert "Traceback" in str(error["traceback"])
    assert "raise ValueError(message)" in str(error["traceback"])


#### 401 and 413 (strict_node: a token and max_body_bytes = 1000)


async def test_a_missing_or_wrong_token_is_401(strict_node: Node, unique: str) -> None:
    for token in (None, "wrong"):
        for method, path in (
            ("POST", f"/counter/{unique}/increment"),
            ("GET", "/metrics"),
            ("GET", "/nowhere"),
        ):
            reply = await fetch(strict_node.url, method, path, token=token)
            assert reply.status == 401, (token, path)
            assert reply.headers["www-authenticate"] == "Bearer"
            assert error_of(reply) == {
                "type": "Unauthorized",
                "message": "missing or wrong bearer token (Authorization: Bearer <token>)",
            }
    ok = await fetch(strict_node.url, "POST", f"/counter/{unique}/increment", token=TOKEN)
    assert (ok.status, ok.json()) == (200, {"value": 1})


async def test_probes_need_no_token(strict_node: Node) -> None:
    assert (await fetch(strict_node.url, "GET", "/healthz")).status == 200
    assert (await fetch(strict_node.url, "GET", "/readyz")).status == 200


async def test_a_body_declared_too_large_is_413_before_it_is_read(strict_node: Node, unique: str) -> None:
    body = json.dumps({"args": ["x" * 1000]}).encode()
    reply = await fetch(strict_node.url, "POST", f"/v1/objects/Probe/{unique}/echo", token=TOKEN, body=body)
    assert reply.status == 413
    assert error_of(reply) == {
        "type": "LimitExceeded",
        "message": "request body is over max_body_bytes (1000)",
        "limit": "max_body_bytes",
    }


async def test_a_streamed_body_is_413_once_it_passes_the_limit(strict_node: Node, unique: str) -> None:
    chunks = [b'{"args": ["', b"x" * 600, b"x" * 600, b'"]}']  # no Content-Length: chunked
    reply = await fetch(
        strict_node.url,
        "POST",
        f"/v1/objects/Probe/{unique}/echo",
        token=TOKEN,
        body=iter(chunks),
        headers={"Transfer-Encoding": "chunked"},
    )
    assert reply.status == 413
    assert error_of(reply)["limit"] == "max_body_bytes"
    small = await fetch(
        strict_node.url,
        "POST",
        f"/v1/objects/Probe/{unique}/echo",
        token=TOKEN,
        body=iter([b'{"args": ', b"[1]}"]),
        headers={"Transfer-Encoding": "chunked"},
    )
    assert small.json() == {"result": {"args": [1], "kwargs": {}}}


#### 503 and 504 (strict_node: max_queue_depth = 1, call_timeout = 1 s)


async def _wait_for_metric(node: Node, name: str, value: float) -> None:
    with trio.fail_after(5):
        while True:
            text = (await fetch(node.url, "GET", "/metrics", token=node.token)).body.decode()
            if metric(text, name) == value:
                return
            await trio.sleep(0.01)


async def test_a_full_queue_is_503_overloaded_with_retry_after(strict_node: Node, unique: str) -> None:
    path = f"/v1/objects/Probe/{unique}/slow"
    replies: dict[str, Reply] = {}

    async def call(label: str, seconds: float) -> None:
        replies[label] = await fetch(
            strict_node.url, "POST", path, token=TOKEN, json_body={"args": [seconds]}
        )

    async with trio.open_nursery() as nursery:
        nursery.start_soon(call, "running", 0.5)
        await _wait_for_metric(strict_node, "actors_live_objects", 1)
        nursery.start_soon(call, "queued", 0)
        await _wait_for_metric(strict_node, "actors_queued_calls", 1)
        refused = await fetch(strict_node.url, "POST", path, token=TOKEN, json_body={"args": [0]})
    assert refused.status == 503
    assert refused.headers["retry-after"] == "1"
    error = error_of(refused)
    assert error["type"] == "Overloaded"
    assert isinstance(error["retry_after"], float)
    assert error["retry_after"] > 0
    assert (replies["running"].status, replies["queued"].status) == (200, 200)


async def test_a_call_past_its_deadline_is_504(strict_node: Node, unique: str) -> None:
    reply = await fetch(
        strict_node.url, "POST", f"/v1/objects/Probe/{unique}/slow", token=TOKEN, json_body={"args": [5]}
    )
    assert reply.status == 504
    assert error_of(reply)["type"] == "CallTimeout"
    calls = await fetch(strict_node.url, "POST", f"/v1/objects/Probe/{unique}/slow_calls", token=TOKEN)
    assert calls.json() == {"result": 0}  # the timed-out turn's write was rolled back


async def test_idle_objects_are_evicted_and_counted(strict_node: Node, unique: str) -> None:
    await fetch(strict_node.url, "POST", f"/counter/{unique}/increment", token=TOKEN)
    with trio.fail_after(5):
        while True:
            text = (await fetch(strict_node.url, "GET", "/metrics", token=TOKEN)).body.decode()
            if (metric(text, "actors_evictions_total", class_="Counter", reason="idle") or 0) >= 1:
                break
            await trio.sleep(0.05)


async def test_json_logs_are_one_object_per_line(strict_node: Node) -> None:
    await fetch(strict_node.url, "GET", "/healthz")
    lines = [line for line in strict_node.log().splitlines() if line]
    records = [json.loads(line) for line in lines]
    assert all({"ts", "level", "logger", "msg"} <= set(r) for r in records)
    listening = [r for r in records if r.get("event") == "listening"]
    assert listening
    assert listening[0]["urls"] == [strict_node.url]
