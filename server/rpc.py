"""The SDK's route ``GET /v1/connect``: one WebSocket that multiplexes calls, in the frames of
``actors/wire.py`` (the protocol itself, and its table of frames, is that module's docstring).

Guarantees
- Handshake: the checks of the other WebSocket routes (``websocket.py``), in the same order: 400 a
  path or query that is not UTF-8, 403 an Origin not allowed, 401 no token (``Authorization:
  Bearer`` or ``?token=``), 503 the node is draining; each refused before accept.
- The first message must be exactly one Hello; the node answers with one Welcome (the highest
  version both speak, its name, ``MAX_IN_FLIGHT_PER_CONNECTION``, ``max_frame_bytes`` and the
  cluster map) before anything else. No version in common: ``Error(None, InvalidArgument)``, 4400.
  No Hello within ``HELLO_TIMEOUT_SECONDS`` of the accept: ``Error(None, InvalidArgument)`` naming
  the limit, then the close 4408, so an accepted socket that never speaks holds nothing for long.
- Every Call gets exactly one Result or Error with its id while the connection lasts. Calls run
  concurrently and are answered as they finish: a slow call never holds up a fast one. Calls to one
  object still enter its queue in the order sent: a call to a live object is queued as its message
  is admitted; while one of the object's calls is on the workers' path, its later calls take that
  path too; workers take calls in order, and the runtime queues a call before its first checkpoint
  (unless it must wait for an eviction or for room).
- A malformed message (not a CBOR array of frames, a text frame, a second Hello, a frame only the
  node sends, a call id already in flight) gets ``Error(None, InvalidArgument)`` and the close
  4400 with the problem as its reason; none of its calls run. Nothing a client sends stops the node.
- Errors come from the node's one table (``errors.py``): the named error's ``type`` and ``message``
  (plus ``limit``/``retry_after``), the user's exception class as ``type`` when the object raised,
  and only ``internal error; reference = <id>`` for a failure of ours.
- Bounded work and memory per connection: at most ``MAX_IN_FLIGHT_PER_CONNECTION`` calls are in
  flight (received, and their reply not yet taken by the writer); a Call past it gets ``Overloaded``
  without reaching an object. Refusals wait for the writer too: once as many replies are queued, the
  reader stops reading until the writer takes them, and TCP slows the client down.
- A Result whose message would be over ``max_frame_bytes`` becomes ``Error(id, LimitExceeded)``
  naming ``max_frame_bytes`` (the call's writes were applied); the node sends no bigger message.
- Drain (SIGTERM, ``close_all``): new Calls get ``ShuttingDown`` (never reached an object: safe to
  retry elsewhere), calls in flight finish and their replies are written, then the close 1001. So a
  call still unanswered when a 1001 close arrives never reached an object.
- A close the client starts, or a dropped connection, cancels the calls in flight (a turn that has
  started still commits or rolls back whole; see ``actors/_runtime.py``). A 4400 close does the same.

Mechanism: three kinds of task per connection, none per call.
- The reader (the connection's own task) reads a message, decodes it with ``wire.decode``, checks
  the whole batch, then admits each Call synchronously: an object id, an in-flight slot, and either
  ``Runtime.start_call`` (the object is live: the call is queued on it now, and a callback queues
  the reply once durable; no task is involved) or a place in ``_waiting``.
- Callers, for calls whose object must first be activated (which waits): a pool of worker tasks
  that each take a waiting call, ``await runtime.call(...)`` and queue its reply. A worker parks
  when nothing waits and is woken for the next call; a new one is started only when none is idle,
  so a connection holds about as many workers as its peak of concurrent activating calls (at
  most ``MAX_IN_FLIGHT_PER_CONNECTION``, 1.6 KB each parked); all but ``KEEP_IDLE_WORKERS`` exit
  after ``RETIRE_AFTER_SECONDS`` with nothing in flight. Waking a parked task costs about half of
  starting one, and a closed-loop client that empties its window every round would otherwise
  start them all again each round.
- The writer swaps out every reply queued since it last ran and packs them into as few messages as
  ``MAX_FRAMES_PER_MESSAGE`` and ``max_frame_bytes`` allow: turns that commit together (group
  commit) are answered together, so their replies leave in one message.
"""

from __future__ import annotations

import functools
import logging
import math
from collections import deque
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Final, cast, final

import trio
from trio.lowlevel import Abort, Task, current_task, reschedule, wait_task_rescheduled

from actors import wire
from actors.errors import (
    ActorError,
    InvalidArgument,
    LimitExceeded,
    Overloaded,
    OwnerUnavailable,
    ShuttingDown,
)
from actors.wire import MAX_FRAMES_PER_MESSAGE, Call, Error, Frame, Hello, ProtocolError, Result, Welcome

from .cluster.links import EPOCH_OPERATION
from .cluster.router import routed_call
from .errors import FRAME_LIMIT, as_actor_error, close_code_of, close_reason, error_reply
from .websocket import CLOSE_TIMEOUT_SECONDS, GOING_AWAY, Receive, Send

if TYPE_CHECKING:
    from actors import ObjectId
    from actors._work import Work  # what Runtime.start_call returns

    from .asgi import Node
    from .cluster.links import Abandonable

__all__ = [
    "HELLO_TIMEOUT_CLOSE_CODE",
    "HELLO_TIMEOUT_SECONDS",
    "IN_FLIGHT_RETRY_AFTER",
    "KEEP_IDLE_WORKERS",
    "MAX_IN_FLIGHT_PER_CONNECTION",
    "RETIRE_AFTER_SECONDS",
    "RPC_PATH",
    "Rpc",
]

log = logging.getLogger("server")

#: the path of the route, as decoded segments
RPC_PATH: Final = ("v1", "connect")

#: calls one connection may have in flight. Enough to saturate a hot object from one connection
#: (group commit takes up to 256 turns per batch and an object queues up to ``max_queue_depth``,
#: 1,000 by default) and to spread over many objects; small enough that a connection's worst case
#: (its workers, arguments and replies) stays a few MB. Announced in Welcome.
MAX_IN_FLIGHT_PER_CONNECTION: Final = 4096

#: the ``retry_after`` of a Call refused past ``MAX_IN_FLIGHT_PER_CONNECTION``: about the time a
#: commit batch takes, after which replies have freed slots
IN_FLIGHT_RETRY_AFTER: Final = 0.05

#: seconds a connection may take from its accept to its Hello (the SDK sends it at once)
HELLO_TIMEOUT_SECONDS: Final = 5.0
#: the close for a connection that sent no Hello in time (4000-4999 are ours; 408 is HTTP's timeout)
HELLO_TIMEOUT_CLOSE_CODE: Final = 4408

#: parked workers a connection keeps once nothing has been in flight for ``RETIRE_AFTER_SECONDS``
KEEP_IDLE_WORKERS: Final = 16
RETIRE_AFTER_SECONDS: Final = 1.0

#: object ids a connection remembers by (class, name), so a hot object's id is not hashed again
#: for every call (emptied when full: bounded memory, and a spread workload loses nothing)
_MAX_CACHED_IDS = 1024

_ROUTE_NAME = "/" + "/".join(RPC_PATH)


@final
class Rpc:
    """Every SDK connection of one node (``Node.rpc``); see the module docstring."""

    def __init__(self, node: Node) -> None:
        self.node = node
        #: set by ``close_all``; new handshakes get 503 from then on
        self.draining = False
        self._connections: set[_Connection] = set()

    def map_changed(self) -> None:
        """The cluster adopted a newer membership: send each SDK connection the new map (a Welcome
        frame after the first is a map update; the SDK adopts a newer epoch)."""
        for connection in list(self._connections):
            if connection.peer is None and connection.welcomed is not None:
                connection.send_map()

    def describe(self) -> list[dict[str, Any]]:
        """The open connections with calls in flight (what a slow drain waits for)."""
        return [
            {
                "peer": c.peer,
                "in_flight": len(c._in_flight),
                "waiting": len(c._waiting),
                "started": len(c._started),
                "closing": c.close_code,
            }
            for c in self._connections
            if c._in_flight or c.close_code is None
        ]

    def close_all(self) -> None:
        """Drain every connection (finish its calls, then close 1001) and refuse new ones."""
        self.draining = True
        for connection in list(self._connections):
            connection.drain()

    def _check_handshake(self, scope: dict[str, Any]) -> None:
        self.node.websockets.check_access(scope)  # Origin and token, as on every WebSocket route
        if self.draining or self.node.runtime.closing:
            raise ShuttingDown("the node is shutting down")

    async def serve_peer(self, peer: str, receive: Receive, send: Send) -> None:
        """Serve an accepted, authenticated node link from ``peer`` (``server/cluster/accept.py``)."""
        connection = _Connection(self.node, send, peer=peer)
        self._connections.add(connection)
        try:
            if self.draining:
                connection.drain()
            await connection.serve(receive)
        finally:
            self._connections.discard(connection)

    async def serve(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        """Serve one connection of ``/v1/connect`` to its end."""
        node = self.node
        if (await receive())["type"] != "websocket.connect":
            return
        try:
            self._check_handshake(scope)
            node.websockets.reserve()  # max_websockets counts SDK connections too
        except Exception as exc:
            await node.websockets.refuse(send, exc)
            return
        try:
            await self._serve_checked(send, receive)
        finally:
            node.websockets.held -= 1

    async def _serve_checked(self, send: Send, receive: Receive) -> None:
        node = self.node
        metrics = node.metrics
        # No checkpoint since the draining check: close_all cannot miss this connection.
        connection = _Connection(node, send)
        self._connections.add(connection)
        try:
            await send({"type": "websocket.accept"})
            metrics.request_finished(_ROUTE_NAME, 101)
            metrics.websocket_connections += 1
            try:
                code = await connection.serve(receive)
            finally:
                metrics.websocket_connections -= 1
            metrics.websocket_closes[code] += 1
            if log.isEnabledFor(logging.DEBUG):
                log.debug(
                    "websocket closed",
                    extra={"event": "websocket_closed", "route": _ROUTE_NAME, "code": code},
                )
        finally:
            self._connections.discard(connection)


@final
class _Connection:
    """One accepted ``/v1/connect`` socket: its reader, its callers and its writer."""

    __slots__ = (
        "_deadline", "_idle", "_ids", "_in_flight", "_nursery", "_queue", "_queue_taken", "_retiring",
        "_scope", "_send", "_slow", "_started", "_waiting", "_workers", "_writer", "close_code",
        "close_reason", "draining", "node", "peer", "peer_epoch", "welcomed",
    )  # fmt: skip

    def __init__(self, node: Node, send: Send, *, peer: str | None = None) -> None:
        self.node = node
        #: the peer node's id when this is a node link (``server/cluster/accept.py``): it is already
        #: authenticated (no Hello), its calls must be for objects this node owns (never forwarded
        #: again), and calls of class ``""`` are the cluster's node operations
        self.peer = peer
        #: the epoch the peer announced last (``router.py``: the epoch rule); calls that follow an
        #: announcement of a newer epoch than this node's wait until this node has adopted it
        self.peer_epoch = 0
        #: the protocol version of the Welcome sent (None before it)
        self.welcomed: int | None = None
        self._send = send
        #: frames for the writer, in the order they became ready
        self._queue: list[Frame] = []
        #: the writer, while it waits for frames
        self._writer: Task | None = None
        #: set when the writer takes the queue, while the reader waits for that
        self._queue_taken: trio.Event | None = None
        #: ids of calls admitted whose reply the writer has not taken yet
        self._in_flight: set[int] = set()
        #: admitted calls no worker has taken yet
        self._waiting: deque[tuple[Call, ObjectId]] = deque()
        #: calls queued on a live object without a worker (``Runtime.start_call``), by call id
        self._started: dict[int, Work | Abandonable] = {}
        #: objects (by hex id) with calls on the workers' path not yet answered: their later calls
        #: take that path too, so that calls to one object enter its queue in the order sent
        self._slow: dict[str, int] = {}
        #: ids computed for (class, name), at most ``_MAX_CACHED_IDS``
        self._ids: dict[tuple[str, str], ObjectId] = {}
        #: parked workers
        self._idle: set[Task] = set()
        #: worker tasks alive, and how many of the idle ones are asked to exit
        self._workers = 0
        self._retiring = 0
        self._nursery: trio.Nursery | None = None
        self._scope: trio.CancelScope | None = None
        self._deadline = math.inf
        #: no new calls run; the close follows the last reply
        self.draining = False
        #: the code of the close the node started; None while open or if only the client closed
        self.close_code: int | None = None
        self.close_reason = ""

    async def serve(self, receive: Receive) -> int:
        """Read until the client's close (or the node's, once written); returns the close code."""
        code = 1006
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                self._scope = nursery.cancel_scope
                nursery.cancel_scope.deadline = self._deadline
                nursery.start_soon(self._serve_writer)
                try:
                    code = await self._read(receive)
                finally:
                    if self.close_code is not None:  # the node closed: hypercorn cannot tell
                        code = self.close_code
                    nursery.cancel_scope.cancel()  # calls still in flight: no one to answer
        finally:
            # Calls started without a worker and still queued will never run (as a cancelled
            # worker's would not); those already running finish and commit, and reply to no one.
            started, self._started = self._started, {}
            for work in started.values():
                work.abandon()
        return code

    #### Closing

    def drain(self) -> None:
        """Refuse new calls with ShuttingDown; close with 1001 once the calls in flight are answered."""
        self.draining = True
        if not self._in_flight:
            self._close(*GOING_AWAY)

    def _fail(self, exc: ActorError) -> None:
        """The client broke the protocol: ``Error(None, ...)`` after the replies queued, then close."""
        if log.isEnabledFor(logging.DEBUG):
            log.debug("protocol error", extra={"event": "rpc_protocol_error", "error": exc.message})
        error = InvalidArgument(exc.message) if isinstance(exc, ProtocolError) else exc
        self._queue.append(Error(None, error.to_dict()))
        self._close(close_code_of(error), close_reason(error.message))

    def _no_hello(self) -> None:
        problem = InvalidArgument(
            f"no Hello within HELLO_TIMEOUT_SECONDS ({HELLO_TIMEOUT_SECONDS:g} s) of the connection"
        )
        self._queue.append(Error(None, problem.to_dict()))
        self._close(HELLO_TIMEOUT_CLOSE_CODE, close_reason(problem.message))

    def _close(self, code: int, reason: str) -> None:
        """Start the close: the writer writes what is queued, then the close frame."""
        if self.close_code is not None:
            return
        self.close_code, self.close_reason = code, reason
        self._deadline = trio.current_time() + CLOSE_TIMEOUT_SECONDS
        if self._scope is not None:
            self._scope.deadline = self._deadline
        self._wake_writer()

    #### Reader

    async def _read(self, receive: Receive) -> int:
        metrics, limit = self.node.metrics, MAX_IN_FLIGHT_PER_CONNECTION
        welcomed = self.peer is not None
        hello_deadline = trio.current_time() + HELLO_TIMEOUT_SECONDS
        while True:
            if welcomed or self.close_code is not None:
                message = await receive()
            else:
                with trio.move_on_at(hello_deadline):
                    message = await receive()
                    hello_deadline = math.inf
                if hello_deadline != math.inf:  # no Hello in time (a channel receive: nothing lost)
                    self._no_hello()
                    continue
            kind = message["type"]
            if kind == "websocket.disconnect":
                return int(message.get("code") or 1005)
            if kind != "websocket.receive":
                continue
            metrics.websocket_messages_in += 1
            if self.close_code is not None:
                continue  # closing: nothing more is read
            try:
                self._handle(message.get("bytes"), welcomed)
                welcomed = True
            except ActorError as exc:  # ProtocolError, or no version in common
                self._fail(exc)
            except Exception as exc:  # a bug of ours: the client sees a reference, the log the rest
                self._fail(as_actor_error(exc, report_internal=metrics.internal_error))
            while len(self._queue) >= limit and self.close_code is None:
                self._queue_taken = taken = trio.Event()
                await taken.wait()

    def _handle(self, data: bytes | None, welcomed: bool) -> None:
        if data is None:
            raise ProtocolError("text messages are not part of the protocol: send binary CBOR")
        frames = wire.decode(data)
        if welcomed:
            self._admit(frames)
        else:
            self._welcome(frames)

    def _welcome(self, frames: list[Frame]) -> None:
        if len(frames) != 1 or type(frames[0]) is not Hello:
            raise ProtocolError("the first message must be exactly one Hello frame")
        hello = frames[0]
        version = wire.choose_version(hello.versions)
        if version is None:
            raise InvalidArgument(
                f"no protocol version in common: the node speaks {list(wire.SUPPORTED_VERSIONS)}, "
                f"the client {list(hello.versions)}"
            )
        self.welcomed = version
        self.send_map()

    def send_map(self) -> None:
        """Queue a Welcome with the cluster map in force (the first, or an update)."""
        assert self.welcomed is not None
        node = self.node
        cluster = node.cluster
        self._queue.append(
            Welcome(
                self.welcomed,
                node.node_name,
                MAX_IN_FLIGHT_PER_CONNECTION,
                node.config.max_frame_bytes,
                cluster.nodes,
                cluster.epoch,
            )
        )
        self._wake_writer()

    def _admit(self, frames: list[Frame]) -> None:
        """Check the whole message first (none of its calls run if any frame is wrong), then admit
        each call or answer it at once (draining, past the in-flight cap, a bad class or name)."""
        in_flight = self._in_flight
        ids: set[int] = set()
        for frame in frames:
            if type(frame) is not Call:
                kind = type(frame).__name__
                if kind == "Hello":
                    raise ProtocolError("Hello is only the first message of a connection")
                raise ProtocolError(f"{kind} frames are sent by the node only")
            ids.add(frame.id)
        if len(ids) != len(frames) or not in_flight.isdisjoint(ids):
            raise ProtocolError("a call id is already in flight on this connection")
        runtime, ids_by_name, waiting, queue = self.node.runtime, self._ids, self._waiting, self._queue
        app, started, slow, router = runtime.app, self._started, self._slow, self.node.router
        admitted = 0
        for call in cast("list[Call]", frames):
            if self.draining:
                queue.append(Error(call.id, _SHUTTING_DOWN))
                continue
            if len(in_flight) >= MAX_IN_FLIGHT_PER_CONNECTION:
                queue.append(Error(call.id, _OVERLOADED))
                continue
            if self.peer is not None and not call.cls:
                if call.method == EPOCH_OPERATION:  # in order with the calls that follow it
                    self._peer_announced(call)
                    continue
                in_flight.add(call.id)
                self._start_node_operation(call)
                continue
            key = (call.cls, call.name)
            object_id = ids_by_name.get(key)
            if object_id is None:
                try:
                    object_id = app.id_from_name(call.cls, call.name)
                except Exception as exc:
                    queue.append(Error(call.id, self._error_body(exc)))
                    continue
                if len(ids_by_name) >= _MAX_CACHED_IDS:
                    ids_by_name.clear()
                ids_by_name[key] = object_id
            in_flight.add(call.id)
            if router is not None:
                if self.peer_epoch > router.epoch:  # adopt the peer's newer epoch first (workers)
                    slow[object_id.hex] = slow.get(object_id.hex, 0) + 1
                    waiting.append((call, object_id))
                    admitted += 1
                    continue
                link = router.link_for(object_id)
                if link is not None:  # another node owns it: forward, or refuse a peer's call
                    if self.peer is not None:
                        queue.append(Error(call.id, router.not_owner(object_id, self.peer).to_dict()))
                        continue
                    try:
                        started[call.id] = link.start_call(
                            call.cls, call.name, call.method, call.args, call.kwargs, call.timeout,
                            functools.partial(self._forwarded, call, object_id),
                        )  # fmt: skip
                    except Exception as exc:
                        queue.append(Error(call.id, self._error_body(exc)))
                    continue
            if object_id.hex not in slow:
                # A live object: queue the call now, with a callback instead of a worker task.
                try:
                    work = runtime.start_call(
                        object_id,
                        call.method,
                        call.args,
                        call.kwargs,
                        call.timeout,
                        functools.partial(self._reply, call.id),
                    )
                except Exception as exc:
                    queue.append(Error(call.id, self._error_body(exc)))
                    continue
                if work is not None:
                    started[call.id] = work
                    continue
            slow[object_id.hex] = slow.get(object_id.hex, 0) + 1
            waiting.append((call, object_id))
            admitted += 1
        if len(queue) > 0:
            self._wake_writer()
        self._wake_workers(admitted)

    #### Callers

    def _start_node_operation(self, call: Call) -> None:
        """A peer's node operation (``server/cluster``: list, delete): one task, answered like a call."""

        async def run() -> None:
            try:
                value = await self.node.node_operation(call.method, call.kwargs)
            except Exception as exc:
                self._queue.append(Error(call.id, self._error_body(exc)))
            else:
                self._queue.append(Result(call.id, value))
            self._wake_writer()

        assert self._nursery is not None
        self._nursery.start_soon(run)

    def _peer_announced(self, call: Call) -> None:
        """A peer announced its epoch (``router.py``); refresh if it is newer than this node's."""
        epoch = call.kwargs.get("epoch")
        if type(epoch) is int and epoch > self.peer_epoch:
            self.peer_epoch = epoch
            router = self.node.router
            if router is not None and epoch > router.epoch:
                router.request_refresh()
        self._queue.append(Result(call.id, None))
        self._wake_writer()

    def _forwarded(self, call: Call, object_id: ObjectId, result: Any, error: ActorError | None) -> None:
        """A forwarded call's reply; one refused under a newer epoch is routed again (workers)."""
        router = self.node.router
        if (
            isinstance(error, OwnerUnavailable)
            and router is not None
            and error.epoch > router.epoch
            and self._started.pop(call.id, None) is not None
        ):
            self._slow[object_id.hex] = self._slow.get(object_id.hex, 0) + 1
            self._waiting.append((call, object_id))
            self._wake_workers(1)
            return
        self._reply(call.id, result, error)

    def _reply(self, call_id: int, result: Any, error: ActorError | None) -> None:
        """A call started without a worker finished: queue its reply (called by the runtime)."""
        if self._started.pop(call_id, None) is None:
            return  # the connection is gone
        if error is None:
            self._queue.append(Result(call_id, result))
        else:
            self._queue.append(Error(call_id, self._error_body(error)))
        self._wake_writer()

    def _wake_workers(self, calls: int) -> None:
        """Make sure ``calls`` more waiting calls have a worker: wake idle ones, start the rest."""
        idle = self._idle
        while calls and idle:
            reschedule(idle.pop())
            calls -= 1
        nursery = self._nursery
        assert nursery is not None
        while calls and self._workers < MAX_IN_FLIGHT_PER_CONNECTION:
            self._workers += 1
            nursery.start_soon(self._serve_calls)
            calls -= 1

    async def _serve_calls(self) -> None:
        """One worker: run waiting calls one at a time, park when none waits."""
        waiting, runtime, router = self._waiting, self.node.runtime, self.node.router
        try:
            while True:
                while waiting:
                    call, object_id = waiting.popleft()
                    try:
                        if router is None:
                            value = await runtime.call(
                                object_id, call.method, call.args, call.kwargs, timeout=call.timeout
                            )
                        else:
                            value = await routed_call(
                                router, runtime, object_id, call, peer=self.peer, peer_epoch=self.peer_epoch
                            )
                    except Exception as exc:
                        self._queue.append(Error(call.id, self._error_body(exc)))
                    else:
                        self._queue.append(Result(call.id, value))  # the writer swaps the list
                    finally:
                        slow, key = self._slow, object_id.hex
                        if slow[key] == 1:
                            del slow[key]
                        else:
                            slow[key] -= 1
                    if self._writer is not None:
                        self._wake_writer()
                if self._retiring:
                    self._retiring -= 1
                    return
                task = current_task()
                self._idle.add(task)

                def abort(_: Any, task: Task = task) -> Abort:
                    self._idle.discard(task)
                    return Abort.SUCCEEDED

                await wait_task_rescheduled(abort)
        finally:
            self._workers -= 1

    def _retire_idle_workers(self) -> None:
        """Nothing was in flight for a while: let all but ``KEEP_IDLE_WORKERS`` parked workers exit."""
        idle = self._idle
        while len(idle) > KEEP_IDLE_WORKERS:
            self._retiring += 1
            reschedule(idle.pop())

    def _error_body(self, exc: Exception) -> dict[str, Any]:
        node = self.node
        _, body, _ = error_reply(exc, debug=node.config.debug, report_internal=node.metrics.internal_error)
        error: dict[str, Any] = body["error"]
        return error

    #### Writer

    def _wake_writer(self) -> None:
        task = self._writer
        if task is not None:
            self._writer = None
            reschedule(task)

    async def _park_writer(self) -> None:
        """Wait for ``_wake_writer`` (no task switch per frame: the queue is a list it swaps out)."""
        self._writer = current_task()
        await wait_task_rescheduled(self._abort_writer)

    def _abort_writer(self, _: Any) -> Abort:
        self._writer = None
        return Abort.SUCCEEDED

    async def _serve_writer(self) -> None:
        """Write queued frames in batches, then the close once one is started and all is written."""
        send, metrics = self._send, self.node.metrics
        try:
            while True:
                if self._queue:
                    batch, self._queue = self._queue, []
                    self._took(batch)
                    for data in self._messages(batch):
                        await send({"type": "websocket.send", "bytes": data})
                        metrics.websocket_messages_out += 1
                    continue
                if self.close_code is not None:
                    code, reason = self.close_code, self.close_reason
                    await send({"type": "websocket.close", "code": code, "reason": reason})
                    return
                if len(self._idle) <= KEEP_IDLE_WORKERS or self._in_flight:
                    await self._park_writer()
                    continue
                with trio.move_on_after(RETIRE_AFTER_SECONDS) as quiet:
                    await self._park_writer()
                if quiet.cancelled_caught and not self._in_flight:
                    self._retire_idle_workers()
        except Exception as exc:  # hypercorn refused a message: a bug; give the socket up soon
            as_actor_error(exc, report_internal=self.node.metrics.internal_error)
            self._close(1011, "internal error")
            if self._scope is not None:
                self._scope.cancel()

    def _took(self, batch: list[Frame]) -> None:
        """The writer took ``batch``: its calls leave the in-flight set, the reader may read on."""
        in_flight = self._in_flight
        if in_flight:
            for frame in batch:
                if type(frame) is not Welcome:
                    in_flight.discard(frame.id)  # type: ignore[union-attr]
            if not in_flight and self.draining:
                self._close(*GOING_AWAY)
        taken = self._queue_taken
        if taken is not None:
            self._queue_taken = None
            taken.set()

    def _messages(self, frames: list[Frame]) -> Iterator[bytes]:
        """``frames`` as few messages as the limits allow, in order."""
        for start in range(0, len(frames), MAX_FRAMES_PER_MESSAGE):
            yield from self._fit(frames[start : start + MAX_FRAMES_PER_MESSAGE])

    def _fit(self, frames: list[Frame]) -> Iterator[bytes]:
        """One message if it fits ``max_frame_bytes``, else halves; a lone Result over the limit (or
        not CBOR-encodable: a bug) becomes an Error frame for its call."""
        try:
            data: bytes | None = wire.encode(frames)
        except InvalidArgument:
            data = None
        limit = self.node.config.max_frame_bytes
        lone = frames[0] if len(frames) == 1 else None
        if data is not None and (len(data) <= limit or (lone is not None and type(lone) is not Result)):
            yield data  # a lone Welcome or Error is small: it goes whatever the limit
        elif lone is None:
            half = len(frames) // 2
            yield from self._fit(frames[:half])
            yield from self._fit(frames[half:])
        else:
            call_id = None if type(lone) is Welcome else lone.id  # type: ignore[union-attr]
            if data is None:
                error: ActorError = as_actor_error(
                    TypeError(f"a reply is not CBOR-encodable: {lone!r:.200}"),
                    report_internal=self.node.metrics.internal_error,
                )
            else:
                error = LimitExceeded(
                    f"the result is {len(data)} bytes of CBOR, over max_frame_bytes ({limit}); "
                    "the call's writes were applied",
                    limit=FRAME_LIMIT,
                )
            yield wire.encode([Error(call_id, error.to_dict())])


_SHUTTING_DOWN: Final = ShuttingDown("the node is shutting down; the call did not run").to_dict()
_OVERLOADED: Final = Overloaded(
    f"this connection has MAX_IN_FLIGHT_PER_CONNECTION ({MAX_IN_FLIGHT_PER_CONNECTION}) calls in "
    "flight; the call did not run",
    retry_after=IN_FLIGHT_RETRY_AFTER,
).to_dict()
