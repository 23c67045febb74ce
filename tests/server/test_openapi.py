"""The OpenAPI description (``server/openapi.py``) is true: it names exactly the routes of
``http.ROUTES`` and the WebSockets of ``websocket.py``, it is valid OpenAPI 3.1, a live node's
replies match it, and schemathesis (generated requests against a live node, derandomized and
bounded) finds no 5xx and no reply that breaks it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import hypothesis
import jsonschema
import referencing
import referencing.jsonschema
import schemathesis
from hypothesis import strategies as st
from schemathesis.specs.openapi.definitions import OPENAPI_31  # the OAI's own schema for 3.1 documents

from server import codec
from server.http import ROUTES
from server.openapi import CURSOR_FORMAT, DOCUMENT, WEBSOCKETS
from server.rpc import RPC_PATH
from server.websocket import WS_ROUTES

from .nodes import Node, Reply, fetch

METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
DOC_URI = "urn:actors:openapi"


def _operations() -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in DOCUMENT["paths"].items():
        for method, operation in item.items():
            if method in METHODS:
                yield method.upper(), path, operation


def _path(pattern: tuple[str, ...]) -> str:
    return "/" + "/".join(pattern)


#### The document and the route table


def test_every_route_is_described_and_nothing_else() -> None:
    routes = {(route.method, _path(route.pattern)) for route in ROUTES}
    described = {(method, path) for method, path, _ in _operations()}
    assert described == routes


def test_path_parameters_match_the_route_patterns() -> None:
    for method, path, operation in _operations():
        named = re.findall(r"\{([^}]+)\}", path)
        params = [p["name"] for p in operation.get("parameters", []) if p["in"] == "path"]
        assert params == named, (method, path)


def test_only_the_routes_that_need_no_token_declare_no_security() -> None:
    open_routes = {(route.method, _path(route.pattern)) for route in ROUTES if not route.needs_auth}
    declared_open = {(m, p) for m, p, op in _operations() if op.get("security") == []}
    assert declared_open == open_routes
    assert open_routes == {("GET", "/"), ("GET", "/healthz"), ("GET", "/readyz"), ("GET", "/openapi.json")}
    assert DOCUMENT["security"] == [{"bearer": []}, {}]  # a token only when the node has one
    admin_routes = {(route.method, _path(route.pattern)) for route in ROUTES if route.admin}
    assert {p for _, p in admin_routes} == {
        "/v1/objects", "/v1/cluster/nodes", "/v1/cluster/membership", "/v1/objects/{class}/{name}/export",
        "/v1/objects/{class}/{name}",
    }  # fmt: skip
    for method, path, operation in _operations():
        if (method, path) in admin_routes:  # the admin token when the node has one (403 for the call token)
            assert operation["security"] == [{"admin": []}, {"bearer": []}, {}]
            assert {"401", "403"} <= set(operation["responses"]), (method, path)
        elif (method, path) not in open_routes:
            assert "security" not in operation
            assert "401" in operation["responses"], (method, path)
            assert "403" not in operation["responses"], (method, path)


def test_every_websocket_route_is_listed() -> None:
    sockets = {_path(route.pattern) for route in WS_ROUTES} | {_path(RPC_PATH)}
    assert set(WEBSOCKETS) == sockets
    assert [entry["path"] for entry in DOCUMENT["x-websockets"]] == list(WEBSOCKETS)


def test_every_error_reply_is_the_shared_error_schema() -> None:
    for method, path, operation in _operations():
        for status, response in operation["responses"].items():
            if int(status) < 400 or (path, status) in {("/readyz", "503"), ("/ratelimit/{key}", "429")}:
                continue
            for media in response["content"].values():
                assert media["schema"] == {"$ref": "#/components/schemas/Error"}, (method, path, status)
            if status == "503":
                assert "Retry-After" in response["headers"]


def _schemas(value: Any) -> Iterator[Any]:
    """Every Schema Object in the document (under a ``schema`` key or in ``components.schemas``)."""
    if isinstance(value, dict):
        for key, item in value.items():
            if key == "schema":
                yield item
            elif key == "schemas":
                yield from item.values()
            else:
                yield from _schemas(item)
    elif isinstance(value, list):
        for item in value:
            yield from _schemas(item)


def test_the_document_is_valid_openapi_3_1() -> None:
    # OPENAPI_31 checks the document's structure but not its Schema Objects ("without schema
    # validation"), so each of those is checked against JSON Schema 2020-12, the dialect of 3.1.
    jsonschema.Draft202012Validator(OPENAPI_31).validate(DOCUMENT)
    schemas = list(_schemas(DOCUMENT))
    assert len(schemas) > 30
    for schema in schemas:
        jsonschema.Draft202012Validator.check_schema(schema)
    schemathesis.openapi.from_dict(json.loads(json.dumps(DOCUMENT))).validate()


#### Real replies


def _validate(method: str, path: str, reply: Reply) -> None:
    """Assert that ``reply`` to ``method path`` (a documented path) is documented, with its body."""
    operation = DOCUMENT["paths"][path][method.lower()]
    status = str(reply.status)
    assert status in operation["responses"], (method, path, status, reply.body)
    response = operation["responses"][status]
    content_type = reply.headers["content-type"].split(";")[0]
    assert content_type in response["content"], (method, path, status, content_type)
    for name, header in response.get("headers", {}).items():
        if header.get("required") or "$ref" in header:
            assert name.lower() in reply.headers, (method, path, status, name)
    if content_type != "application/json":
        return
    escaped = path.replace("~", "~0").replace("/", "~1")
    parts = (
        "#",
        "paths",
        escaped,
        method.lower(),
        "responses",
        status,
        "content",
        "application~1json",
        "schema",
    )
    pointer = "/".join(parts)
    registry: referencing.Registry[Any] = referencing.Registry().with_resource(
        DOC_URI, referencing.jsonschema.DRAFT202012.create_resource(DOCUMENT)
    )
    schema = {"$ref": DOC_URI + quote(pointer, safe="#/~")}
    jsonschema.Draft202012Validator(schema, registry=registry).validate(reply.json())


async def test_the_node_serves_the_document_without_a_token(strict_node: Node) -> None:
    reply = await fetch(strict_node.url, "GET", "/openapi.json", headers={"Accept": "application/cbor"})
    assert reply.status == 200
    assert reply.json() == DOCUMENT


async def test_replies_of_a_live_node_match_the_document(node: Node, unique: str) -> None:
    cases: list[tuple[str, str, str, dict[str, Any]]] = [
        ("GET", "/healthz", "/healthz", {}),
        ("GET", "/readyz", "/readyz", {}),
        ("GET", "/metrics", "/metrics", {}),
        ("GET", "/", "/", {}),
        ("GET", "/openapi.json", "/openapi.json", {}),
        ("POST", "/counter/{name}/increment", f"/counter/{unique}/increment", {"json_body": {"by": 2}}),
        ("GET", "/counter/{name}", f"/counter/{unique}", {}),
        ("POST", "/ratelimit/{key}", f"/ratelimit/{unique}", {}),
        ("GET", "/v1/cluster", "/v1/cluster", {}),
        ("GET", "/v1/cluster/nodes", "/v1/cluster/nodes", {}),
        ("GET", "/v1/objects", f"/v1/objects?class=Counter&prefix={unique}&limit=1", {}),
        ("GET", "/v1/objects/{class}/{name}/export", f"/v1/objects/Counter/{unique}/export", {}),
        ("DELETE", "/v1/objects/{class}/{name}", f"/v1/objects/Counter/{unique}", {}),
        ("POST", "/v1/objects/{class}/{name}/{method}", f"/v1/objects/Probe/{unique}/echo",
         {"json_body": {"args": [1], "kwargs": {"a": None}}}),
        # errors, each with the shared error body
        ("POST", "/v1/objects/{class}/{name}/{method}", f"/v1/objects/Probe/{unique}/fail",
         {"json_body": {"args": ["boom"]}}),
        ("POST", "/v1/objects/{class}/{name}/{method}", f"/v1/objects/Nope/{unique}/m", {}),
        ("POST", "/v1/objects/{class}/{name}/{method}", f"/v1/objects/Probe/{unique}/blob", {}),
        ("POST", "/counter/{name}/increment", f"/counter/{unique}/increment", {"json_body": {"by": "x"}}),
        ("GET", "/v1/objects", "/v1/objects?limit=0", {}),
        ("GET", "/v1/objects/{class}/{name}/export", f"/v1/objects/Counter/{unique}-none/export", {}),
    ]  # fmt: skip
    statuses = []
    for method, documented, path, kwargs in cases:
        reply = await fetch(node.url, method, path, **kwargs)
        _validate(method, documented, reply)
        statuses.append(reply.status)
    assert statuses == [200] * 14 + [500, 404, 406, 400, 400, 404]


async def test_errors_of_a_node_with_a_token_and_limits_match_the_document(strict_node: Node) -> None:
    unauthorized = await fetch(strict_node.url, "GET", "/v1/cluster")
    assert unauthorized.status == 401
    _validate("GET", "/v1/cluster", unauthorized)
    too_large = await fetch(
        strict_node.url,
        "POST",
        "/counter/x/increment",
        token=strict_node.token,
        body=b"[" + b" " * 2000 + b"]",
    )
    assert too_large.status == 413
    assert too_large.json()["error"]["limit"] == "max_body_bytes"
    _validate("POST", "/counter/{name}/increment", too_large)


#### schemathesis against a live node

#: generated requests per operation and mode (about a dozen operations, each a round trip on loopback;
#: about 15 s in all on a shared core)
EXAMPLES_PER_OPERATION = 50

#: only a cursor the node made is valid (``server.openapi.CURSOR_FORMAT``): generate real ones, and empty
CURSORS = st.just("") | st.tuples(st.text(), st.text(), st.text()).map(codec.encode_cursor)


def _run(operation: Any, mode: schemathesis.GenerationMode, url: str, **fixed: Any) -> None:
    """Send generated requests for ``operation`` and check every reply with schemathesis's checks
    (no 5xx; status, content type, headers and body as documented; valid requests accepted and, in
    negative mode, invalid ones refused)."""

    @hypothesis.settings(
        max_examples=EXAMPLES_PER_OPERATION,
        derandomize=True,  # the same requests on every run
        database=None,
        deadline=None,
        suppress_health_check=list(hypothesis.HealthCheck),
        phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate],
    )
    @hypothesis.given(case=operation.as_strategy(mode, **fixed))
    def check(case: schemathesis.Case) -> None:
        case.call_and_validate(base_url=url, timeout=10)

    check()


def test_schemathesis_finds_no_5xx_and_no_reply_off_the_document(node: Node) -> None:
    schemathesis.openapi.format(CURSOR_FORMAT, CURSORS)
    # from_url leaves out the operation that serves the document itself (checked above instead)
    schema = schemathesis.openapi.from_url(f"{node.url}/openapi.json", timeout=10)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {f"{op.method.upper()} {op.path}" for op in operations} == {
        f"{route.method} {_path(route.pattern)}" for route in ROUTES
    } - {"GET /openapi.json"}
    for operation in operations:
        _run(operation, schemathesis.GenerationMode.POSITIVE, node.url)
        # a body or a query is something a request can get wrong (a path segment is any string)
        if operation.body or operation.query:
            _run(operation, schemathesis.GenerationMode.NEGATIVE, node.url)
        if operation.path == "/v1/objects/{class}/{name}/{method}":
            # the generated class names are unknown (404): call a real method with generated arguments
            echo = {"class": "Probe", "method": "echo"}
            _run(operation, schemathesis.GenerationMode.POSITIVE, node.url, path_parameters=echo)
