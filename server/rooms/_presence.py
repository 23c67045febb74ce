"""Presence: who is in a room, with small metadata, kept live by heartbeats.

Protocol (WebSocket ``/presence/{room}``, JSON text frames):
- the client sends ``{"type": "join", "user": str, "meta": {...}}`` (``meta`` optional, a small object);
  it receives ``{"type": "state", "members": [{"user", "meta"}, ...]}`` and every member (itself
  included) receives ``{"type": "join", "user", "meta"}``. Joining again updates the metadata.
- the client sends ``{"type": "heartbeat"}`` at least every ``HEARTBEAT_TIMEOUT_SECONDS``; any frame
  counts as a heartbeat. A member silent for longer is dropped: its socket is closed with code 4008 and
  the others receive ``{"type": "leave", "user", "reason": "timeout"}``.
- when a socket closes, the others receive ``{"type": "leave", "user", "reason": "closed"}``.
- a malformed frame gets ``{"type": "error", "message": ...}``.

One user may be present on several sockets (devices); the member list has one entry per socket.
Presence is memory only: members live in their sockets' attachments (kept by the node, so an idle room
can be evicted without losing anyone), and the expiry check is the room's alarm.
"""

from __future__ import annotations

import json
from typing import Any, Final

from actors import DurableObject, WebSocket

HEARTBEAT_TIMEOUT_SECONDS: Final = 30.0
MAX_USER_CHARS: Final = 64
#: metadata is stored in the socket attachment (16 KiB); keep it well below
MAX_META_BYTES: Final = 1024


class Presence(DurableObject):
    """One presence room (see the module docstring for the protocol)."""

    async def on_message(self, ws: WebSocket, data: Any) -> None:
        now = self.env.now()
        kind = data.get("type") if isinstance(data, dict) else None
        if kind == "join":
            problem = _join_problem(data)
            if problem:
                ws.send({"type": "error", "message": problem})
                return
            member = {"user": data["user"], "meta": data.get("meta") or {}}
            ws.attachment = {**member, "seen": now}
            ws.send({"type": "state", "members": self._members()})
            self._broadcast({"type": "join", **member})
            self._arm(now)
        elif kind == "heartbeat" or ws.attachment is not None:
            if ws.attachment is not None:
                ws.attachment = {**ws.attachment, "seen": now}
            if kind != "heartbeat":
                ws.send({"type": "error", "message": 'expected {"type": "join" | "heartbeat"}'})
        else:
            ws.send({"type": "error", "message": 'send {"type": "join", "user": ...} first'})

    async def on_close(self, ws: WebSocket, code: int, reason: str) -> None:
        if ws.attachment is not None:
            self._broadcast({"type": "leave", "user": ws.attachment["user"], "reason": "closed"})

    async def alarm(self) -> None:
        now = self.env.now()
        for ws in self.sockets():
            member = ws.attachment
            if member is not None and now - member["seen"] >= HEARTBEAT_TIMEOUT_SECONDS:
                ws.attachment = None  # on_close will not announce it again
                ws.close(4008, "heartbeat timeout")
                self._broadcast({"type": "leave", "user": member["user"], "reason": "timeout"}, ws)
        self._arm(now)

    async def members(self) -> list[dict[str, Any]]:
        """Who is here now (for HTTP callers)."""
        return self._members()

    def _members(self) -> list[dict[str, Any]]:
        return [
            {"user": ws.attachment["user"], "meta": ws.attachment["meta"]}
            for ws in self.sockets()
            if ws.attachment is not None
        ]

    def _broadcast(self, event: dict[str, Any], skip: WebSocket | None = None) -> None:
        frame = json.dumps(event, separators=(",", ":"))
        for ws in self.sockets():
            if ws is not skip and ws.attachment is not None:
                ws.send(event if ws.binary else frame)

    def _arm(self, now: float) -> None:
        """Set the alarm to the earliest expiry, or clear it when nobody is present."""
        seen = [ws.attachment["seen"] for ws in self.sockets() if ws.attachment is not None]
        if seen:
            self.storage.set_alarm(max(now, min(seen) + HEARTBEAT_TIMEOUT_SECONDS))
        elif self.storage.get_alarm() is not None:
            self.storage.delete_alarm()


def _join_problem(data: dict[str, Any]) -> str | None:
    user, meta = data.get("user"), data.get("meta")
    if not isinstance(user, str) or not 0 < len(user) <= MAX_USER_CHARS:
        return f"user must be a non-empty string of at most {MAX_USER_CHARS} characters"
    if meta is not None and not isinstance(meta, dict):
        return "meta must be an object"
    if meta:
        try:  # every member may read it as JSON: no bytes (a CBOR client's), NaN or infinity
            size = len(_strict_json(meta))
        except (TypeError, ValueError):
            return "meta must be an object of JSON values (no bytes, NaN or infinity)"
        if size > MAX_META_BYTES:
            return f"meta must be at most {MAX_META_BYTES} bytes of JSON"
    return None


_strict_json = json.JSONEncoder(allow_nan=False).encode
