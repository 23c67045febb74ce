"""The accepting end of a node link: ``GET /v1/peer`` (the dialing end is ``links.py``).

Guarantees
- Nothing a connection sends runs before it has proved the cluster secret over this node's fresh
  nonce (``handshake.py``), named a member other than this node, and shown the same membership
  (epoch and digest). Otherwise the refusal is logged (``peer_refused``, with the reason and the
  remote address) and the socket closed with ``AUTH_FAILED`` (4401) or ``MEMBERSHIP_DIFFERS`` (4409).
- The handshake must finish within ``HANDSHAKE_TIMEOUT_SECONDS`` of the accept.
- Once accepted, the link is served as an SDK connection in peer mode (``server/rpc.py``): the same
  batching, in-flight cap, ordering per object and drain; calls for objects this node does not own
  are refused, never forwarded again.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Final

import trio

from actors.errors import ShuttingDown

from ..errors import NotFound
from . import handshake
from .handshake import HandshakeRefused

if TYPE_CHECKING:
    from ..asgi import Node
    from ..websocket import Receive, Send

__all__ = ["HANDSHAKE_TIMEOUT_SECONDS", "serve_peer"]

log = logging.getLogger("server.cluster")

#: seconds from the accept to a valid auth message
HANDSHAKE_TIMEOUT_SECONDS: Final = 5.0


async def serve_peer(node: Node, scope: dict[str, Any], receive: Receive, send: Send) -> None:
    """Serve one incoming node link to its end."""
    if (await receive())["type"] != "websocket.connect":
        return
    cluster = node.router
    if cluster is None or node.draining:
        error = ShuttingDown("the node is shutting down") if node.draining else None
        await node.websockets.refuse(send, error or NotFound("this node is not in a cluster (no --cluster)"))
        return
    await send({"type": "websocket.accept"})
    membership = cluster.membership
    challenge = handshake.new_nonce()
    await send(
        {"type": "websocket.send", "bytes": handshake.challenge_message(membership.self_id, challenge)}
    )
    try:
        with trio.fail_after(HANDSHAKE_TIMEOUT_SECONDS):
            message = await receive()
        if message["type"] != "websocket.receive":
            return
        try:
            auth = handshake.verify_auth(membership, challenge, message.get("bytes"))
        except HandshakeRefused:
            if cluster.source is None:
                raise
            # A node that just joined may dial before this node has seen the change: read the
            # membership (bounded) and check once more before refusing.
            with trio.move_on_after(HANDSHAKE_TIMEOUT_SECONDS / 2):
                try:
                    await cluster.refresh()
                except Exception as exc:  # etcd away: refuse as before; the dialer tries again
                    log.warning(
                        "membership refresh failed", extra={"event": "refresh_failed", "error": repr(exc)}
                    )
            membership = cluster.membership
            auth = handshake.verify_auth(membership, challenge, message.get("bytes"))
    except (HandshakeRefused, trio.TooSlowError) as exc:
        reason = str(exc) if isinstance(exc, HandshakeRefused) else "no auth message in time"
        code = exc.code if isinstance(exc, HandshakeRefused) else handshake.AUTH_FAILED
        client = scope.get("client")
        log.warning(
            "peer link refused",
            extra={
                "event": "peer_refused",
                "reason": reason,
                "remote": f"{client[0]}:{client[1]}" if client else "?",
            },
        )
        node.metrics.peer_refused()
        await send({"type": "websocket.close", "code": code, "reason": reason[:120]})
        return
    # over the dialer's digest (its proof covers it): across file epochs the two differ
    mac = handshake.accept_mac(
        membership.secret, challenge, auth.nonce, auth.node, membership.self_id, auth.digest
    )
    await send({"type": "websocket.send", "bytes": handshake.accept_message(mac)})
    await node.rpc.serve_peer(auth.node, receive, send)
