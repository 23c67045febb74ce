"""etcd v3 for trio: the few calls cluster membership needs, over etcd's v3 JSON gateway.

Guarantees
- **Reads are linearizable.** ``get`` and ``get_prefix`` use etcd's default range, which is
  linearizable: it returns every write acknowledged to anyone before the read began, never the view
  of a member that lags behind. ``get_prefix`` is one snapshot, all keys at the one revision it
  returns; ``open_watch(prefix, start_revision=that + 1)`` then misses no later change.
- **A write that returns is committed** (a quorum of etcd members has it on disk) at the revision
  it returns. Revisions grow with every write to the whole etcd, not only under this prefix.
- **``put_if`` is a compare-and-swap** (one etcd transaction): it writes only if the key's
  ``mod_revision`` is still ``expected_mod_revision`` (None or 0: only if the key is absent). Of
  concurrent ``put_if`` calls that expect the same revision, at most one succeeds. ``txn`` is the
  same over several keys, putting and deleting several keys in one revision.
- **Leases.** A key put with a lease is deleted when the lease is revoked, or when it expires: about
  its TTL after the last keep-alive reached etcd's leader, never sooner (see below).
- **Watches.** ``open_watch`` yields every change under a prefix from ``start_revision`` on, in
  revision order, each once; the events of one revision (one transaction) are delivered together.
  The iteration never ends by itself: it raises ``EtcdUnavailable`` when the stream is lost (etcd
  stopped, crashed, restarted) and ``WatchCompacted`` when ``start_revision`` is older than etcd's
  compacted history. To resume after ``EtcdUnavailable``, open a new watch from the ``mod_revision``
  of the last event handled + 1: nothing is missed or repeated. After ``WatchCompacted``, re-read
  with ``get_prefix`` (the state at some revision R) and watch from R + 1. A wait for the next
  event that is cancelled ends the watch too (open a new one from the same revision).
- **Two failures, never an httpx exception.** ``EtcdUnavailable``: no answer (connection refused
  or lost, nothing within ``timeout``, HTTP 5xx or 429: etcd has no leader, is overloaded, …); the
  outcome of a write that raised it is unknown (``put_if`` makes a retry safe: read, compare, retry).
  ``EtcdError``: etcd refused the request (its gRPC code and message, e.g. a lease not found);
  nothing changed. ``WatchCompacted`` is an ``EtcdError``.
- **Bounded.** Every call returns or raises within ``timeout`` seconds (a trio deadline around the
  whole exchange), and so does entering ``open_watch``. Waiting for the next watch event is not
  bounded: a watch may rightly be silent for hours.

Mechanism
- etcd ≥ 3.4 serves its gRPC API as JSON at ``/v3/…`` (3.4 also keeps the older ``/v3beta/``; 3.5
  dropped it; 3.3 served only ``/v3beta/`` and is not supported). Keys and values are base64,
  64-bit integers are JSON strings and fields with their zero value are left out (an empty value
  has no ``value``, a put event no ``type``, a failed ``txn`` no ``succeeded``).
- httpx runs the HTTP under trio (through its trio backend), one pooled client per ``open_etcd``;
  each open watch holds one connection of its own. Proxies from the environment are ignored.
- ``keep_alive`` and ``watch`` are streaming calls in gRPC. HTTP/1.1 through the gateway cannot send
  more requests on a stream once its reply has begun, so ``keep_alive_once`` is one request, one
  ``{"result": …}`` line (a lease that is gone answers without a ``TTL``: 0); a watch sends its
  create request once and reads one JSON line per message. It carries
  ``Grpc-Metadata-hasleader: true``, which the gateway passes on as gRPC metadata, so etcd ends the
  watch when its member loses the leader instead of leaving it silent while the others go on
  (untested: a single member never loses its leader).
- A connection's peer can vanish without closing it (power loss, partition): TCP keep-alive on
  every connection (idle 5 s, then 3 probes 2 s apart, on Linux) turns that into an error within
  about 11 s, so a watch raises instead of waiting forever.
- Lease timing is etcd's own: the leader's monotonic clock, so no clock needs to be in sync. etcd
  grants at least its minimum TTL (1.5 election timeouts rounded up: 2 s with the default 1 s), and
  revokes expired leases in a loop every 500 ms, so a key goes up to about 0.5 s after its TTL.
  etcd 3.4 without ``--experimental-enable-lease-checkpoint`` gives every lease its full TTL again
  when a leader is elected (a restart, a failover): a lease can outlive its TTL, never fall short.
  A client that fences itself must count its TTL from when it *sent* its last successful keep-alive.

XX: paging. ``get_prefix`` reads the whole prefix in one reply: right for a membership, not for
    listing millions of keys.
XX: TLS client certificates and etcd's user authentication are not supported (https with the
    system's CAs goes through httpx, untested).
XX: a paused etcd member (SIGSTOP) keeps its connections open: calls time out, but a watch on it just
    waits (nothing is lost: it catches up once resumed). A membership must not assume a watch is
    timely: peers' epochs (issue 11) tell it to re-read.
"""

from __future__ import annotations

import base64
import binascii
import json
import socket
from collections import deque
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from enum import Enum
from typing import Any, final

import httpx
import trio

__all__ = [
    "Etcd",
    "EtcdError",
    "EtcdUnavailable",
    "EventType",
    "KeyValue",
    "Watch",
    "WatchCompacted",
    "WatchEvent",
    "open_etcd",
]

#: the gateway's path (etcd 3.4 and later)
API = "/v3"
#: ``(level, option, value)`` for every connection: find a peer that vanished without closing (Linux
#: names; other systems get SO_KEEPALIVE with their default timers)
_KEEPALIVE = [
    (socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1),
    *(
        (socket.IPPROTO_TCP, getattr(socket, name), value)
        for name, value in (("TCP_KEEPIDLE", 5), ("TCP_KEEPINTVL", 2), ("TCP_KEEPCNT", 3))
        if hasattr(socket, name)
    ),
]
#: gRPC's NOT_FOUND, as etcd reports a lease that is gone
_NOT_FOUND = 5


#### Errors and values


class EtcdUnavailable(Exception):
    """etcd did not answer in time, or answered that it cannot serve now; a write may have happened."""


class EtcdError(Exception):
    """etcd refused the request; nothing changed. ``code`` is its gRPC status code when it gave one."""

    def __init__(self, message: str, *, code: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


class WatchCompacted(EtcdError):
    """A watch's start revision is older than etcd's history: re-read, then watch from there."""

    def __init__(self, compact_revision: int) -> None:
        super().__init__(
            f"etcd has compacted its history up to revision {compact_revision}, past the watch's start",
            code=11,  # gRPC's OUT_OF_RANGE, as etcd's range reports the same case
        )
        self.compact_revision = compact_revision


@dataclass(frozen=True)
class KeyValue:
    """One key as etcd stores it."""

    key: str  # relative to the client's prefix
    value: bytes
    create_revision: int  # the put that created the key (since it last did not exist)
    mod_revision: int  # its last put: what ``put_if`` compares
    version: int  # puts since it was created, 1 for the first
    lease: int  # 0 when none


class EventType(Enum):
    PUT = "put"  # created or changed
    DELETE = "delete"  # deleted, by a call or with its lease


@dataclass(frozen=True)
class WatchEvent:
    """One change seen by a watch."""

    type: EventType
    key: str  # relative to the client's prefix
    value: bytes  # b"" for a delete
    mod_revision: int  # the revision of this change, for a delete too


#### The client


@asynccontextmanager
async def open_etcd(url: str, *, prefix: str = "/actors/", timeout: float = 5.0) -> AsyncIterator[Etcd]:
    """A client of the etcd at ``url`` (``http://host:2379``) for keys under ``prefix``.

    Opening does no I/O: an etcd that is down is noticed by the first call (``EtcdUnavailable``).
    Leaving closes every connection, open watches' too.
    """
    if timeout <= 0:
        raise ValueError(f"timeout must be positive, not {timeout}")
    transport = httpx.AsyncHTTPTransport(socket_options=_KEEPALIVE)
    async with httpx.AsyncClient(base_url=url, transport=transport, timeout=timeout, trust_env=False) as http:
        yield Etcd(http, url, prefix, timeout)


@final
class Etcd:
    """Calls on keys under one prefix; made by ``open_etcd``. Keys passed and returned are relative."""

    def __init__(self, http: httpx.AsyncClient, url: str, prefix: str, timeout: float) -> None:
        self._http = http
        self.url = url
        self.prefix = prefix
        self._prefix = prefix.encode()
        self.timeout = timeout

    async def get(self, key: str) -> KeyValue | None:
        """The key, or None if it does not exist (linearizable)."""
        reply = await self._call("kv/range", {"key": self._key(key)})
        kvs = reply.get("kvs", [])
        return self._key_value(kvs[0]) if kvs else None

    async def get_prefix(self, prefix: str = "") -> tuple[list[KeyValue], int]:
        """Every key under ``prefix`` in key order, and the revision of this snapshot (linearizable)."""
        start = self._prefix + prefix.encode()
        reply = await self._call("kv/range", {"key": _b64(start), "range_end": _b64(_range_end(start))})
        return [self._key_value(kv) for kv in reply.get("kvs", [])], _revision(reply)

    async def put(self, key: str, value: bytes, *, lease: int | None = None) -> int:
        """Sets the key; returns the revision of the write. A lease that is gone: ``EtcdError``."""
        return _revision(await self._call("kv/put", self._put_request(key, value, lease)))

    async def delete(self, key: str) -> int:
        """Deletes the key if it exists; returns etcd's revision after the call."""
        return _revision(await self._call("kv/deleterange", {"key": self._key(key)}))

    async def put_if(
        self, key: str, value: bytes, *, expected_mod_revision: int | None, lease: int | None = None
    ) -> tuple[bool, int]:
        """Sets the key only if its ``mod_revision`` is ``expected_mod_revision`` (None or 0: only if
        it is absent). Returns whether it did, and the revision: the key's new ``mod_revision`` on
        success, etcd's current revision otherwise (read the key again to see what won)."""
        compare = {
            "key": self._key(key),
            "target": "MOD",
            "result": "EQUAL",
            "mod_revision": str(expected_mod_revision or 0),  # an absent key compares as 0
        }
        request = {"compare": [compare], "success": [{"request_put": self._put_request(key, value, lease)}]}
        reply = await self._call("kv/txn", request)
        return bool(reply.get("succeeded", False)), _revision(reply)

    async def txn(
        self,
        compare: Mapping[str, int],
        *,
        put: Mapping[str, bytes] | None = None,
        delete: Sequence[str] = (),
    ) -> tuple[bool, int]:
        """Writes every ``put`` and deletes every ``delete`` (absent keys are no error), all in one
        revision, only if every key of ``compare`` still has that ``mod_revision`` (0: only if it is
        absent). Returns whether it did, and the revision (the writes' on success, etcd's current
        one otherwise). A key may not be both put and deleted (``EtcdError``)."""
        compares = [
            {"key": self._key(key), "target": "MOD", "result": "EQUAL", "mod_revision": str(revision)}
            for key, revision in compare.items()
        ]
        writes: list[dict[str, Any]] = [
            {"request_put": self._put_request(key, value, None)} for key, value in (put or {}).items()
        ]
        writes += [{"request_delete_range": {"key": self._key(key)}} for key in delete]
        reply = await self._call("kv/txn", {"compare": compares, "success": writes})
        return bool(reply.get("succeeded", False)), _revision(reply)

    async def grant_lease(self, ttl_seconds: int) -> int:
        """A new lease's id. etcd raises a TTL below its minimum (2 s by default) to that minimum."""
        if ttl_seconds < 1:
            raise ValueError(f"a lease's TTL is at least 1 s, not {ttl_seconds}")
        return _int(await self._call("lease/grant", {"TTL": str(ttl_seconds)}), "ID")

    async def keep_alive_once(self, lease_id: int) -> int:
        """Renews the lease: it now expires its TTL after etcd's leader took this request. Returns
        that TTL in seconds, or 0 if the lease is gone (expired or revoked: its keys are deleted)."""
        reply = await self._call("lease/keepalive", {"ID": str(lease_id)})
        return _int(_stream_result("lease/keepalive", reply), "TTL")

    async def revoke_lease(self, lease_id: int) -> None:
        """Ends the lease and deletes its keys (in one revision). A lease already gone is no error."""
        try:
            await self._call("lease/revoke", {"ID": str(lease_id)})
        except EtcdError as error:
            if error.code != _NOT_FOUND:
                raise

    @asynccontextmanager
    async def open_watch(self, prefix: str, *, start_revision: int) -> AsyncIterator[Watch]:
        """The changes to keys under ``prefix`` from ``start_revision`` on; iterate the ``Watch``.

        Entering waits (within ``timeout``) until etcd has created the watch. See the module's
        docstring for what the iteration raises and how to resume.
        """
        start = self._prefix + prefix.encode()
        create = {
            "key": _b64(start),
            "range_end": _b64(_range_end(start)),
            "start_revision": str(start_revision),
        }
        request = self._http.build_request(
            "POST",
            f"{API}/watch",
            json={"create_request": create},
            headers={"Grpc-Metadata-hasleader": "true"},
            timeout=httpx.Timeout(self.timeout, read=None),  # silence is normal on a watch
        )
        with self._bounded("watch"):
            response = await self._http.send(request, stream=True)
        watch = Watch(self, response)
        try:
            with self._bounded("watch"):
                await watch._created()
            yield watch
        finally:
            await watch._close()

    #### Helpers

    async def _call(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        with self._bounded(path):
            response = await self._http.post(f"{API}/{path}", json=body)
        return _reply(path, response.status_code, response.content)

    @contextmanager
    def _bounded(self, what: str) -> Iterator[None]:
        """Within ``timeout``, with every failure to get an answer raised as ``EtcdUnavailable``."""
        try:
            with trio.fail_after(self.timeout):
                yield
        except trio.TooSlowError:
            raise EtcdUnavailable(
                f"{what}: no answer from etcd at {self.url} within {self.timeout} s"
            ) from None
        except (httpx.HTTPError, httpx.StreamError) as error:
            raise EtcdUnavailable(f"{what}: etcd at {self.url}: {error!r}") from error

    def _key(self, key: str) -> str:
        return _b64(self._prefix + key.encode())

    def _relative(self, key: str) -> str:
        return _unb64(key).removeprefix(self._prefix).decode(errors="surrogateescape")

    def _put_request(self, key: str, value: bytes, lease: int | None) -> dict[str, str]:
        request = {"key": self._key(key), "value": _b64(value)}
        if lease:
            request["lease"] = str(lease)
        return request

    def _key_value(self, kv: dict[str, Any]) -> KeyValue:
        return KeyValue(
            key=self._relative(kv["key"]),
            value=_unb64(kv.get("value", "")),
            create_revision=_int(kv, "create_revision"),
            mod_revision=_int(kv, "mod_revision"),
            version=_int(kv, "version"),
            lease=_int(kv, "lease"),
        )


@final
class Watch:
    """The events of one ``open_watch``, in revision order: ``async for event in watch``.

    The iteration only ends by raising (``EtcdUnavailable``, ``WatchCompacted``, ``EtcdError``), and
    raises the same again if iterated after that; a cancelled wait also ends it. The events of one
    revision are yielded one after the other, all before any error.
    """

    def __init__(self, etcd: Etcd, response: httpx.Response) -> None:
        self._etcd = etcd
        self._response = response
        self._lines = response.aiter_lines()
        self._pending: deque[WatchEvent] = deque()  # of the last message, not yet yielded
        self._failure: Exception | None = None  # raised by every later __anext__

    def __aiter__(self) -> Watch:
        return self

    async def __anext__(self) -> WatchEvent:
        while not self._pending:
            if self._failure is not None:
                raise self._failure
            try:
                self._pending.extend(await self._next_events())
            except (EtcdUnavailable, EtcdError) as failure:
                self._failure = failure
                raise
            except trio.Cancelled:  # the stream is left in the middle of a read
                self._failure = EtcdUnavailable("watch: a wait for its next event was cancelled, ending it")
                raise
        return self._pending.popleft()

    async def _created(self) -> None:
        if self._response.status_code != 200:
            await self._response.aread()
            _reply("watch", self._response.status_code, self._response.content)
        while not (await self._next_message()).get("created"):
            pass

    async def _next_events(self) -> list[WatchEvent]:
        message = await self._next_message()
        if message.get("canceled"):
            compact_revision = _int(message, "compact_revision")
            if compact_revision:
                raise WatchCompacted(compact_revision)
            raise EtcdError(f"etcd cancelled the watch: {message.get('cancel_reason') or 'no reason given'}")
        return [self._event(event) for event in message.get("events", [])]

    async def _next_message(self) -> dict[str, Any]:
        """The next message's ``result``; an end of the stream is ``EtcdUnavailable``."""
        line = ""
        try:
            while not line.strip():
                line = await anext(self._lines)
        except StopAsyncIteration:
            raise EtcdUnavailable(f"etcd at {self._etcd.url} ended the watch stream") from None
        except (httpx.HTTPError, httpx.StreamError) as error:
            raise EtcdUnavailable(f"watch: etcd at {self._etcd.url}: {error!r}") from error
        return _stream_result("watch", _reply("watch", 200, line.encode()))

    async def _close(self) -> None:
        """Ends the stream. httpx reads it through nested async generators, each of which warns if
        collected while suspended; pulled in a cancelled scope, the socket read at their bottom
        raises Cancelled up through every one of them, which finishes them all."""
        with trio.CancelScope() as scope:
            scope.cancel()
            try:
                while True:  # lines already decoded come first
                    await anext(self._lines)
            except (StopAsyncIteration, httpx.HTTPError, httpx.StreamError):
                pass
        await self._response.aclose()

    def _event(self, event: dict[str, Any]) -> WatchEvent:
        kv = event["kv"]
        return WatchEvent(
            type=EventType.DELETE if event.get("type") == "DELETE" else EventType.PUT,
            key=self._etcd._relative(kv["key"]),
            value=_unb64(kv.get("value", "")),
            mod_revision=_int(kv, "mod_revision"),
        )


#### The gateway's JSON


def _reply(what: str, status: int, body: bytes) -> dict[str, Any]:
    """A reply's JSON object, or the failure it reports (the gateway's ``{"message", "code"}``)."""
    try:
        data = json.loads(body)
    except ValueError:
        data = None
    if status == 200 and isinstance(data, dict):
        return data
    if isinstance(data, dict) and isinstance(data.get("message"), str):
        raise _failure(what, status, data["message"], data.get("code"))
    raise _failure(what, status, f"HTTP {status}: {body[:200]!r}", None)


def _stream_result(what: str, message: dict[str, Any]) -> dict[str, Any]:
    """The ``result`` of a streaming call's message, or the failure its ``error`` reports."""
    result = message.get("result")
    if isinstance(result, dict):
        return result
    error = message.get("error")
    if isinstance(error, dict):
        status = error.get("http_code")
        status = status if isinstance(status, int) and status != 200 else 500
        raise _failure(what, status, str(error.get("message")), error.get("grpc_code"))
    raise EtcdError(f"{what}: etcd sent a message without a result: {message!r:.200}")


#: gRPC codes that mean "not now" whatever HTTP status the gateway put on them: CANCELLED (the
#: gateway's connection to etcd is closing, as when etcd stops), UNAVAILABLE
_NOT_NOW_CODES = frozenset({1, 14})


def _failure(what: str, status: int, message: str, code: object) -> EtcdUnavailable | EtcdError:
    """5xx and 429 are "not now" (no leader, overloaded, a request that timed out inside etcd), and
    so are the gRPC codes of a connection that is going away (seen when etcd stops mid-watch)."""
    if status >= 500 or status == 429 or code in _NOT_NOW_CODES or "connection is closing" in message:
        return EtcdUnavailable(f"{what}: etcd cannot serve now: {message}")
    return EtcdError(message, code=code if isinstance(code, int) else None)


def _revision(reply: dict[str, Any]) -> int:
    return _int(reply.get("header", {}), "revision")


def _int(data: dict[str, Any], name: str) -> int:
    """A 64-bit field: a JSON string, left out when 0."""
    return int(data.get(name, 0))


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except binascii.Error as error:
        raise EtcdError(f"etcd sent bytes that are not base64: {text[:100]!r}") from error


def _range_end(prefix: bytes) -> bytes:
    """The first key after every key that starts with ``prefix`` (etcd's ``GetPrefixRangeEnd``)."""
    stripped = prefix.rstrip(b"\xff")
    if not stripped:
        return b"\0"  # etcd's "to the end of the keys"
    return stripped[:-1] + bytes([stripped[-1] + 1])
