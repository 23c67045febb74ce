"""The OpenAPI 3.1 description of the node's HTTP API, served at ``GET /openapi.json``.

Guarantees
- Every route of ``http.ROUTES`` is described with its method, path parameters, request body (JSON,
  or CBOR as the alternative media type), every status it can answer and the one error body
  ``{"error": {"type", "message", "limit"?, "retry_after"?, "node"?}}`` of ``errors.py``; nothing
  else is described. ``tests/server/test_openapi.py`` holds the document to ``ROUTES`` both ways,
  validates it against OpenAPI 3.1's own JSON Schema and real replies against it, and runs
  schemathesis against a live node (no 5xx, no undocumented status, no body off its schema).
- The document is the same bytes on every node and every request (built once, at import): it names
  no server, so a client resolves the paths against the URL it fetched the document from.
- Security: a bearer token, required only when the node was given one (``--auth-token``), which is
  written as the two alternatives ``[{"bearer": []}, {}]``; ``/``, ``/healthz``, ``/readyz`` and
  ``/openapi.json`` declare none.

Statuses, by what a route does (the table of ``errors.py``): every route may answer 500 (an
internal error; for a turn, the object's code raised); routes behind the token answer 401; a route
that names an object answers 400 for a name over its limit, and 404 when the class is the caller's
(the built-in ``Counter`` and ``RateLimiter`` always exist); a route that runs a turn answers 503
(with ``Retry-After`` when overloaded or the owner is down) and 504; one forwarded to the owner
node 502; a route that reads a body 400 for a malformed one and 413 past ``max_body_bytes``; the
listing 400 for a bad query; the generic call 406 when its result cannot be written as JSON and
409 for a deadlock. A path taken with a method it
does not list is 405 with ``Allow`` (not listed per operation: OpenAPI describes the methods a path
has). A node at ``max_connections`` answers a new connection 503 whatever the route
(``listener.py``), before any route is known: said once in ``info.description``, not per operation.
WebSockets cannot be described in OpenAPI 3.1: ``x-websockets`` lists them.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from . import codec

if TYPE_CHECKING:
    from .http import HandlerContext, Reply, Request

__all__ = ["CURSOR_FORMAT", "DOCUMENT", "DOCUMENT_BYTES", "serve_document"]

Schema = dict[str, Any]

#: the listing cursor's ``format``: only a cursor the node made is valid (``codec.encode_cursor``),
#: which no pattern can say; a generator of requests (schemathesis) registers a strategy for it
CURSOR_FORMAT = "actors-cursor"

_ERROR_REF = {"$ref": "#/components/schemas/Error"}
_RETRY_AFTER = {"Retry-After": {"$ref": "#/components/headers/Retry-After"}}

#: what each error status means, for its response's description
_ERRORS: dict[int, str] = {
    400: "Bad input: a malformed body or path, or a name or value over a named limit (`limit`).",
    401: "Missing or wrong bearer token (only when the node has one).",
    403: "An admin route asked with the call token: it needs the admin token (`--admin-token`); or a "
    "membership not signed with the cluster secret.",
    404: "Unknown class, method or object (`UnknownClass`, `UnknownMethod`, `ObjectNotFound`).",
    406: "The result cannot be written as JSON (bytes, NaN): ask for CBOR (`Accept: application/cbor`).",
    409: "Deadlock: the call would wait on itself; or (`Conflict`) a membership older than, or other "
    "than, the one the node runs under that epoch.",
    413: "The request body is over `max_body_bytes` (`limit` names it); the node closes the connection.",
    500: "The object's code raised (`type` is its exception class), or an internal error (only a reference).",
    502: "`OwnerLost`: the owner went away after the call was forwarded to it (it may have run).",
    503: "`Overloaded`, `OwnerUnavailable` (`node` names the owner; the call did not run), `ObjectReset`, "
    "`ShuttingDown`. `Retry-After` is set for the first two.",
    504: "`CallTimeout`: the deadline passed before the turn committed; none of its writes were applied.",
}

#: statuses by what the route does (see the module docstring)
_ANY = (500,)
_AUTH = (401,)
_ADMIN = (401, 403)  # an admin route: the admin token when the node has one
#: an admin route's security: the admin token, else (a node without one) the call token, else none
_ADMIN_SECURITY: list[dict[str, list[str]]] = [{"admin": []}, {"bearer": []}, {}]
_NAMES_OBJECT = (400,)  # a name over its limit
_NAMES_CLASS = (400, 404)  # ... and a class the App does not have, or an object without storage
_RUNS_TURN = (503, 504)
_FORWARDS = (502,)  # a call or delete handed to the owner node
_READS_BODY = (400, 413)
_QUERY = (400,)


def _json_or_cbor(schema: Schema) -> dict[str, Any]:
    """A content map: JSON, and CBOR as the alternative (``Content-Type``/``Accept: application/cbor``)."""
    return {"application/json": {"schema": schema}, "application/cbor": {"schema": schema}}


def _ok(description: str, schema: Schema) -> dict[str, Any]:
    return {"description": description, "content": _json_or_cbor(schema)}


def _errors(*groups: tuple[int, ...]) -> dict[str, Any]:
    statuses = sorted({status for group in groups for status in group})
    responses: dict[str, Any] = {}
    for status in statuses:
        response: dict[str, Any] = {"description": _ERRORS[status], "content": _json_or_cbor(_ERROR_REF)}
        if status == 503:
            response["headers"] = _RETRY_AFTER
        responses[str(status)] = response
    return responses


def _object(required: dict[str, Schema], optional: dict[str, Schema] | None = None) -> Schema:
    return {
        "type": "object",
        "properties": {**required, **(optional or {})},
        "required": list(required),
        "additionalProperties": False,
    }


def _param(name: str, description: str, where: str = "path", schema: Schema | None = None) -> dict[str, Any]:
    return {
        "name": name,
        "in": where,
        "required": where == "path",
        "description": description,
        "schema": schema or {"type": "string"},
    }


_CLASS = _param("class", "The object's class, as the App names it (at most `MAX_CLASS_NAME_BYTES`).")
_NAME = _param("name", "The object's name (at most `MAX_OBJECT_NAME_BYTES` of UTF-8; `%2F` is a `/`).")
_COUNTER = _param("name", "The counter's name (an object of the built-in class `Counter`).")
_KEY = _param("key", "The bucket's key (an object of the built-in class `RateLimiter`).")

_NODE = {"type": "string", "description": "a node id"}
_UNAVAILABLE = _object({"node": _NODE, "error": {"type": "string"}})

_SCHEMAS: dict[str, Schema] = {
    "Error": _object(
        {
            "error": _object(
                {"type": {"type": "string"}, "message": {"type": "string"}},
                {
                    "limit": {"type": "string", "description": "the named limit passed (`LimitExceeded`)"},
                    "retry_after": {"type": "number", "description": "seconds (`Overloaded`, ...)"},
                    "node": {"type": "string", "description": "the owner (`OwnerUnavailable`)"},
                    "epoch": {
                        "type": "integer",
                        "description": "the epoch the refusing node acted under (`OwnerUnavailable`)",
                    },
                    "reference": {"type": "string", "description": "the log's reference (internal error)"},
                    "traceback": {"type": "string", "description": "the user's traceback (`--debug`)"},
                },
            )
        }
    ),
    "CallBody": {
        **_object({}, {"args": {"type": "array"}, "kwargs": {"type": "object"}}),
        "type": ["object", "null"],
        "description": "The call's arguments; an empty body or null means none; either key may be left out.",
    },
    "CounterBody": {
        **_object({}, {"by": {"type": "integer"}}),
        "type": ["object", "null"],
        "description": "An empty body or null adds 1.",
    },
    "Value": _object({"value": {"type": "integer"}}),
    "ObjectEntry": _object(
        {
            "class": {"type": "string"},
            "name": {"type": ["string", "null"]},
            "id": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
            "created": {"type": "number", "description": "epoch seconds"},
            "alarm": {"type": ["number", "null"], "description": "epoch seconds of the pending alarm"},
            "node": _NODE,
        }
    ),
    "ClusterNode": _object(
        {"node": _NODE, "url": {"type": "string"}, "up": {"type": "boolean"}},
        {"state": {"const": "leaving", "description": "handing its objects off before it leaves (etcd)"}},
    ),
    "NodeStats": _object(
        {"node": _NODE, "url": {"type": "string"}, "up": {"type": "boolean"}},
        {
            "objects": {"type": "integer", "description": "objects with storage on the node"},
            "live_objects": {"type": "integer", "description": "objects in its memory"},
            "epoch": {"type": "integer", "description": "the membership epoch the node acts under"},
            "to_move": {"type": "integer", "description": "objects it still has to hand off"},
            "settled": {"type": "boolean", "description": "it has handed off everything for its epoch"},
            "state": {"const": "leaving", "description": "handing its objects off before it leaves"},
            "error": {"type": "string", "description": "why the node's figures are missing"},
        },
    ),
}


def _ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


_NO_AUTH: list[dict[str, list[str]]] = []

_PATHS: dict[str, dict[str, Any]] = {
    "/": {
        "get": {
            "operationId": "demo_page",
            "summary": "The demo page (a chat room with presence and a live counter).",
            "security": _NO_AUTH,
            "responses": {
                "200": {"description": "The page.", "content": {"text/html": {"schema": {"type": "string"}}}},
                **_errors(_ANY),
            },
        }
    },
    "/openapi.json": {
        "get": {
            "operationId": "openapi",
            "summary": "This document.",
            "security": _NO_AUTH,
            "responses": {
                "200": {"description": "OpenAPI 3.1.", "content": {"application/json": {"schema": {}}}},
                **_errors(_ANY),
            },
        }
    },
    "/healthz": {
        "get": {
            "operationId": "healthz",
            "summary": "Liveness: the process answers.",
            "security": _NO_AUTH,
            "responses": {
                "200": _ok("Alive.", _object({"status": {"const": "ok"}})),
                **_errors(_ANY),
            },
        }
    },
    "/readyz": {
        "get": {
            "operationId": "readyz",
            "summary": "Readiness: 503 while draining, and until a cluster node has reached every peer once.",
            "security": _NO_AUTH,
            "responses": {
                "200": _ok("Ready.", _object({"status": {"const": "ready"}})),
                "503": _ok("Not ready.", _object({"status": {"const": "draining"}})),
                **_errors(_ANY),
            },
        }
    },
    "/metrics": {
        "get": {
            "operationId": "metrics",
            "summary": "Prometheus metrics (text exposition format).",
            "responses": {
                "200": {"description": "Metrics.", "content": {"text/plain": {"schema": {"type": "string"}}}},
                **_errors(_ANY, _AUTH),
            },
        }
    },
    "/v1/objects/{class}/{name}/{method}": {
        "post": {
            "operationId": "call",
            "summary": "Call a method of an object; a 2xx means the call's turn committed.",
            "parameters": [_CLASS, _NAME, _param("method", "The method (at most `MAX_METHOD_NAME_BYTES`).")],
            "requestBody": {"required": False, "content": _json_or_cbor(_ref("CallBody"))},
            "responses": {
                "200": _ok("The method's return value.", _object({"result": {}})),
                **_errors(_ANY, _AUTH, _NAMES_CLASS, _RUNS_TURN, _FORWARDS, _READS_BODY, (406, 409)),
            },
        }
    },
    "/v1/objects": {
        "get": {
            "operationId": "list_objects",
            "security": _ADMIN_SECURITY,
            "summary": "Stored objects of the whole cluster, in (class, name, id) order; wakes none.",
            "parameters": [
                _param("class", "Only this class.", "query"),
                _param("prefix", "Only names that start with this.", "query"),
                _param(
                    "limit",
                    "Objects per page (empty or absent: 100).",
                    "query",
                    {"anyOf": [{"type": "integer", "minimum": 1, "maximum": 1000}, {"const": ""}]},
                ),
                _param(
                    "cursor",
                    "The `cursor` of the previous page: opaque, made by the node (any other is a 400); "
                    "empty or absent: the first page.",
                    "query",
                    {"type": "string", "format": CURSOR_FORMAT, "pattern": "^[A-Za-z0-9_-]*$"},
                ),
            ],
            "responses": {
                "200": _ok(
                    "A page; `cursor` is null on the last one. Nodes that could not answer are in "
                    "`unavailable`, and their objects are missing from the page.",
                    _object(
                        {
                            "objects": {"type": "array", "items": _ref("ObjectEntry")},
                            "cursor": {"type": ["string", "null"]},
                            "unavailable": {"type": "array", "items": _UNAVAILABLE},
                        }
                    ),
                ),
                **_errors(_ANY, _ADMIN, _QUERY),
            },
        }
    },
    "/v1/cluster": {
        "get": {
            "operationId": "cluster_map",
            "summary": "The cluster map the SDK routes by (one node: epoch 0, itself).",
            "responses": {
                "200": _ok(
                    "The map.",
                    _object(
                        {
                            "epoch": {"type": "integer"},
                            "nodes": {"type": "array", "items": _ref("ClusterNode")},
                            "self": _NODE,
                            "placement": {
                                "type": "object",
                                "description": "how to compute an object's owner from `nodes`",
                            },
                        }
                    ),
                ),
                **_errors(_ANY, _AUTH),
            },
        }
    },
    "/v1/cluster/nodes": {
        "get": {
            "operationId": "cluster_nodes",
            "security": _ADMIN_SECURITY,
            "summary": "Every member with its liveness (as this node sees it) and its objects.",
            "responses": {
                "200": _ok(
                    "The members.",
                    _object(
                        {
                            "epoch": {"type": "integer"},
                            "self": _NODE,
                            "nodes": {"type": "array", "items": _ref("NodeStats")},
                        }
                    ),
                ),
                **_errors(_ANY, _ADMIN),
            },
        }
    },
    "/v1/cluster/membership": {
        "put": {
            "operationId": "apply_membership",
            "security": _ADMIN_SECURITY,
            "summary": "Adopt a membership signed by `actors cluster apply` (nodes with a cluster file).",
            "requestBody": {
                "required": True,
                "content": _json_or_cbor(
                    _object({"membership": {"type": "object"}, "mac": {"type": "string"}})
                ),
            },
            "responses": {
                "200": _ok(
                    "The epoch the node now runs, and whether this request changed it.",
                    _object({"epoch": {"type": "integer"}, "adopted": {"type": "boolean"}}),
                ),
                **_errors(_ANY, _ADMIN, _READS_BODY, (404, 409)),
            },
        }
    },
    "/v1/objects/{class}/{name}/export": {
        "get": {
            "operationId": "export_object",
            "security": _ADMIN_SECURITY,
            "summary": "A consistent SQLite snapshot of one object, taken between two of its turns.",
            "parameters": [_CLASS, _NAME],
            "responses": {
                "200": {
                    "description": "The object's SQLite file (`Content-Disposition: attachment`).",
                    "content": {
                        "application/vnd.sqlite3": {
                            "schema": {"type": "string", "contentMediaType": "application/vnd.sqlite3"}
                        }
                    },
                },
                "307": {
                    "description": "Another node owns the object: `Location` is the same route on it.",
                    "headers": {"Location": {"schema": {"type": "string"}, "required": True}},
                    "content": _json_or_cbor(_object({"owner": _NODE, "location": {"type": "string"}})),
                },
                **_errors(_ANY, _ADMIN, _NAMES_CLASS, _RUNS_TURN),
            },
        }
    },
    "/v1/objects/{class}/{name}": {
        "delete": {
            "operationId": "delete_object",
            "security": _ADMIN_SECURITY,
            "summary": "Delete the object's storage, on its owner.",
            "parameters": [_CLASS, _NAME],
            "responses": {
                "200": _ok(
                    "Deleted (or there was nothing to delete).", _object({"deleted": {"const": True}})
                ),
                **_errors(_ANY, _ADMIN, _NAMES_CLASS, _RUNS_TURN, _FORWARDS),
            },
        }
    },
    "/counter/{name}/increment": {
        "post": {
            "operationId": "counter_increment",
            "summary": "Add `by` (default 1) to the counter (the benchmark contract).",
            "parameters": [_COUNTER],
            "requestBody": {"required": False, "content": _json_or_cbor(_ref("CounterBody"))},
            "responses": {
                "200": _ok("The new value.", _ref("Value")),
                **_errors(_ANY, _AUTH, _NAMES_OBJECT, _RUNS_TURN, _FORWARDS, _READS_BODY),
            },
        }
    },
    "/counter/{name}": {
        "get": {
            "operationId": "counter_get",
            "summary": "The counter's value (0 if never written).",
            "parameters": [_COUNTER],
            "responses": {
                "200": _ok("The value.", _ref("Value")),
                **_errors(_ANY, _AUTH, _NAMES_OBJECT, _RUNS_TURN, _FORWARDS),
            },
        }
    },
    "/ratelimit/{key}": {
        "post": {
            "operationId": "ratelimit",
            "summary": "Take a token from the bucket (100 per 60 s by default).",
            "parameters": [_KEY],
            "responses": {
                "200": _ok(
                    "Allowed.", _object({"allowed": {"const": True}, "remaining": {"type": "integer"}})
                ),
                "429": {
                    "description": "Refused: the bucket is empty. `Retry-After` is `retry_after_ms` in whole "
                    "seconds, rounded up.",
                    "headers": _RETRY_AFTER,
                    "content": _json_or_cbor(
                        _object({"allowed": {"const": False}, "retry_after_ms": {"type": "integer"}})
                    ),
                },
                **_errors(_ANY, _AUTH, _NAMES_OBJECT, _RUNS_TURN, _FORWARDS),
            },
        }
    },
}

#: WebSocket routes (OpenAPI 3.1 cannot describe them): path -> what it serves
WEBSOCKETS: dict[str, str] = {
    "/v1/connect": "the Python SDK's protocol: concurrent calls on one connection, CBOR frames",
    "/v1/objects/{class}/{name}/ws": "any object: on_connect, on_message (text JSON, binary CBOR), on_close",
    "/chat/{name}": "the built-in ChatRoom (server/rooms/)",
    "/presence/{name}": "the built-in Presence room (server/rooms/)",
    "/counter/{name}/ws": "the built-in Counter's live value (server/rooms/)",
}

_DESCRIPTION = """\
A node of a Durable Objects-style actor server: single-writer stateful objects, each with its own
SQLite file. Any node of a cluster accepts any request and forwards it to the object's owner.

Bodies are JSON; CBOR is the alternative (`Content-Type: application/cbor` for the request, and the
reply is CBOR when the request is or `Accept` asks for it). Every error is
`{"error": {"type", "message", ...}}` (`Error`). A path taken with a method it does not list answers
405 with `Allow`. A node that holds `--max-connections` connections answers a new connection 503
`Overloaded` (JSON, `Retry-After`, `Connection: close`) whatever it asks, and closes it.

WebSockets (not describable in OpenAPI; also in `x-websockets`): """ + "; ".join(
    f"`{path}`: {what}" for path, what in WEBSOCKETS.items()
)

DOCUMENT: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "actors node",
        "version": "1",
        "description": _DESCRIPTION,
        "license": {"name": "Apache-2.0", "identifier": "Apache-2.0"},
    },
    "security": [{"bearer": []}, {}],
    "paths": _PATHS,
    "components": {
        "schemas": _SCHEMAS,
        "securitySchemes": {
            "admin": {
                "type": "http",
                "scheme": "bearer",
                "description": "`--admin-token`: required on the admin routes (listing, export, delete, "
                "cluster nodes) when the node has one; the call token then gets 403 there.",
            },
            "bearer": {
                "type": "http",
                "scheme": "bearer",
                "description": "`--auth-token`: required on every route that does not say otherwise "
                "when the node has one; ignored when it has none.",
            },
        },
        "headers": {
            "Retry-After": {"description": "Whole seconds, rounded up.", "schema": {"type": "integer"}}
        },
    },
    "x-websockets": [{"path": path, "description": what} for path, what in WEBSOCKETS.items()],
}

DOCUMENT_BYTES = json.dumps(DOCUMENT, separators=(",", ":"), ensure_ascii=False).encode()


async def serve_document(node: HandlerContext, request: Request) -> Reply:
    """``GET /openapi.json``: always JSON (the document's name says so), whatever ``Accept`` asks."""
    from .http import Reply  # here, not at the top: http imports this module for its route table

    return Reply(200, DOCUMENT_BYTES, codec.JSON)
