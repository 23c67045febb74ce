"""``actors objects``: list, export and delete the objects of a running node, over its HTTP admin API.

    actors objects list [--class C] [--prefix P] [--limit N] [--json]
    actors objects export CLASS NAME -o FILE
    actors objects delete CLASS NAME

Every verb talks to ``--url`` (variable ``ACTORS_URL``, default ``http://127.0.0.1:8080``) with the
bearer token ``--token`` (variable ``ACTORS_TOKEN``; prefer the variable, flags show in ``ps``): on a
node with an admin token, pass that one. An ``https`` node is verified against ``--ca`` (variable
``ACTORS_CA``: PEM CA certificates) instead of the system's trust store. Only the standard library
is used (``http.client``), so the verbs work wherever the node is installed.

Exit status
    0  done
    1  a local failure: FILE cannot be written, or stdout was closed early (``| head``)
    2  usage: unknown flags, missing arguments, a ``--url`` that is not ``http(s)://host[:port]``
    3  the node answered with an error; its JSON error's ``type`` and ``message`` go to stderr
    4  the node cannot be reached: refused, no such host, timed out, connection dropped

Guarantees
- ``list`` follows the node's cursor until the listing ends or ``--limit`` objects are printed, and
  prints each page as it arrives: one line per object, ``class``, ``name`` (``-`` for an object
  made with a unique id), ``id`` and ``node`` (its owner), tab-separated; a name that is not
  printable is written as a JSON string. ``--json`` writes one JSON object per line, as the node
  sends it. A cluster node lists the whole cluster; a node that could not answer is named on stderr.
- ``export`` asked of a node that does not own the object follows its 307 to the owner, once.
- ``export`` writes FILE only once the whole snapshot has arrived: it downloads into ``FILE.part``
  and renames that into place, so a failure never leaves a truncated database at FILE. ``-o -``
  writes the snapshot to stdout instead.
- Nothing is retried: each verb makes the requests it needs, each socket operation bounded by
  ``--timeout``. (``delete`` is idempotent, so running it again after exit 4 is safe.)
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import ssl
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any
from urllib.parse import SplitResult, quote, urlencode, urlsplit

__all__ = [
    "DEFAULT_URL", "Failure", "Node", "RemoteError", "add_objects_parser", "connection_options",
    "node_from_args", "run",
]  # fmt: skip

DEFAULT_URL = "http://127.0.0.1:8080"
#: seconds any one connect, send or receive may take
DEFAULT_TIMEOUT = 30.0
#: the node's largest listing page (``server.http.MAX_LIST_LIMIT``)
MAX_PAGE = 1000
SQLITE = "application/vnd.sqlite3"
_CHUNK = 1 << 16

EXIT_OK, EXIT_LOCAL, EXIT_USAGE, EXIT_REMOTE, EXIT_UNREACHABLE = 0, 1, 2, 3, 4


class Failure(Exception):
    exit_status = EXIT_LOCAL


class _Usage(Failure):
    exit_status = EXIT_USAGE


class RemoteError(Failure):
    """The node answered, with an error or with something that is not the reply it should send."""

    exit_status = EXIT_REMOTE


class _Unreachable(Failure):
    exit_status = EXIT_UNREACHABLE


#### Command line


def connection_options() -> argparse.ArgumentParser:
    """``--url``, ``--token``, ``--ca`` and ``--timeout``, as a parent parser (``objects``, ``cluster``)."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", help=f"the node (env ACTORS_URL; default {DEFAULT_URL})")
    common.add_argument(
        "--token",
        metavar="TOKEN",
        help="bearer token: the admin token on a node with --admin-token (env ACTORS_TOKEN; prefer it: "
        "flags show in ps)",
    )
    common.add_argument(
        "--ca",
        metavar="FILE",
        help="PEM CA certificates to verify an https node with, instead of the system's (env ACTORS_CA)",
    )
    common.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT,
        metavar="SECONDS",
        help=f"bound on each connect, send and receive (default {DEFAULT_TIMEOUT:g})",
    )
    return common


def node_from_args(args: argparse.Namespace, environ: Mapping[str, str]) -> Node:
    """The node ``--url`` (or ACTORS_URL) names, with the token and timeout (raises Failure)."""
    return Node.from_url(
        args.url or environ.get("ACTORS_URL") or DEFAULT_URL,
        token=args.token or environ.get("ACTORS_TOKEN") or None,
        timeout=args.timeout,
        ca=args.ca or environ.get("ACTORS_CA") or None,
    )


def add_objects_parser(commands: Any) -> None:
    """Add ``objects`` and its verbs to the ``actors`` sub-command parsers ``commands``."""
    common = connection_options()
    objects = commands.add_parser(
        "objects",
        help="list, export or delete objects on a running node",
        description="Administer the objects of a running node over HTTP. Exit status: 0 ok, "
        "1 local failure, 2 usage, 3 the node answered with an error, 4 the node cannot be reached.",
    )
    verbs = objects.add_subparsers(dest="verb", metavar="VERB", required=True)

    listing = verbs.add_parser(
        "list",
        parents=[common],
        help="list objects that have storage",
        description="List objects that have storage, following the cursor to the end. One line per "
        "object: class, name (- for a unique id) and id, tab-separated; --json: one JSON object a line.",
    )
    listing.add_argument("--class", dest="cls", metavar="CLASS", help="only objects of this class")
    listing.add_argument("--prefix", help="only objects whose name starts with this")
    listing.add_argument("--limit", type=_positive, metavar="N", help="print at most N objects")
    listing.add_argument(
        "--page-size",
        type=_page_size,
        default=MAX_PAGE,
        metavar="N",
        help=f"objects per request, 1..{MAX_PAGE} (default {MAX_PAGE})",
    )
    listing.add_argument("--json", action="store_true", help="one JSON object per line")

    export = verbs.add_parser(
        "export", parents=[common], help="download a consistent SQLite snapshot of one object"
    )
    export.add_argument("cls", metavar="CLASS")
    export.add_argument("name", metavar="NAME")
    export.add_argument(
        "-o", "--output", required=True, metavar="FILE", help="where to write it; - for stdout"
    )

    delete = verbs.add_parser("delete", parents=[common], help="delete all of one object's storage")
    delete.add_argument("cls", metavar="CLASS")
    delete.add_argument("name", metavar="NAME")


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _page_size(text: str) -> int:
    value = _positive(text)
    if value > MAX_PAGE:
        raise argparse.ArgumentTypeError(f"must be at most {MAX_PAGE}, not {value}")
    return value


def run(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    """Run the parsed ``objects`` verb; returns the exit status (see the module docstring)."""
    try:
        node = node_from_args(args, environ)
        if args.verb == "list":
            list_objects(
                node,
                sys.stdout,
                cls=args.cls,
                prefix=args.prefix,
                limit=args.limit,
                page_size=args.page_size,
                as_json=args.json,
            )
        elif args.verb == "export":
            export_object(node, args.cls, args.name, args.output)
        else:
            delete_object(node, args.cls, args.name)
        sys.stdout.flush()
    except Failure as failure:
        print(f"actors objects {args.verb}: {failure}", file=sys.stderr)
        return failure.exit_status
    except BrokenPipeError:  # the reader went away (``| head``); do not fail again at exit
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_LOCAL
    return EXIT_OK


#### Verbs


def list_objects(
    node: Node,
    out: IO[str],
    *,
    cls: str | None = None,
    prefix: str | None = None,
    limit: int | None = None,
    page_size: int = MAX_PAGE,
    as_json: bool = False,
) -> int:
    """Print the objects, following the cursor; returns how many were printed."""
    printed = 0
    cursor: str | None = None
    while limit is None or printed < limit:
        want = page_size if limit is None else min(page_size, limit - printed)
        query: dict[str, str | int] = {"limit": want}
        if cls:
            query["class"] = cls
        if prefix:
            query["prefix"] = prefix
        if cursor:
            query["cursor"] = cursor
        page = node.json("GET", "/v1/objects?" + urlencode(query))
        objects, next_cursor = _page(page)
        for missing in page.get("unavailable") or []:  # a cluster node that could not answer
            print(
                f"actors objects: node {missing.get('node')} did not answer: {missing.get('error')}",
                file=sys.stderr,
            )
        for entry in objects:
            out.write(json.dumps(entry) + "\n" if as_json else _line(entry))
        out.flush()
        printed += len(objects)
        if next_cursor is None:
            break
        if next_cursor == cursor:
            raise RemoteError("the node returned the same cursor twice; stopping")
        cursor = next_cursor
    return printed


def _page(page: Any) -> tuple[list[dict[str, Any]], str | None]:
    objects = page.get("objects") if isinstance(page, dict) else None
    cursor = page.get("cursor") if isinstance(page, dict) else None
    if not isinstance(objects, list) or not all(isinstance(o, dict) for o in objects):
        raise RemoteError('the listing has no "objects" list')
    if cursor is not None and not isinstance(cursor, str):
        raise RemoteError('the listing\'s "cursor" is not a string')
    return objects, cursor


def _line(entry: dict[str, Any]) -> str:
    name = entry.get("name")
    cells = [_cell(entry.get("class")), "-" if name is None else _cell(name), _cell(entry.get("id"))]
    if "node" in entry:  # the node that owns it (every node of a cluster lists the whole cluster)
        cells.append(_cell(entry["node"]))
    return "\t".join(cells) + "\n"


def _cell(value: Any) -> str:
    text = str(value)
    return text if text.isprintable() and text else json.dumps(text)


def export_object(node: Node, cls: str, name: str, output: str) -> int:
    """Download the object's snapshot to ``output`` (``-``: stdout); returns its size in bytes."""
    path = _object_path(cls, name) + "/export"
    with node.open("GET", path) as response:
        content_type = (response.getheader("content-type") or "").split(";")[0].strip()
        if content_type != SQLITE:
            raise RemoteError(f"expected {SQLITE}, got {content_type or 'no content type'}")
        if output == "-":
            size = _copy(response, sys.stdout.buffer)
            sys.stdout.buffer.flush()
            return size
        target = Path(output)
        part = target.with_name(target.name + ".part")
        try:
            with _local(f"cannot write {part}"), part.open("wb") as file:
                size = _copy(response, file)
            with _local(f"cannot move {part} to {target}"):
                part.replace(target)
        finally:
            part.unlink(missing_ok=True)
    print(f"exported {cls}/{name} to {target} ({size} bytes)")
    return size


def _copy(response: http.client.HTTPResponse, file: IO[bytes]) -> int:
    declared = response.getheader("content-length")
    size = 0
    while True:
        with _network("the node dropped the connection during the download"):
            chunk = response.read(_CHUNK)
        if not chunk:
            break
        with _local("cannot write the snapshot"):
            file.write(chunk)
        size += len(chunk)
    if declared is not None and declared.isdigit() and int(declared) != size:
        raise _Unreachable(f"the download stopped after {size} of {declared} bytes")
    return size


def delete_object(node: Node, cls: str, name: str) -> None:
    """Delete all of the object's storage (nothing to delete is not an error)."""
    reply = node.json("DELETE", _object_path(cls, name))
    if reply != {"deleted": True}:
        raise RemoteError(f"unexpected reply {reply!r}")
    print(f"deleted {cls}/{name}")


def _object_path(cls: str, name: str) -> str:
    return f"/v1/objects/{quote(cls, safe='')}/{quote(name, safe='')}"


#### HTTP


@dataclass(frozen=True, slots=True)
class Node:
    url: SplitResult  # scheme and host of the node, and the path it is served under
    token: str | None
    timeout: float
    ca: str | None = None  # PEM CA certificates to verify an https node with (None: the system's)

    @classmethod
    def from_url(cls, url: str, *, token: str | None, timeout: float, ca: str | None = None) -> Node:
        parts = urlsplit(url)
        try:
            parts.port  # noqa: B018  # a bad port raises here, not at the first request
        except ValueError as exc:
            raise _Usage(f"bad --url {url!r}: {exc}") from None
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
            raise _Usage(f"--url must look like http://host[:port][/path], not {url!r}")
        if not timeout > 0:
            raise _Usage("--timeout must be positive")
        if ca is not None and not os.path.isfile(ca):
            raise _Usage(f"--ca/ACTORS_CA: no such file: {ca}")
        return cls(parts, token, timeout, ca)

    @contextmanager
    def open(self, method: str, path: str, body: bytes | None = None) -> Iterator[http.client.HTTPResponse]:
        """The response to one request, if it is a 2xx; RemoteError or _Unreachable otherwise.

        A 307 from a node of a cluster (an export asked of a node that does not own the object) is
        followed once, to the owner it names, with the same token.
        """
        with self._open(method, path, body) as response:
            location = response.getheader("location") if response.status == 307 else None
            if location is None:
                yield response
                return
        owner = urlsplit(location)
        if owner.scheme not in ("http", "https") or not owner.hostname:
            raise RemoteError(f"the node redirected to {location!r}, which is not a node URL")
        target = Node(owner._replace(path="", query=""), self.token, self.timeout, self.ca)
        with target._open(method, owner.path + (f"?{owner.query}" if owner.query else ""), body) as response:
            if response.status == 307:
                raise RemoteError(f"the owner at {location} redirected again; stopping")
            yield response

    @contextmanager
    def _open(self, method: str, path: str, body: bytes | None = None) -> Iterator[http.client.HTTPResponse]:
        """One request; its response if it is a 2xx or a 307, else RemoteError or _Unreachable."""
        host, port = self.url.hostname, self.url.port
        assert host is not None
        connection: http.client.HTTPConnection
        if self.url.scheme == "https":
            try:
                context = ssl.create_default_context(cafile=self.ca)
            except (OSError, ssl.SSLError) as exc:
                raise _Usage(f"--ca/ACTORS_CA: cannot load {self.ca}: {exc}") from None
            connection = http.client.HTTPSConnection(host, port, timeout=self.timeout, context=context)
        else:
            connection = http.client.HTTPConnection(host, port, timeout=self.timeout)
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = "application/json"
        if self.token is not None:
            headers["Authorization"] = f"Bearer {self.token}"
        where = f"{self.url.scheme}://{self.url.netloc}"
        try:
            with _network(f"cannot reach {where}"):
                connection.request(method, self.url.path.rstrip("/") + path, body=body, headers=headers)
                response = connection.getresponse()
            if not 200 <= response.status < 300 and response.status != 307:
                with _network(f"{where} dropped the connection"):
                    body = response.read()
                raise RemoteError(_describe_error(response, body))
            yield response
        finally:
            connection.close()

    def json(self, method: str, path: str, body: Any = None) -> Any:
        """The JSON reply to ``method path`` (with ``body`` as JSON, if given)."""
        data = None if body is None else json.dumps(body).encode()
        with self.open(method, path, data) as response, _network("the node dropped the connection"):
            body = response.read()
        try:
            return json.loads(body)
        except ValueError:
            raise RemoteError(f"the reply to {method} {path} is not JSON") from None


def _describe_error(response: http.client.HTTPResponse, body: bytes) -> str:
    """``Type: message`` from the node's JSON error body, or the bare HTTP status."""
    try:
        error = json.loads(body)["error"]
        return f"{error['type']}: {error['message']} (HTTP {response.status})"
    except (ValueError, KeyError, TypeError):
        return f"HTTP {response.status} {response.reason}"


@contextmanager
def _network(what: str) -> Iterator[None]:
    try:
        yield
    except (OSError, http.client.HTTPException) as exc:
        raise _Unreachable(f"{what}: {exc or type(exc).__name__}") from None


@contextmanager
def _local(what: str) -> Iterator[None]:
    try:
        yield
    except OSError as exc:
        raise Failure(f"{what}: {exc}") from None
