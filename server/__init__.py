"""The node: serves an App's objects over HTTP and WebSockets with hypercorn on trio.

    async with trio.open_nursery() as nursery:
        urls = await nursery.start(server.serve, Config(port=0, data_dir=tmp_path))

Guarantees (of :func:`serve`)
- ``task_status.started(urls)`` is called only once the sockets are bound and the runtime is open,
  with the real bound URLs (``port=0`` binds a free port; the URL says which).
- Graceful shutdown when ``shutdown_trigger`` returns (the CLI passes SIGTERM/SIGINT): ``/readyz``
  turns 503 at once, every WebSocket is closed with 1001 (its ``on_close`` turn still runs),
  hypercorn stops accepting connections and closes idle keep-alive ones, requests in flight get
  their replies (each call is bounded by ``call_timeout``), then the runtime drains (queued turns
  finish and commit, every file is closed). ``serve`` returns normally after all of that.
- At most ``config.max_connections`` client connections at once, of every kind; past it a new one
  gets 503 ``Overloaded`` and is closed (``listener.py``, which accepts them in hypercorn's stead).
- Cancelling ``serve`` stops serving at once but still drains the runtime: nothing committed is
  lost, and no reply is sent for a turn that did not commit.

Layering: ``server`` imports ``actors`` (public names only) and never the other way round.
"""

from __future__ import annotations

import importlib
import logging
import socket
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any, cast

import trio
from hypercorn.config import Config as HypercornConfig

from actors import App, DurableObject, Runtime, open_runtime

from .asgi import Node
from .cluster import Cluster, ClusterFileError, Membership, load_membership
from .cluster.dial import PEER_SSL_CONTEXT
from .cluster.etcd import open_etcd
from .cluster.etcd_member import EtcdMember
from .cluster.file_member import FileMember
from .cluster.handoff import Mover
from .cluster.liveness import LeaseSettings
from .cluster.membership import SECRET_VARIABLE
from .cluster.receiver import Receiver
from .cluster.sent_log import SENT_LOG_FILE, SentLog
from .cluster.settle import ClusterGate, slot_of
from .config import Config
from .listener import ConnectionLimit, connection_budget, serve_connections
from .metrics import Metrics
from .rooms import rooms_app
from .transport import hypercorn_config

if TYPE_CHECKING:
    from hypercorn.typing import ASGIFramework

__all__ = ["Config", "Node", "load_app", "serve"]

log = logging.getLogger("server")

#: a drain that takes longer says what it waits for every this many seconds
_DRAIN_REPORT_SECONDS = 3.0
#: seconds hypercorn waits for in-flight requests after the call deadline has passed (reply writing)
_GRACE_AFTER_CALL_TIMEOUT = 1.0


async def serve(
    config: Config,
    *,
    membership: Membership | None = None,
    cluster_secret: bytes | None = None,
    shutdown_trigger: Callable[[], Awaitable[Any]] | None = None,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``config``'s App (beside the built-in rooms) until ``shutdown_trigger`` returns.

    Raises ValueError/ImportError if ``config.app`` cannot be loaded or clashes with a room,
    ``ClusterFileError`` (a ValueError) for a bad ``config.cluster`` file, and OSError if the address
    cannot be bound; the runtime is closed again in every case. With ``membership`` (or
    ``config.cluster``) the node joins that cluster: it keeps a link to every peer and forwards
    calls for the objects it does not own. With ``config.etcd`` the membership comes from etcd
    (``cluster_secret`` is the cluster's secret): the node joins, follows every change, hands off
    the objects that belong elsewhere, and returns once it has left the cluster (``actors cluster
    leave``) or was removed; ``MembershipRefused`` if it may not join.
    """
    rooms = rooms_app(ratelimit_limit=config.ratelimit_limit, ratelimit_period=config.ratelimit_period)
    app = load_app(config.app, rooms=rooms)
    metrics = Metrics(app)
    if membership is None and config.cluster is not None:
        membership = load_membership(config.cluster, config.node_id)
    cluster = None
    if membership is not None:
        file_member = FileMember(membership, config.data_dir)
        membership = file_member.start()  # the newest of the file and what was applied since
        _check_scheme(config, membership)
        cluster = Cluster(membership, metrics, max_message_bytes=config.max_frame_bytes)
        cluster.source = file_member
    peer_tls = PEER_SSL_CONTEXT.set(config.peer_ssl_context())  # this node's dials, links and relays
    try:
        if config.etcd is None:
            await _serve(config, app, metrics, cluster, shutdown_trigger, task_status)
            return
        if cluster_secret is None:
            raise ClusterFileError(f"--etcd needs the cluster secret in {SECRET_VARIABLE}")
        async with open_etcd(config.etcd, prefix=config.etcd_prefix) as etcd:
            assert config.node_id is not None  # (Config checks both)
            assert config.advertise_url is not None
            lease = LeaseSettings(config.lease_ttl, config.lease_margin)
            member = EtcdMember(etcd, config.node_id, config.advertise_url, cluster_secret, lease)
            await _serve(config, app, metrics, None, shutdown_trigger, task_status, etcd_member=member)
    finally:
        PEER_SSL_CONTEXT.reset(peer_tls)


async def _serve(
    config: Config,
    app: App,
    metrics: Metrics,
    cluster: Cluster | None,
    shutdown_trigger: Callable[[], Awaitable[Any]] | None,
    task_status: trio.TaskStatus[list[str]],
    etcd_member: EtcdMember | None = None,
) -> None:
    async with open_runtime(app, config.data_dir, settings=config.settings(), hooks=metrics) as runtime:
        extra: list[Callable[[], Awaitable[None]]] = []
        member: EtcdMember | FileMember | None = etcd_member
        if etcd_member is not None:
            cluster = await _join(config, runtime, metrics, etcd_member)
        elif cluster is not None:
            assert isinstance(cluster.source, FileMember)
            member = cluster.source
            if not member.changed:  # the file as written: what is stored here must be this node's
                cluster.check_stored_objects(runtime.stored_ids())  # before anything is served
        node = Node(runtime, config, metrics, cluster)
        if config.log_objects:
            router = cluster
            metrics.object_log = lambda: (node.node_name, 0 if router is None else router.epoch)
        if member is not None:
            assert cluster is not None
            node.mover, node.receiver = _handoff_parts(cluster, runtime, member, config, metrics, extra)
            node.file_member = member if isinstance(member, FileMember) else None
            cluster.listen(lambda old, new: node.rpc.map_changed())
        connections = ConnectionLimit(connection_budget(config.max_connections))
        metrics.connections = connections.statistics
        links = trio.CancelScope()
        reporting = trio.CancelScope()

        async def trigger() -> None:
            async with trio.open_nursery() as waiting:
                if member is not None:

                    async def left() -> None:
                        await member.done.wait()
                        waiting.cancel_scope.cancel()

                    waiting.start_soon(left)
                if shutdown_trigger is None:
                    await trio.sleep_forever()
                else:
                    await shutdown_trigger()
                waiting.cancel_scope.cancel()
            node.begin_drain()
            nursery.start_soon(report_drain)
            log.info("shutting down: draining", extra={"event": "draining"})

        async def serve_http(task_status: trio.TaskStatus[list[str]]) -> None:
            try:
                await serve_connections(
                    cast("ASGIFramework", node),  # Node takes plain dicts, not hypercorn's TypedDicts
                    _hypercorn_config(config),
                    connections,  # max_connections (listener.py)
                    shutdown_trigger=trigger,
                    task_status=task_status,
                )
            finally:
                links.cancel()  # forwarded calls in flight were answered: hypercorn waited for them
                reporting.cancel()

        async def report_drain() -> None:
            """Say what the drain still waits for, every few seconds (until serving stops)."""
            with reporting:
                while True:
                    await trio.sleep(_DRAIN_REPORT_SECONDS)
                    log.warning(
                        "still draining",
                        extra={
                            "event": "drain_waiting",
                            "http": {k: v for k, v in node.http_in_flight.items() if v},
                            "rpc": node.rpc.describe(),
                            "websockets": node.metrics.websocket_connections,
                        },
                    )

        async def run_links() -> None:
            with links:
                if cluster is not None:
                    await cluster.run(*extra)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(run_links)
            urls: list[str] = await nursery.start(serve_http)
            node.advertise(urls[0])
            log.info(
                "listening",
                extra={"event": "listening", "urls": urls, "data_dir": str(config.data_dir)},
            )
            task_status.started(urls)
        node.draining = True
        log.info("stopped accepting; closing the runtime", extra={"event": "closing"})
    log.info("stopped", extra={"event": "stopped"})


async def _join(config: Config, runtime: Runtime, metrics: Metrics, member: EtcdMember) -> Cluster:
    """Join the etcd membership (publishing the slots of the objects stored here first)."""
    stored = await trio.to_thread.run_sync(runtime.stored_ids)
    membership = await member.join({slot_of(hex_id) for hex_id in stored})
    _check_scheme(config, membership)
    cluster = Cluster(membership, metrics, max_message_bytes=config.max_frame_bytes)
    cluster.source = member
    return cluster


def _handoff_parts(
    cluster: Cluster,
    runtime: Runtime,
    member: EtcdMember | FileMember,
    config: Config,
    metrics: Metrics,
    extra: list[Callable[[], Awaitable[None]]],
) -> tuple[Mover, Receiver]:
    """The mover, the receiver and the gate of a node in a cluster, and their tasks."""
    mover = Mover(
        cluster,
        runtime,
        metrics,
        rate=config.handoff_rate,
        max_message_bytes=config.max_frame_bytes,
        sent_log=SentLog(config.data_dir / SENT_LOG_FILE),
    )
    receiver = Receiver(cluster, runtime, metrics, mover)
    cluster.listen(mover.membership_changed)
    if isinstance(member, FileMember):  # no lease, no holds record: the previous epoch says whom to ask
        gate = ClusterGate(cluster, runtime.holds, mover.moving)
        runtime.set_gate(gate)
        receiver.on_stored = gate.arrived
        metrics.cluster_gauges = lambda: (cluster.epoch, mover.to_move, False, 0.0)

        async def follow_file() -> None:
            await member.run(cluster, gate, mover)

        extra.extend([mover.run, follow_file])
        return mover, receiver
    liveness = member.liveness
    gate = ClusterGate(cluster, runtime.holds, mover.moving, liveness)
    gate.set_published(frozenset(), initial=True)  # nothing activates before our holds are in etcd
    runtime.set_gate(gate)
    receiver.on_stored = gate.arrived
    cluster.ready_checks.append(lambda: gate.published_once and liveness.writable)

    def gauges() -> tuple[int, int, bool, float]:
        left = max(0.0, liveness.fence_at - trio.current_time())
        return cluster.epoch, mover.to_move, not liveness.writable, left

    metrics.cluster_gauges = gauges

    def live_slots() -> set[int]:
        return {slot_of(hex_id) for hex_id in runtime.live_ids()}

    async def follow() -> None:
        await member.run(cluster, gate, mover, live_slots)

    extra.extend([mover.run, follow])
    return mover, receiver


def _check_scheme(config: Config, membership: Membership) -> None:
    """Refuse (ClusterFileError) a TLS node whose URL in the cluster file is ``http``: its peers would
    speak plain HTTP to a TLS port. (The other way round is a TLS proxy in front of the node.)"""
    url = membership.me.url
    if config.tls_cert is not None and not url.startswith("https://"):
        raise ClusterFileError(
            f"this node ({membership.self_id}) serves TLS (--tls-cert) but its URL in the cluster file "
            f"is {url}: make it https:// so that its peers dial it over TLS"
        )


def _shared_socket(host: str, port: int) -> int:
    """A socket bound to ``host:port`` with SO_REUSEPORT, as a file descriptor hypercorn takes over
    (``fd://``): every worker binds the same port this way and the kernel spreads connections."""
    host = host.strip("[]")
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind((host, port))
    except BaseException:
        sock.close()
        raise
    return sock.detach()


def load_app(spec: str | None, *, rooms: App | None = None) -> App:
    """``rooms`` (default: the built-in rooms) merged with the user's App ``"module:attr"``.

    ``attr`` may be an App, a DurableObject subclass or an iterable of them. Raises ImportError or
    AttributeError if it cannot be found, TypeError if it is none of those, ValueError if one of its
    class names clashes with a room.
    """
    rooms = rooms_app() if rooms is None else rooms
    if spec is None:
        return rooms
    module_name, _, attr = spec.partition(":")
    found: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        found = getattr(found, part)
    if isinstance(found, App):
        user = found
    elif isinstance(found, type) and issubclass(found, DurableObject):
        user = App([found])
    elif isinstance(found, Iterable):
        user = App(found)
    else:
        raise TypeError(f"{spec} is {found!r}, not an App or DurableObject classes")
    try:
        return rooms.merged(user)
    except ValueError as exc:
        raise ValueError(f"{spec}: {exc} (the built-in rooms use that name)") from None


def _hypercorn_config(config: Config) -> HypercornConfig:
    hypercorn = hypercorn_config(config)  # the bounds on slow and abusive clients (transport.py)
    hypercorn.bind = [config.bind]
    if config.tls_cert is not None and config.tls_key is not None:  # every bind serves TLS only
        hypercorn.certfile, hypercorn.keyfile = str(config.tls_cert), str(config.tls_key)
    if config.shared_port is not None:
        hypercorn.bind.append(f"fd://{_shared_socket(config.host, config.shared_port)}")
    hypercorn.accesslog = None  # one line per request is too much at load; DEBUG level logs them
    hypercorn.errorlog = logging.getLogger("hypercorn.error")
    hypercorn.graceful_timeout = config.call_timeout + _GRACE_AFTER_CALL_TIMEOUT
    hypercorn.include_server_header = False
    # wsproto reassembles a message up to this size and closes with 1009 past it (websocket.py)
    hypercorn.websocket_max_message_size = config.max_frame_bytes
    return hypercorn
