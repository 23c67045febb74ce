"""ChatRoom: a persisted chat with a per-room sequence number.

Protocol (WebSocket ``/chat/{room}``, JSON text frames; the benchmark contract):
- on join the server first sends ``{"type": "history", "messages": [...]}``: the last
  ``HISTORY_MESSAGES`` messages, oldest first;
- a client sends ``{"user": str, "text": str, "ts": number}``;
- every member, the sender included, receives ``{"user", "text", "ts", "seq"}``, ``seq`` increasing by
  one per room. A message is stored before anyone receives it (the output gate), so a member never sees
  a message that a crash could lose.
- a malformed frame gets ``{"type": "error", "message": ...}`` back and changes nothing.

Limits: ``MAX_USER_CHARS`` and ``MAX_TEXT_CHARS``; ``ts`` is a finite number, an integer one within
``MAX_SAFE_TS`` (what a browser's number holds exactly, and the room's table stores). Messages are
kept in the room's own SQLite table ``messages`` (every message, not only the last 50;
``history(limit)`` reads back any page).
"""

from __future__ import annotations

import json
import math
from typing import Any, Final

from actors import DurableObject, WebSocket

#: json.dumps with these separators builds a new encoder on every call; this one is made once
_compact_json = json.JSONEncoder(separators=(",", ":")).encode

HISTORY_MESSAGES: Final = 50
MAX_USER_CHARS: Final = 64
MAX_TEXT_CHARS: Final = 4096
#: largest integer ``ts`` (JavaScript's Number.MAX_SAFE_INTEGER); floats need only be finite
MAX_SAFE_TS: Final = 2**53 - 1


class ChatRoom(DurableObject):
    """One chat room (see the module docstring for the protocol)."""

    async def on_connect(self, ws: WebSocket) -> None:
        ws.send({"type": "history", "messages": self._history(HISTORY_MESSAGES)})

    async def on_message(self, ws: WebSocket, data: Any) -> None:
        problem = _problem(data)
        if problem:
            ws.send({"type": "error", "message": problem})
            return
        self._post(data["user"], data["text"], data["ts"])

    async def post(self, user: str, text: str, ts: float | None = None) -> dict[str, Any]:
        """Post a message over HTTP; members on WebSockets receive it like any other."""
        when = self.env.now() if ts is None else ts
        problem = _problem({"user": user, "text": text, "ts": when})
        if problem:
            raise ValueError(problem)
        return self._post(user, text, when)

    async def history(self, limit: int = HISTORY_MESSAGES) -> list[dict[str, Any]]:
        """The last ``limit`` messages (at most 1,000), oldest first."""
        return self._history(max(0, min(int(limit), 1000)))

    def _post(self, user: str, text: str, ts: float) -> dict[str, Any]:
        seq = self.storage.get("seq", 0) + 1
        if seq == 1:
            self.storage.sql(
                "CREATE TABLE IF NOT EXISTS messages "
                "(seq INTEGER PRIMARY KEY, user TEXT NOT NULL, text TEXT NOT NULL, ts REAL NOT NULL)"
            )
        self.storage.sql("INSERT INTO messages VALUES (?, ?, ?, ?)", seq, user, text, ts)
        self.storage.put("seq", seq)
        message = {"user": user, "text": text, "ts": ts, "seq": seq}
        frame = _compact_json(message)  # encoded once for every member
        for member in self.sockets():
            member.send(message if member.binary else frame)
        return message

    def _history(self, limit: int) -> list[dict[str, Any]]:
        if not self.storage.get("seq") or limit == 0:
            return []  # never posted to: do not touch SQL (that would create the room's file)
        rows = self.storage.sql(
            "SELECT user, text, ts, seq FROM messages ORDER BY seq DESC LIMIT ?", limit
        ).dicts()
        rows.reverse()
        return rows


def _problem(data: Any) -> str | None:
    if not isinstance(data, dict):
        return 'expected an object {"user", "text", "ts"}'
    user, text, ts = data.get("user"), data.get("text"), data.get("ts")
    if not isinstance(user, str) or not 0 < len(user) <= MAX_USER_CHARS:
        return f"user must be a non-empty string of at most {MAX_USER_CHARS} characters"
    if not isinstance(text, str) or len(text) > MAX_TEXT_CHARS:
        return f"text must be a string of at most {MAX_TEXT_CHARS} characters"
    # an int is checked by size before math.isfinite, which cannot convert one past a float's range
    if isinstance(ts, bool) or not (
        (isinstance(ts, int) and -MAX_SAFE_TS <= ts <= MAX_SAFE_TS)
        or (isinstance(ts, float) and math.isfinite(ts))
    ):
        return f"ts must be a finite number (an integer within ±{MAX_SAFE_TS})"
    return None
