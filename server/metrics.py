"""Prometheus metrics: the runtime's :class:`actors.Hooks` implemented with prometheus_client.

Guarantees
- Every metric here is set by something: counters and histograms by a hook the runtime calls (or by
  the HTTP layer, for ``actors_http_requests_total``), gauges from ``Runtime.statistics()`` at
  scrape time, so a scrape always shows the state of that instant.
- The metrics live in this object's own ``CollectorRegistry``, never the process-global one, so two
  nodes in one process (tests) never share or clash.
- Hooks never raise and never block: they only update in-memory values.
- WebSocket counts are plain integers the connection loops bump (``websocket_*`` attributes, no lock
  and no label lookup per frame, which matters for chat fan-out); a collector reads them at scrape time.

Label values are bounded by the App, never by what callers send: a call to a class or method the App
does not have is still counted (``call_finished`` reports it), under the label ``"<unknown>"``.
"""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Iterator
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST as CONTENT_TYPE_LATEST
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from actors import App, Hooks, RuntimeStatistics

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


class Metrics(Hooks):
    """Hooks that count into Prometheus metrics; ``render(stats)`` produces the scrape text."""

    def __init__(self, app: App) -> None:
        self._classes = frozenset(app.classes)
        self._methods = frozenset((cls, m) for cls in app.classes for m in app.methods(cls))
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.calls = Counter(
            "actors_calls",
            "Calls that returned to their caller, by outcome (ok or error type).",
            ["class", "method", "outcome"],
            registry=r,
        )
        self.call_seconds = Histogram(
            "actors_call_duration_seconds",
            "Calls from arrival to reply: queueing, turn and commit.",
            ["class"],
            buckets=_SECONDS_BUCKETS,
            registry=r,
        )
        self.turn_seconds = Histogram(
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
        self.commit_seconds = Histogram(
            "actors_commit_duration_seconds",
            "Durations of batch COMMITs on the event loop (with FSYNC the WAL fsync follows, off it).",
            buckets=_SECONDS_BUCKETS,
            registry=r,
        )
        self.batch_turns = Histogram(
            "actors_commit_batch_turns",
            "Turns that shared one commit (group commit).",
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
        self.http_requests = Counter(
            "actors_http_requests",
            "HTTP requests answered, by route and status.",
            ["route", "status"],
            registry=r,
        )
        self.live_objects = Gauge("actors_live_objects", "Activations in memory now.", registry=r)
        self.queued_calls = Gauge(
            "actors_queued_calls", "Calls waiting in all object queues now.", registry=r
        )
        self.max_queue_depth = Gauge("actors_max_queue_depth", "The longest object queue now.", registry=r)
        self.commits_in_flight = Gauge(
            "actors_commits_in_flight", "Batches whose COMMIT is running now.", registry=r
        )
        self.pending_alarms = Gauge(
            "actors_pending_alarms", "Alarms the scheduler is waiting for.", registry=r
        )
        self.open_sockets = Gauge(
            "actors_open_sockets",
            "WebSockets the runtime holds for objects now, live or evicted (hibernating).",
            registry=r,
        )
        #: accepted WebSocket connections not yet finished
        self.websocket_connections = 0
        #: WebSocket messages received from clients (every data frame, decodable or not)
        self.websocket_messages_in = 0
        #: WebSocket messages written to clients (object frames and error frames)
        self.websocket_messages_out = 0
        #: closed WebSocket connections by the close code the object saw (bounded: 1000-4999)
        self.websocket_closes: Tally[int] = Tally()
        r.register(_WebSocketCollector(self))
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
        self._child(self.calls, cls, method, outcome).inc()
        self._child(self.call_seconds, cls).observe(seconds)

    def turn_finished(self, cls: str, method: str, seconds: float) -> None:
        # Turns also run for lifecycle hooks ("on_start", "alarm"); those names are bounded too.
        self._child(self.turn_seconds, cls, method).observe(seconds)

    def activated(self, cls: str, seconds: float) -> None:
        self._child(self.activations, cls).inc()

    def evicted(self, cls: str, reason: str) -> None:
        self._child(self.evictions, cls, reason).inc()

    def committed(self, seconds: float, turns: int) -> None:
        self.commit_seconds.observe(seconds)
        self.batch_turns.observe(turns)

    def alarm_finished(self, cls: str, outcome: str) -> None:
        self._child(self.alarms, cls, outcome).inc()

    def internal_error(self, reference: str, message: str) -> None:
        self.internal_errors.inc()

    #### The node

    def request_finished(self, route: str, status: int) -> None:
        """An HTTP request was answered (``route`` is the route's pattern, never the raw path)."""
        self._child(self.http_requests, route, str(status)).inc()

    def render(self, stats: RuntimeStatistics) -> bytes:
        """The scrape text, with the gauges set from ``stats`` first."""
        self.live_objects.set(stats.live_objects)
        self.queued_calls.set(stats.queued_calls)
        self.max_queue_depth.set(stats.max_queue_depth)
        self.commits_in_flight.set(stats.commits_in_flight)
        self.pending_alarms.set(stats.pending_alarms)
        self.open_sockets.set(stats.open_sockets)
        return generate_latest(self.registry)


class _WebSocketCollector:
    """Publishes the node's plain WebSocket counts at scrape time."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        m = self._metrics
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
