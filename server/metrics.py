"""Prometheus metrics: the runtime's :class:`actors.Hooks` implemented with prometheus_client.

Guarantees
- Every metric here is set by something: counters and histograms by a hook the runtime calls (or by
  the HTTP layer, for ``actors_http_requests_total``), gauges from ``Runtime.statistics()`` at
  scrape time, so a scrape always shows the state of that instant.
- The metrics live in this object's own ``CollectorRegistry``, never the process-global one, so two
  nodes in one process (tests) never share or clash.
- Hooks never raise and never block: they only update in-memory values.
- WebSocket counts are plain integers the connection loops bump (``websocket_*`` attributes, no lock
  and no label lookup per frame, which matters for chat fan-out); a collector reads them at scrape time,
  with the open and refused connections of ``max_connections`` (``listener.py``).
- The same for the metrics updated on every call, turn, commit and request (``actors_calls``, the
  call, turn and commit duration histograms, the batch size histogram, ``actors_http_requests``):
  :class:`_Tally` and :class:`_Buckets` count in plain dicts and lists on the trio thread (a dict
  lookup and a bisect, where prometheus_client's objects take a lock per update and scan the buckets
  one by one: 2-3 % of a request's CPU at ~800 requests/s), and publish the same families, label
  names, buckets and help texts at scrape time. The rarer events keep prometheus_client's objects.

Label values are bounded by the App, never by what callers send: a call to a class or method the App
does not have is still counted (``call_finished`` reports it), under the label ``"<unknown>"``.
"""

from __future__ import annotations

import bisect
import logging
import time
from collections import Counter as Tally
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from prometheus_client import CONTENT_TYPE_LATEST as CONTENT_TYPE_LATEST
from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.utils import floatToGoString

from actors import App, Hooks, ObjectId, RuntimeStatistics

if TYPE_CHECKING:
    from .listener import ConnectionStatistics

__all__ = ["CONTENT_TYPE_LATEST", "Metrics"]

#: turn and commit durations: 50 µs (an in-memory turn) to 10 s (a slow fsync or a stuck turn)
_SECONDS_BUCKETS = (
    0.00005,
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
#: turns per committed batch: 1 (no contention) up to max_batch_turns (256 by default)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)

_UNKNOWN = "<unknown>"

#: every activation's opening and closing of its file, with the epoch (``--log-objects``)
_objects_log = logging.getLogger("server.objects")


class Metrics(Hooks):
    """Hooks that count into Prometheus metrics; ``render(stats)`` produces the scrape text."""

    def __init__(self, app: App) -> None:
        self._classes = frozenset(app.classes)
        self._methods = frozenset((cls, m) for cls in app.classes for m in app.methods(cls))
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.calls = _Tally(
            "actors_calls",
            "Calls that returned to their caller, by outcome (ok or error type).",
            ["class", "method", "outcome"],
            registry=r,
        )
        self.call_seconds = _Buckets(
            "actors_call_duration_seconds",
            "Calls from arrival to reply: queueing, turn and commit.",
            ["class"],
            buckets=_SECONDS_BUCKETS,
            registry=r,
        )
        self.turn_seconds = _Buckets(
            "actors_turn_duration_seconds",
            "Turns alone, without queueing or commit.",
            ["class", "method"],
            buckets=_SECONDS_BUCKETS,
            registry=r,
        )
        self.activations = Counter(
            "actors_activations",
            "Objects activated (file opened, on_start ran).",
            ["class"],
            registry=r,
        )
        self.evictions = Counter(
            "actors_evictions",
            "Objects that left memory, by reason.",
            ["class", "reason"],
            registry=r,
        )
        self.commit_seconds = _Buckets(
            "actors_commit_duration_seconds",
            "Durations of batch COMMITs on the event loop (with FSYNC the WAL fsync follows, off it).",
            [],
            buckets=_SECONDS_BUCKETS,
            registry=r,
        )
        self.batch_turns = _Buckets(
            "actors_commit_batch_turns",
            "Turns that shared one commit (group commit).",
            [],
            buckets=_BATCH_BUCKETS,
            registry=r,
        )
        self.alarms = Counter(
            "actors_alarms",
            "Alarms run, by outcome: ok, retry or failed.",
            ["class", "outcome"],
            registry=r,
        )
        self.internal_errors = Counter(
            "actors_internal_errors",
            "Failures inside the node or runtime (see the log by reference).",
            registry=r,
        )
        self.http_requests = _Tally(
            "actors_http_requests",
            "HTTP requests answered, by route and status.",
            ["route", "status"],
            registry=r,
        )
        self.live_objects = Gauge("actors_live_objects", "Activations in memory now.", registry=r)
        self.open_object_files = Gauge(
            "actors_open_object_files", "Live objects whose SQLite file is open now.", registry=r
        )
        self.object_files_rested = Gauge(
            "actors_object_files_rested",
            "Files of live objects closed to keep within max_open_files, since the node started.",
            registry=r,
        )
        self.queued_calls = Gauge(
            "actors_queued_calls", "Calls waiting in all object queues now.", registry=r
        )
        self.max_queue_depth = Gauge("actors_max_queue_depth", "The longest object queue now.", registry=r)
        self.commits_in_flight = Gauge(
            "actors_commits_in_flight", "Batches whose COMMIT is running now.", registry=r
        )
        self.pending_alarms = Gauge(
            "actors_pending_alarms",
            "Alarms the scheduler holds in memory (the next ones due; later ones wait in the catalog).",
            registry=r,
        )
        self.open_sockets = Gauge(
            "actors_open_sockets",
            "WebSockets the runtime holds for objects now, live or evicted (hibernating).",
            registry=r,
        )
        self.peer_up = Gauge(
            "actors_peer_up", "1 while this node's link to the peer is up, else 0.", ["peer"], registry=r
        )
        self.peer_forwarded = Counter(
            "actors_peer_forwarded_calls",
            "Calls this node forwarded to the peer that owns their object (answered or lost).",
            ["peer"],
            registry=r,
        )
        self.peer_forward_seconds = _Buckets(
            "actors_peer_forward_duration_seconds",
            "Forwarded calls from sending to the owner's reply.",
            ["peer"],
            buckets=_SECONDS_BUCKETS,
            registry=r,
        )
        self.peer_relays = Counter(
            "actors_peer_relayed_websockets",
            "WebSockets relayed to the peer that owns their object.",
            ["peer"],
            registry=r,
        )
        self.peer_refusals = Counter(
            "actors_peer_links_refused",
            "Incoming node links refused: no proof of the cluster secret, or another membership.",
            registry=r,
        )
        self.epoch = Gauge(
            "actors_cluster_epoch", "The membership epoch this node acts under (a file: 1).", registry=r
        )
        self.handoff_pending = Gauge(
            "actors_handoff_pending_objects",
            "Objects stored here that other nodes own under the current epoch: still to hand off.",
            registry=r,
        )
        self.handoff_objects = Counter(
            "actors_handoff_objects",
            "Objects handed to their new owners (sent) or taken from their old ones (received).",
            ["direction"],
            registry=r,
        )
        self.fenced = Gauge(
            "actors_lease_fenced",
            "1 while this node takes no turns because its liveness lease may lapse (etcd), else 0.",
            registry=r,
        )
        self.lease_seconds_left = Gauge(
            "actors_lease_fence_seconds",
            "Seconds until this node stops taking turns unless its lease is renewed (etcd).",
            registry=r,
        )
        #: the cluster's part of a scrape: (epoch, objects to hand off, fenced, seconds to the fence)
        self.cluster_gauges: Callable[[], tuple[int, int, bool, float]] | None = None
        #: (node id, epoch) for the object_opened/object_closed log lines; None: not logged
        self.object_log: Callable[[], tuple[str, int]] | None = None
        #: the open and refused connections (``ConnectionLimit.statistics``; None: not serving)
        self.connections: Callable[[], ConnectionStatistics] | None = None
        #: accepted WebSocket connections not yet finished
        self.websocket_connections = 0
        #: WebSocket messages received from clients (every data frame, decodable or not)
        self.websocket_messages_in = 0
        #: WebSocket messages written to clients (object frames and error frames)
        self.websocket_messages_out = 0
        #: closed WebSocket connections by the close code the object saw (bounded: 1000-4999)
        self.websocket_closes: Tally[int] = Tally()
        r.register(_CountsCollector(self))
        # labels() takes a lock and builds a key on every call; the hot path looks children up here
        self._children: dict[tuple[Any, ...], Any] = {}

    def _child(self, metric: Any, *labels: str) -> Any:
        key = (id(metric), *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    #### Hooks (called by the runtime on the trio thread)

    def call_finished(self, cls: str, method: str, outcome: str, seconds: float) -> None:
        if (cls, method) not in self._methods:
            method = _UNKNOWN
            if cls not in self._classes:
                cls = _UNKNOWN
        self.calls.inc((cls, method, outcome))
        self.call_seconds.observe((cls,), seconds)

    def turn_finished(self, cls: str, method: str, seconds: float) -> None:
        # Turns also run for lifecycle hooks ("on_start", "alarm"); those names are bounded too.
        self.turn_seconds.observe((cls, method), seconds)

    def activated(self, cls: str, seconds: float) -> None:
        self._child(self.activations, cls).inc()

    def evicted(self, cls: str, reason: str) -> None:
        self._child(self.evictions, cls, reason).inc()

    def object_opened(self, object_id: ObjectId) -> None:
        if self.object_log is not None:
            self._log_object("object_opened", object_id)

    def object_closed(self, object_id: ObjectId) -> None:
        if self.object_log is not None:
            self._log_object("object_closed", object_id)

    def _log_object(self, event: str, object_id: ObjectId) -> None:
        assert self.object_log is not None
        node, epoch = self.object_log()
        _objects_log.info(
            event.replace("_", " "),
            extra={"event": event, "object": object_id.hex, "node": node, "epoch": epoch, "t": time.time()},
        )

    def handed_off(self, objects: int) -> None:
        self._child(self.handoff_objects, "sent").inc(objects)

    def received(self, objects: int) -> None:
        self._child(self.handoff_objects, "received").inc(objects)

    def committed(self, seconds: float, turns: int) -> None:
        self.commit_seconds.observe((), seconds)
        self.batch_turns.observe((), turns)

    def alarm_finished(self, cls: str, outcome: str) -> None:
        self._child(self.alarms, cls, outcome).inc()

    def internal_error(self, reference: str, message: str) -> None:
        self.internal_errors.inc()

    #### The node

    def request_finished(self, route: str, status: int) -> None:
        """An HTTP request was answered (``route`` is the route's pattern, never the raw path)."""
        self.http_requests.inc((route, _STATUS.get(status) or str(status)))

    #### The cluster (``server/cluster/links.py`` reports through these)

    def link_state(self, peer: str, up: bool) -> None:
        self._child(self.peer_up, peer).set(1 if up else 0)

    def forwarded(self, peer: str, seconds: float) -> None:
        self._child(self.peer_forwarded, peer).inc()
        self.peer_forward_seconds.observe((peer,), seconds)

    def relayed(self, peer: str) -> None:
        self._child(self.peer_relays, peer).inc()

    def peer_refused(self) -> None:
        self.peer_refusals.inc()

    def render(self, stats: RuntimeStatistics) -> bytes:
        """The scrape text, with the gauges set from ``stats`` first."""
        self.live_objects.set(stats.live_objects)
        self.open_object_files.set(stats.open_files)
        self.object_files_rested.set(stats.files_rested)
        self.queued_calls.set(stats.queued_calls)
        self.max_queue_depth.set(stats.max_queue_depth)
        self.commits_in_flight.set(stats.commits_in_flight)
        self.pending_alarms.set(stats.pending_alarms)
        self.open_sockets.set(stats.open_sockets)
        if self.cluster_gauges is not None:
            epoch, pending, fenced, left = self.cluster_gauges()
            self.epoch.set(epoch)
            self.handoff_pending.set(pending)
            self.fenced.set(1 if fenced else 0)
            self.lease_seconds_left.set(left)
        return generate_latest(self.registry)


#: status codes as label values, made once
_STATUS = {code: str(code) for code in range(100, 600)}


class _Tally:
    """A counter family counted in a dict by label values, published at scrape time."""

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str], *, registry: Any) -> None:
        self._name, self._documentation, self._labelnames = name, documentation, list(labelnames)
        self._counts: dict[tuple[str, ...], int] = {}
        registry.register(self)

    def inc(self, labels: tuple[str, ...]) -> None:
        counts = self._counts
        counts[labels] = counts.get(labels, 0) + 1

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(self._name, self._documentation, labels=self._labelnames)
        for labels, count in self._counts.items():
            family.add_metric(list(labels), float(count))
        yield family


class _Buckets:
    """A histogram family counted in lists by label values, published at scrape time.

    Same buckets as prometheus_client's Histogram: an observation goes to the first bucket whose
    upper bound is at least the value (``le``), and +Inf takes the rest.
    """

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str],
        *,
        buckets: Sequence[float],
        registry: Any,
    ) -> None:
        self._name, self._documentation, self._labelnames = name, documentation, list(labelnames)
        self._bounds = [*(float(b) for b in buckets), float("inf")]
        self._les = [floatToGoString(b) for b in self._bounds]  # type: ignore[no-untyped-call]
        #: label values -> [count per bucket (not cumulative)..., sum]
        self._series: dict[tuple[str, ...], list[float]] = {}
        registry.register(self)

    def observe(self, labels: tuple[str, ...], value: float) -> None:
        series = self._series.get(labels)
        if series is None:
            series = self._series[labels] = [0.0] * (len(self._bounds) + 1)
        series[bisect.bisect_left(self._bounds, value)] += 1
        series[-1] += value

    def collect(self) -> Iterator[Metric]:
        family = HistogramMetricFamily(self._name, self._documentation, labels=self._labelnames)
        for labels, series in self._series.items():
            cumulative, buckets = 0.0, []
            for le, count in zip(self._les, series, strict=False):
                cumulative += count
                buckets.append((le, cumulative))
            family.add_metric(list(labels), buckets, sum_value=series[-1])
        yield family


class _CountsCollector:
    """Publishes the node's plain connection and WebSocket counts at scrape time."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        m = self._metrics
        if m.connections is not None:
            held = m.connections()
            yield GaugeMetricFamily(
                "actors_connections", "Client connections open now, of every kind.", value=held.open
            )
            yield GaugeMetricFamily(
                "actors_max_connections", "The bound on open connections.", value=held.max_connections
            )
            yield CounterMetricFamily(
                "actors_connections_refused",
                "Connections refused at max_connections (answered 503, or closed at once).",
                value=held.refused,
            )
        yield GaugeMetricFamily(
            "actors_websocket_connections",
            "Accepted WebSocket connections open now.",
            value=m.websocket_connections,
        )
        yield CounterMetricFamily(
            "actors_websocket_messages_received",
            "WebSocket messages received from clients.",
            value=m.websocket_messages_in,
        )
        yield CounterMetricFamily(
            "actors_websocket_messages_sent",
            "WebSocket messages sent to clients (object frames and error frames).",
            value=m.websocket_messages_out,
        )
        closes = CounterMetricFamily(
            "actors_websocket_closes",
            "WebSocket connections closed, by close code.",
            labels=["code"],
        )
        for code, count in sorted(m.websocket_closes.items()):
            closes.add_metric([str(code)], count)
        yield closes
