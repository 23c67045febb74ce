"""Slow and abusive clients: what a connection may cost the node, and what enforces each bound.

Guarantees (each bound a :class:`~server.config.Config` field, with a flag and an ``ACTORS_*`` variable)
- ``keep_alive_timeout`` (5 s): a connection without a whole request's headers is closed that long
  after it opened or after its last reply. That is both the idle keep-alive time and the time a
  client has to send a request's headers, so a slowloris client (a header byte now and then) is cut
  off. hypercorn's own timer does it: it runs from the accept, or from the end of a reply, and only
  a complete request stops it; bytes that trickle in do not reset it.
- ``max_header_bytes`` (16 KiB): the request line and headers of an HTTP/1.1 request; past it h11
  stops buffering and hypercorn answers 431 and closes (``h11_max_incomplete_size``).
- ``send_timeout`` (60 s): data the node sent that the client leaves unacknowledged, or cannot take
  because its receive window stays closed (a client that stopped reading), aborts the connection
  that long after it stopped making progress. The kernel does it (``TCP_USER_TIMEOUT``, set on the
  listening sockets so every accepted one inherits it), because hypercorn shields its socket writes
  from cancellation: without it a writer blocked on such a client waits for as long as the client's
  kernel answers window probes, that is forever. Linux only; elsewhere it is not enforced.
- ``max_connections`` (10,000) bounds the connections one node holds, of every kind; past it a new
  one gets 503 and is closed (``listener.py``, where connections are accepted: ASGI never sees them).
- ``max_body_bytes`` bounds a body (``asgi.py``); the WebSocket send queue is bounded by
  ``max_send_queue_bytes`` and ``MAX_SEND_QUEUE_FRAMES`` (``websocket.py``: close 1013, then the
  connection ends once its close is written or ``send_timeout`` gives it up).

XX: a body sent slowly but steadily is bounded only by ``max_body_bytes`` (hypercorn's
``read_timeout`` would bound the gaps between reads, but it applies to every connection, idle
WebSockets included, and so needs server pings first).
"""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING

from hypercorn.config import Config as HypercornConfig
from hypercorn.config import Sockets

if TYPE_CHECKING:
    from .config import Config

__all__ = ["hypercorn_config"]


class _BoundedConfig(HypercornConfig):
    """hypercorn's configuration, whose listening sockets abort stalled sends (``send_timeout``)."""

    send_timeout_ms = 0

    def create_sockets(self) -> Sockets:
        sockets = super().create_sockets()
        timeout = getattr(socket, "TCP_USER_TIMEOUT", None)  # Linux only
        if timeout is not None:
            for sock in [*sockets.secure_sockets, *sockets.insecure_sockets]:
                if sock.family in (socket.AF_INET, socket.AF_INET6):
                    sock.setsockopt(socket.IPPROTO_TCP, timeout, self.send_timeout_ms)
        return sockets


def hypercorn_config(config: Config) -> HypercornConfig:
    """A hypercorn configuration that enforces ``config``'s bounds on clients (the docstring above)."""
    hypercorn = _BoundedConfig()
    hypercorn.send_timeout_ms = round(config.send_timeout * 1000)
    hypercorn.keep_alive_timeout = config.keep_alive_timeout
    hypercorn.h11_max_incomplete_size = config.max_header_bytes
    return hypercorn
