"""Counter: one strongly consistent integer per name.

Guarantees
- Every ``increment``/``decrement`` runs as one turn of the object, so concurrent calls never lose
  an update, and its new value is durable (committed, fsynced under the default durability) before
  the caller sees it.
- A counter that was never written reads 0.
- Subscribers (WebSocket ``/counter/{name}/ws``) first receive ``{"type": "value", "value": n}``,
  then the same frame after every change, in commit order, each only once the change is durable.
  Frames they send are ignored. With no subscriber, a change costs nothing extra (no encoding).
"""

from __future__ import annotations

from typing import Any

from actors import DurableObject, WebSocket
from actors.errors import InvalidArgument

_KEY = "value"


class Counter(DurableObject):
    """An integer that starts at 0."""

    async def on_connect(self, ws: WebSocket) -> None:
        ws.send({"type": "value", "value": self.storage.get(_KEY, 0)})

    async def increment(self, by: int = 1) -> int:
        """Add ``by`` (an int, may be negative) and return the new value.

        Raises InvalidArgument if ``by`` is not an int.
        """
        value: int = self.storage.get(_KEY, 0) + _check_step(by)
        self.storage.put(_KEY, value)
        self._notify(value)
        return value

    async def decrement(self, by: int = 1) -> int:
        """Subtract ``by`` and return the new value."""
        value: int = self.storage.get(_KEY, 0) - _check_step(by)
        self.storage.put(_KEY, value)
        self._notify(value)
        return value

    async def get(self) -> int:
        """The current value (0 if never written)."""
        value: int = self.storage.get(_KEY, 0)
        return value

    def _notify(self, value: int) -> None:
        sockets = self.sockets()
        if not sockets:
            return  # the HTTP benchmark path: nothing to encode
        frame = f'{{"type":"value","value":{value}}}'  # an int: encoded once for every subscriber
        for ws in sockets:
            ws.send({"type": "value", "value": value} if ws.binary else frame)


def _check_step(by: Any) -> int:
    if type(by) is not int:  # bool is an int subclass; True is not a step
        raise InvalidArgument(f"by must be an int, not {type(by).__name__}")
    return by
