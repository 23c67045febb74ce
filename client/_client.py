"""The client: routing each call to the node that owns its object, retries, stubs, object sockets.

Guarantees
- Routing is the cluster's: an object's id is ``ObjectId.from_name(cls, name)`` (so a name over a
  limit fails here, with LimitExceeded, before anything is sent) and its node is
  ``ClusterMap.owner(id)``, computed from the node list the nodes announce in their Welcome (the
  map with the highest epoch wins). One node is the one-entry case. Connections to other nodes open
  on first use; the node the client was pointed at keeps the URL it was given, whatever URL it
  announces for itself (it may not know how it is reached).
- Retry policy: a call is sent again only when it provably never reached its object: (a) it was never
  written to a socket (the connection was down or being re-established: it waits for the reconnect
  within its timeout, ``_connection.py``); (b) the node answered ``Overloaded`` (after its
  ``retry_after``) or ``ShuttingDown`` (after ``SHUTTING_DOWN_RETRY_SECONDS``), both of which the
  runtime raises only for calls that never reached the object; (c) it was written but still
  unanswered when the node closed with its drain close (``wire.DRAIN_CLOSE``), which the node sends
  only once it answered every call it read (the connection reports those as ``ShuttingDown``); as
  long as the wait ends before the call's deadline. In a cluster of several nodes, a node that has
  been unreachable for ``OWNER_WAIT_SECONDS`` fails its calls at once with ``OwnerUnavailable`` (never
  sent: safe to retry, but not retried here, so an outage shows in seconds rather than at the
  deadline); the other nodes' objects are unaffected. Nothing else is retried: a call that was written
  and then lost its connection any other way, or got no reply by its deadline, may have run
  (``OutcomeUnknown``); every other answer is final.
- Every wait of a call (a free in-flight slot, a reconnect, a retry delay, the reply) counts against
  its one timeout, which the node is told in the Call frame and enforces itself.
"""

from __future__ import annotations

import math
import os
from collections.abc import AsyncIterator, Coroutine
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any, Final, TypeVar, final, overload
from urllib.parse import quote

import trio
from trio_websocket import HandshakeError

from actors import DurableObject, ObjectId, plain_value_problem, wire
from actors.errors import InvalidArgument, Overloaded, ShuttingDown
from actors.placement import ClusterMap

from ._connection import MAX_RECEIVE_BYTES, Connection, ConnectionStatistics
from ._dial import Dialer, auth_headers, base_url, dial, refusal, tls_dialer, ws_url
from ._stub import Stub
from ._websocket import ObjectSocket

__all__ = ["DEFAULT_TIMEOUT", "Client", "ClientStatistics", "connect", "open_client"]

T = TypeVar("T", bound=DurableObject)

#: seconds a call may take, every wait included, unless the caller says otherwise (the node's default)
DEFAULT_TIMEOUT: Final = 30.0
#: seconds before a call answered ShuttingDown is sent again (the node is draining; the next socket
#: may reach it restarted, or another node)
SHUTTING_DOWN_RETRY_SECONDS: Final = 0.25
#: the shortest wait before retrying an Overloaded call, whatever its retry_after says
MIN_RETRY_SECONDS: Final = 0.01
#: object ids ``Client.call`` remembers (emptied when full: bounded memory, a spread load loses little)
_MAX_CACHED_IDS: Final = 4096


@dataclass(frozen=True, slots=True)
class ClientStatistics:
    cluster_epoch: int  # the epoch of the cluster map in use (-1 before the first Welcome)
    connections: tuple[ConnectionStatistics, ...]  # every connection, to every node used so far


@final
class _Pool:
    """The ``connections=N`` sockets to one node, used round-robin."""

    __slots__ = ("connections", "next")

    def __init__(self, connections: list[Connection]) -> None:
        self.connections = connections
        self.next = 0

    def pick(self) -> Connection:
        connections = self.connections
        if len(connections) == 1:
            return connections[0]
        index = self.next
        self.next = (index + 1) % len(connections)
        return connections[index]


@final
class Client:
    """Calls objects on a node or cluster (made by :func:`connect`; not built directly).

    Retries: a call is sent again only if it provably never reached its object, and only while the
    retry can finish before its deadline: a call not yet written to a socket when the connection
    dropped (or made while it was down) waits for the reconnect; a call answered ``Overloaded``
    is sent again after its ``retry_after``, one answered ``ShuttingDown`` (or left unanswered by a
    node's drain close) after 0.25 s. A call written and then cut off any other way
    (``ConnectionLost``) or unanswered (``ReplyTimeout``) is never sent again: it may have run.
    Every other answer is final.
    """

    def __init__(
        self,
        url: str,
        *,
        token: str | None,
        timeout: float,
        max_in_flight: int | None,
        connections: int,
        dialer: Dialer,
        nursery: trio.Nursery,
    ) -> None:
        self.url = base_url(url)
        self.timeout = timeout
        self._token = token
        self._max_in_flight = max_in_flight
        self._per_node = connections
        self._dialer = dialer
        self._nursery = nursery
        self._closed = False
        self._cluster = ClusterMap(((" seed", self.url),), epoch=-1)
        self._pools: dict[str, _Pool] = {}
        #: object ids by (class, name), so ``call`` on a hot object does not hash its name each time
        self._ids: dict[tuple[str, str], str] = {}
        self._seed = self._pool(self.url)
        #: the pool of the only node while the cluster has one (routing needs no hashing then)
        self._only: _Pool | None = self._seed

    @property
    def cluster(self) -> ClusterMap:
        """The cluster as this client knows it (node names and base URLs, and the map's epoch)."""
        return self._cluster

    def statistics(self) -> ClientStatistics:
        return ClientStatistics(
            self._cluster.epoch,
            tuple(c.statistics() for pool in self._pools.values() for c in pool.connections),
        )

    @overload
    def get(self, cls: type[T], name: str, *, timeout: float | None = None) -> T: ...
    @overload
    def get(self, cls: str, name: str, *, timeout: float | None = None) -> Stub: ...
    def get(self, cls: type[DurableObject] | str, name: str, *, timeout: float | None = None) -> Any:
        """A stub for object ``name`` of class ``cls`` (a DurableObject subclass, or its name).

        With a class, the stub is typed as that class, so a type checker checks every call's
        arguments against the method's signature; at run time it is a :class:`Stub`. Each call has
        ``timeout`` seconds (None: the client's). Raises InvalidArgument or LimitExceeded
        (``MAX_OBJECT_NAME_BYTES``, ``MAX_CLASS_NAME_BYTES``) for a bad name, before anything is sent.
        """
        class_name = cls if isinstance(cls, str) else cls.__name__
        object_id = ObjectId.from_name(class_name, name)
        return Stub(self, class_name, name, object_id.hex, _check_timeout(timeout))

    async def call(
        self,
        cls: type[DurableObject] | str,
        name: str,
        method: str,
        /,
        *args: Any,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> Any:
        """Call ``method(*args, **kwargs)`` of object ``name`` of class ``cls`` and return its result.

        Raises the node's named errors (``actors.errors``; the object's own exceptions as
        ``RemoteError``), ``Unreachable``, ``ConnectionLost``, ``ReplyTimeout`` (see
        :mod:`client.errors`). ``timeout`` is the SDK's (a method parameter named ``timeout``
        needs a stub's method instead).
        """
        class_name = cls if isinstance(cls, str) else cls.__name__
        if timeout is not None:
            _check_timeout(timeout)
        key = (class_name, name)
        hex = self._ids.get(key)
        if hex is None:
            hex = ObjectId.from_name(class_name, name).hex
            if len(self._ids) >= _MAX_CACHED_IDS:
                self._ids.clear()
            self._ids[key] = hex
        return await self.send_call(class_name, name, hex, method, args, kwargs, timeout)

    def send_call(
        self,
        cls: str,
        name: str,
        hex: str,
        method: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        timeout: float | None,
    ) -> Coroutine[Any, Any, Any]:
        """The call's coroutine, for stubs (``hex`` is the object's id, already computed)."""
        return self._call(cls, name, hex, method, args, kwargs, self.timeout if timeout is None else timeout)

    async def _call(
        self,
        cls: str,
        name: str,
        hex: str,
        method: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        timeout: float,
    ) -> Any:
        problem = plain_value_problem(args, "args") or plain_value_problem(kwargs, "kwargs")
        if problem:
            raise InvalidArgument(f"{cls}/{name}.{method}: {problem}")
        if self._closed:
            raise trio.ClosedResourceError("the client is closed")
        deadline = trio.current_time() + timeout
        arguments = list(args)
        while True:
            connection = self._connection_for(hex)
            try:
                return await connection.call(cls, name, method, arguments, kwargs, deadline)
            except Overloaded as exc:  # refused before reaching the object: safe to send again
                delay = max(exc.retry_after, MIN_RETRY_SECONDS)
                if trio.current_time() + delay >= deadline:
                    raise
            except ShuttingDown:  # likewise
                delay = SHUTTING_DOWN_RETRY_SECONDS
                if trio.current_time() + delay >= deadline:
                    raise
            await trio.sleep(delay)

    @asynccontextmanager
    async def websocket(
        self,
        cls: type[DurableObject] | str,
        name: str,
        *,
        path: str | None = None,
        params: dict[str, str] | None = None,
    ) -> AsyncIterator[ObjectSocket]:
        """Open the WebSocket of object ``name`` of class ``cls`` for the ``async with`` block.

        ``path`` picks another route to the same object (``/chat/lobby``), percent-encoded;
        ``params`` become the query string (the object sees them as ``ws.params``). Raises
        Unreachable if no connection was made within the client's timeout, Rejected if the node
        refused it (401, 404, ...); see :class:`ObjectSocket` for the rest.
        """
        class_name = cls if isinstance(cls, str) else cls.__name__
        object_id = ObjectId.from_name(class_name, name)
        if path is None:
            path = f"/v1/objects/{quote(class_name, safe='')}/{quote(name, safe='')}/ws"
        elif not path.startswith("/"):
            raise ValueError(f"path must start with '/', not {path!r}")
        _, node_url = self._cluster.owner(object_id.hex)
        url = ws_url(node_url, path, params)
        async with AsyncExitStack() as stack:
            try:
                ws = await stack.enter_async_context(
                    self._dialer(
                        url,
                        headers=auth_headers(self._token),
                        subprotocols=["cbor"],
                        max_message_size=MAX_RECEIVE_BYTES,
                        connect_timeout=self.timeout,
                    )
                )
            except (HandshakeError, OSError) as exc:
                raise refusal(exc, url) from None
            yield ObjectSocket(ws)

    #### Routing

    def _connection_for(self, hex: str) -> Connection:
        pool = self._only
        if pool is None:
            url = self._cluster.owner(hex)[1]
            pool = self._pools.get(url) or self._pool(url)
        return pool.pick()

    def _pool(self, url: str) -> _Pool:
        pool = self._pools.get(url)
        if pool is None:
            connections = [
                Connection(
                    url,
                    token=self._token,
                    max_in_flight=self._max_in_flight,
                    dialer=self._dialer,
                    on_welcome=self._welcomed,
                )
                for _ in range(self._per_node)
            ]
            pool = self._pools[url] = _Pool(connections)
            self._name_pool(url, pool)
            for connection in connections:
                self._nursery.start_soon(connection.serve)
        return pool

    def _name_pool(self, url: str, pool: _Pool) -> None:
        """Tell ``pool``'s connections which node they reach and whether it is one of several, in
        which case a down node fails its calls fast (``OwnerUnavailable``)."""
        nodes = self._cluster.nodes
        node = next((name for name, node_url in nodes if node_url == url), url)
        for connection in pool.connections:
            connection.node, connection.fail_fast = node, len(nodes) > 1

    def _welcomed(self, connection: Connection, welcome: wire.Welcome) -> None:
        """Adopt the Welcome's cluster map if it is newer than the one in use."""
        if welcome.epoch <= self._cluster.epoch:
            return
        nodes = tuple(
            (node, connection.url if node == welcome.node else base_url(url)) for node, url in welcome.nodes
        )
        self._cluster = ClusterMap(nodes, welcome.epoch)
        self._only = self._pool(nodes[0][1]) if len(nodes) == 1 else None
        for url, pool in self._pools.items():  # pools for other nodes open on first use
            self._name_pool(url, pool)

    async def _open(self) -> None:
        """Dial every connection to the seed node at once and wait for their Welcome."""
        deadline = trio.current_time() + self.timeout
        connections = self._seed.connections
        for connection in connections:
            connection.hold_open()
        try:
            for connection in connections:
                await connection.wait_open(deadline)
        finally:
            for connection in connections:
                connection.release_open()

    def _close_nowait(self) -> None:
        self._closed = True
        for pool in self._pools.values():
            for connection in pool.connections:
                connection.close_nowait()


def _check_timeout(timeout: float | None) -> float | None:
    if timeout is not None and (isinstance(timeout, bool) or not 0 < timeout < math.inf):
        raise ValueError(f"timeout must be a positive number of seconds, not {timeout!r}")
    return timeout


@asynccontextmanager
async def open_client(
    url: str,
    *,
    token: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    max_in_flight: int | None = None,
    connections: int = 1,
    dialer: Dialer = dial,
) -> AsyncIterator[Client]:
    """:func:`connect` with a custom ``dialer`` (tests use one that reaches an in-process node)."""
    _check_timeout(timeout)
    if max_in_flight is not None and max_in_flight < 1:
        raise ValueError(f"max_in_flight must be at least 1, not {max_in_flight}")
    if connections < 1:
        raise ValueError(f"connections must be at least 1, not {connections}")
    # Neither a failed open nor the body's own exception may come out wrapped in the nursery's
    # ExceptionGroup: both are caught inside and raised again after the nursery has closed.
    failure: BaseException | None = None
    async with trio.open_nursery() as nursery:
        client = Client(
            url,
            token=token,
            timeout=timeout,
            max_in_flight=max_in_flight,
            connections=connections,
            dialer=dialer,
            nursery=nursery,
        )
        try:
            await client._open()
            yield client
        except BaseException as exc:
            failure = exc
        finally:
            client._close_nowait()
    if failure is not None:
        raise failure


@asynccontextmanager
async def connect(
    url: str,
    *,
    token: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    max_in_flight: int | None = None,
    connections: int = 1,
    ca: str | os.PathLike[str] | None = None,
) -> AsyncIterator[Client]:
    """Connect to the node at ``url`` (``http://host:port``) for the ``async with`` block.

    Opens ``connections`` WebSockets to it (``/v1/connect``, ``Authorization: Bearer <token>``)
    and waits for their Welcome, which also brings the cluster map; connections to other nodes of
    the cluster open on first use. ``timeout`` is every call's default (seconds, every wait
    included) and bounds this opening too. ``max_in_flight`` caps the calls queued or in flight
    per connection (default and ceiling: the node's Welcome value, at most 1024); callers past it
    wait. Leaving the block closes every connection; calls still in flight fail (ConnectionLost
    for those already sent).

    An ``https`` node's certificate is verified (chain and host name) against the system's trust
    store, or against the PEM CA certificates in the file ``ca`` (a private CA) instead.

    Raises Unreachable if the node cannot be reached within ``timeout`` (a certificate that does
    not verify included), Rejected if it refuses the connection (a wrong token), ValueError for a
    malformed URL or option, OSError or ``ssl.SSLError`` if ``ca`` cannot be loaded.
    """
    dialer = tls_dialer(ca)
    async with open_client(
        url, token=token, timeout=timeout, max_in_flight=max_in_flight, connections=connections, dialer=dialer
    ) as client:
        yield client
