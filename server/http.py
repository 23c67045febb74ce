"""HTTP routes: a table from (method, path pattern) to a handler, and the handlers.

Routes (``{x}`` is one path segment, percent-decoded as UTF-8, so ``a%2Fb`` is the name ``a/b``)::

    GET  /                                      the demo page (text/html)             (no auth)
    GET  /healthz                               200 {"status": "ok"}                 (no auth)
    GET  /openapi.json                          this table as OpenAPI 3.1 (openapi.py)  (no auth)
    GET  /readyz                                200 {"status": "ready"} | 503 {"status": "draining"}
    GET  /metrics                               Prometheus text
    POST /v1/objects/{Class}/{name}/{method}    {"args": [], "kwargs": {}} -> 200 {"result": ...}
    GET  /v1/objects?class=&prefix=&limit=&cursor=   {"objects": [...], "cursor": next | null,
                                                 "unavailable": [{"node", "error"}]}  (whole cluster; admin)
    GET  /v1/cluster                            {"epoch", "nodes": [{"node", "url", "up"}], "self", ...}
    GET  /v1/cluster/nodes                      {"epoch", "self", "nodes": [{"node", "url", "up",
                                                 "objects", "live_objects"} | {..., "error"}]}  (admin)
    PUT  /v1/cluster/membership                 {"membership": {...}, "mac": hex} (actors cluster apply)
                                                -> 200 {"epoch", "adopted"} | 403 | 409  (admin)
    GET  /v1/objects/{Class}/{name}/export      the object's SQLite file (application/vnd.sqlite3);
                                                307 to the owner's URL when another node owns it  (admin)
    DELETE /v1/objects/{Class}/{name}           200 {"deleted": true}  (admin)
    POST /counter/{name}/increment              optional {"by": n} -> 200 {"value": n}
    GET  /counter/{name}                        200 {"value": n}
    POST /ratelimit/{key}                       200 {"allowed": true, "remaining": n}
                                                | 429 {"allowed": false, "retry_after_ms": m}

Tokens: with ``--auth-token`` every route but those marked "no auth" needs it. With
``--admin-token`` the routes marked "admin" (they read or destroy any object's data, or map the
cluster's nodes and contents) need the admin token: the call token gets 403 Forbidden there, no or a
wrong token 401. The admin token opens every other route too. ``/metrics`` stays a call-token route,
so a Prometheus scraper need not hold the power to delete objects. ``asgi.py`` enforces both.

Guarantees
- A path that matches no pattern is 404 NotFound; a path that matches for another method is 405
  MethodNotAllowed naming the methods it takes. Routing never depends on the runtime.
- Handlers are sans-IO: they take a parsed :class:`Request` and return a :class:`Reply`; reading,
  limits, auth and writing are the ASGI layer's (``asgi.py``). Errors propagate to ``errors.py``.
- A 2xx reply from a call route means the call's turn committed (the runtime's output gate).
- An export is a consistent snapshot: it is taken between two turns of the object, after every
  earlier turn is durable, and is exactly what a restarted node would open. Its temporary file is
  removed whatever happens (cancellation included). The demo page (``/``) needs no token: it is
  static, and the browser passes the token it is given to the routes it calls.
"""

from __future__ import annotations

import math
import re
import shutil
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import parse_qs, quote

import trio

from actors.errors import InvalidArgument
from actors.placement import PLACEMENT_FUNCTION

from . import codec, demo, openapi
from .cluster import operations
from .errors import MethodNotAllowed, NotFound
from .metrics import CONTENT_TYPE_LATEST

if TYPE_CHECKING:
    from collections.abc import Sequence

    from actors import ObjectId, Runtime
    from actors.placement import ClusterMap

    from .cluster import Cluster
    from .cluster.file_member import FileMember
    from .cluster.handoff import Mover
    from .cluster.receiver import Receiver
    from .config import Config
    from .metrics import Metrics

__all__ = ["ROUTES", "Reply", "Request", "Route", "match"]

#: how clients compute an object's owner from ``nodes`` (``actors/placement.py``)
PLACEMENT = {"function": PLACEMENT_FUNCTION, "key": "object id (64 hex digits)", "nodes": "node ids"}

#: most objects one listing page returns
MAX_LIST_LIMIT = 1000
DEFAULT_LIST_LIMIT = 100


class HandlerContext(Protocol):
    """What handlers need from the node (``asgi.Node`` provides it)."""

    runtime: Runtime
    config: Config
    metrics: Metrics
    router: Cluster | None
    mover: Mover | None
    receiver: Receiver | None
    file_member: FileMember | None
    node_name: str
    url: str

    @property
    def cluster(self) -> ClusterMap: ...

    @property
    def ready(self) -> bool: ...

    async def call(
        self, object_id: ObjectId, method: str, args: Sequence[Any] = (), kwargs: dict[str, Any] | None = None
    ) -> Any: ...


# Request and Reply are made once per request: plain slotted dataclasses, because a frozen one's
# __init__ (object.__setattr__ per field) costs about four times as much. Treat them as read-only.
@dataclass(slots=True)
class Request:
    method: str
    params: tuple[str, ...]  # the decoded ``{x}`` segments of the route, in order
    query: bytes  # raw query string
    body: bytes  # the whole body (empty for routes that do not read it)
    cbor: bool  # the request body is CBOR (Content-Type: application/cbor)
    reply_cbor: bool  # the reply must be CBOR (the request is CBOR, or Accept asks for it)


@dataclass(slots=True)
class Reply:
    status: int
    body: bytes
    content_type: bytes = codec.JSON
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)


Handler = Callable[[HandlerContext, Request], Awaitable[Reply]]


@dataclass(frozen=True, slots=True)
class Route:
    method: str
    pattern: tuple[str, ...]  # literal segments, and "{name}" for a parameter
    handler: Handler
    reads_body: bool = False
    needs_auth: bool = True
    admin: bool = False  # needs the admin token when the node has one (see the module docstring)

    @property
    def name(self) -> str:
        """The pattern as a path: a bounded metrics label."""
        return "/" + "/".join(self.pattern)


def match(method: str, segments: tuple[str, ...]) -> tuple[Route, tuple[str, ...]]:
    """The route for ``method`` and the path ``segments``, with its parameters.

    Raises NotFound if no pattern matches, MethodNotAllowed if one matches for other methods only.
    """
    allowed: list[str] = []
    for route in _BY_LENGTH.get(len(segments), ()):
        params = _match_pattern(route.pattern, segments)
        if params is None:
            continue
        if route.method == method:
            return route, params
        allowed.append(route.method)
    if allowed:
        raise MethodNotAllowed(
            f"{method} is not allowed here; use {', '.join(allowed)}", allow=tuple(allowed)
        )
    raise NotFound("no such route: " + "/" + "/".join(segments))


def _match_pattern(pattern: tuple[str, ...], segments: tuple[str, ...]) -> tuple[str, ...] | None:
    params = []
    for want, got in zip(pattern, segments, strict=True):
        if want.startswith("{"):
            params.append(got)
        elif want != got:
            return None
    return tuple(params)


def _json(node: HandlerContext, request: Request, value: Any, status: int = 200) -> Reply:
    cbor = request.reply_cbor
    return Reply(status, codec.encode(value, cbor=cbor), codec.CBOR if cbor else codec.JSON)


#### Operations


async def demo_page(node: HandlerContext, request: Request) -> Reply:
    page = demo.PAGE
    return Reply(200, page.body, page.content_type, list(page.headers))


async def healthz(node: HandlerContext, request: Request) -> Reply:
    return _json(node, request, {"status": "ok"})


async def readyz(node: HandlerContext, request: Request) -> Reply:
    if node.ready:
        return _json(node, request, {"status": "ready"})
    return _json(node, request, {"status": "draining"}, 503)


async def metrics(node: HandlerContext, request: Request) -> Reply:
    text = node.metrics.render(node.runtime.statistics())
    return Reply(200, text, CONTENT_TYPE_LATEST.encode())


#### Generic API


async def call_object(node: HandlerContext, request: Request) -> Reply:
    cls, name, method = request.params
    args, kwargs = codec.decode_call(request.body, cbor=request.cbor)
    result = await node.call(node.runtime.app.id_from_name(cls, name), method, args, kwargs)
    return _json(node, request, {"result": result})


async def list_objects(node: HandlerContext, request: Request) -> Reply:
    query = _parse_query(request.query)
    limit = _parse_limit(query.get("limit"))
    cursor = query.get("cursor")
    after = codec.decode_cursor(cursor) if cursor else None
    objects, more, unavailable = await operations.list_cluster(
        node, query.get("class") or None, query.get("prefix") or None, limit, after
    )
    next_cursor = None
    if more:
        last = objects[-1]
        next_cursor = codec.encode_cursor((last["class"], last["name"] or "", last["id"]))
    return _json(node, request, {"objects": objects, "cursor": next_cursor, "unavailable": unavailable})


def _parse_query(query: bytes) -> dict[str, str]:
    try:
        parsed = parse_qs(query.decode("ascii"), keep_blank_values=True, errors="strict")
    except UnicodeDecodeError:
        raise InvalidArgument("the query string is not valid percent-encoded UTF-8") from None
    return {key: values[-1] for key, values in parsed.items()}


def _parse_limit(raw: str | None) -> int:
    if raw is None or raw == "":
        return DEFAULT_LIST_LIMIT
    try:
        limit = int(raw)
    except ValueError:
        limit = 0
    if not 1 <= limit <= MAX_LIST_LIMIT:
        raise InvalidArgument(f"limit must be an integer in 1..{MAX_LIST_LIMIT}, not {raw!r}")
    return limit


async def cluster_nodes(node: HandlerContext, request: Request) -> Reply:
    """Every member with its liveness (as this node sees it) and its objects (``actors cluster nodes``)."""
    nodes = await operations.cluster_nodes(node)
    return _json(node, request, {"epoch": node.cluster.epoch, "self": node.node_name, "nodes": nodes})


async def apply_membership(node: HandlerContext, request: Request) -> Reply:
    """Adopt a membership signed by ``actors cluster apply`` (file membership only)."""
    member = node.file_member
    if member is None:
        raise NotFound(
            "this node's membership does not come from a cluster file (etcd: use actors cluster leave)"
            if node.router is not None
            else "this node is not in a cluster (no --cluster)"
        )
    body = codec.decode_body(request.body, cbor=request.cbor)
    return _json(node, request, await member.apply(body))


async def cluster_map(node: HandlerContext, request: Request) -> Reply:
    """The cluster as the SDK sees it (the same map as the wire protocol's Welcome frame)."""
    cluster, router = node.cluster, node.router
    if router is None:
        nodes = [{"node": name, "url": url, "up": True} for name, url in cluster.nodes]
    else:
        nodes = router.nodes()
    body = {"epoch": cluster.epoch, "nodes": nodes, "self": node.node_name, "placement": PLACEMENT}
    return _json(node, request, body)


#### Administration

SQLITE = b"application/vnd.sqlite3"


async def export_object(node: HandlerContext, request: Request) -> Reply:
    cls, name = request.params
    runtime = node.runtime
    object_id = runtime.app.id_from_name(cls, name)  # UnknownClass (404) before any file is made
    owner = None if node.router is None else node.router.link_for(object_id)
    if owner is not None:  # the file is on the owner: send the client there (curl -L follows)
        path = "/".join(quote(part, safe="") for part in ("v1", "objects", cls, name, "export"))
        location = f"{owner.peer.url}/{path}"
        reply = _json(node, request, {"owner": owner.peer.id, "location": location}, 307)
        reply.headers.append((b"location", location.encode()))
        return reply
    # A fresh folder rather than a fresh file: SQLite may add a journal beside the copy, and the
    # whole folder goes in the end. TODO(perf): stream the file instead of holding it in memory.
    folder = Path(await trio.to_thread.run_sync(partial(tempfile.mkdtemp, prefix="actors-export-")))
    try:
        snapshot = folder / "snapshot.sqlite3"
        await runtime.export(object_id, snapshot)  # ObjectNotFound (404) if it has no storage
        data = await trio.Path(snapshot).read_bytes()
    finally:
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(partial(shutil.rmtree, folder, ignore_errors=True))
    disposition = f'attachment; filename="{_export_filename(cls, name)}"'.encode()
    return Reply(200, data, SQLITE, [(b"content-disposition", disposition)])


def _export_filename(cls: str, name: str) -> str:
    """``Class-name.sqlite3`` in characters safe in any header and file system (others become ``_``)."""
    stem = re.sub(r"[^A-Za-z0-9._-]", "_", f"{cls}-{name}")[:120].lstrip(".")
    return f"{stem}.sqlite3"


async def delete_object(node: HandlerContext, request: Request) -> Reply:
    cls, name = request.params
    await operations.delete_object(node, cls, name)
    return _json(node, request, {"deleted": True})


#### Benchmark contract (shared/bench/README.md, "The contract")


async def counter_increment(node: HandlerContext, request: Request) -> Reply:
    (name,) = request.params
    body = codec.decode_body(request.body, cbor=request.cbor)
    if body is None:
        body = {}
    if type(body) is not dict or not set(body) <= {"by"}:
        raise InvalidArgument('the body must be empty or {"by": <int>}')
    by = body.get("by", 1)
    if type(by) is not int:
        raise InvalidArgument(f'"by" must be an integer, not {by!r}')
    value = await node.call(node.runtime.app.id_from_name("Counter", name), "increment", (), {"by": by})
    return _json(node, request, {"value": value})


async def counter_get(node: HandlerContext, request: Request) -> Reply:
    (name,) = request.params
    value = await node.call(node.runtime.app.id_from_name("Counter", name), "get")
    return _json(node, request, {"value": value})


async def ratelimit(node: HandlerContext, request: Request) -> Reply:
    (key,) = request.params
    outcome = await node.call(node.runtime.app.id_from_name("RateLimiter", key), "take")
    if outcome["allowed"]:
        return _json(node, request, outcome)
    reply = _json(node, request, outcome, 429)
    seconds = max(1, math.ceil(outcome["retry_after_ms"] / 1000))
    reply.headers.append((b"retry-after", str(seconds).encode()))
    return reply


ROUTES: tuple[Route, ...] = (
    Route("GET", ("",), demo_page, needs_auth=False),
    Route("GET", ("healthz",), healthz, needs_auth=False),
    Route("GET", ("openapi.json",), openapi.serve_document, needs_auth=False),
    Route("GET", ("readyz",), readyz, needs_auth=False),
    Route("GET", ("metrics",), metrics),
    Route("POST", ("v1", "objects", "{class}", "{name}", "{method}"), call_object, reads_body=True),
    Route("GET", ("v1", "objects"), list_objects, admin=True),
    Route("GET", ("v1", "cluster"), cluster_map),
    Route("GET", ("v1", "cluster", "nodes"), cluster_nodes, admin=True),
    Route("PUT", ("v1", "cluster", "membership"), apply_membership, reads_body=True, admin=True),
    Route("GET", ("v1", "objects", "{class}", "{name}", "export"), export_object, admin=True),
    Route("DELETE", ("v1", "objects", "{class}", "{name}"), delete_object, admin=True),
    Route("POST", ("counter", "{name}", "increment"), counter_increment, reads_body=True),
    Route("GET", ("counter", "{name}"), counter_get),
    Route("POST", ("ratelimit", "{key}"), ratelimit),
)

#: routes by number of segments: a lookup narrows the scan to the few of the right length
_BY_LENGTH: dict[int, tuple[Route, ...]] = {}
for _route in ROUTES:
    _BY_LENGTH[len(_route.pattern)] = (*_BY_LENGTH.get(len(_route.pattern), ()), _route)

#: paths served without a token even when the node has one (probes must not need secrets)
UNAUTHENTICATED: frozenset[tuple[str, ...]] = frozenset(
    route.pattern for route in ROUTES if not route.needs_auth
)
