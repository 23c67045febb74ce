"""The App the node tests serve with ``--app tests.server.probe_app:app``.

It is the example App (``examples/counter_app.py``, so the example is exercised) plus :class:`Probe`,
whose methods make a turn slow, raise, return (large) bytes or set an alarm on demand, and
:class:`SocketProbe`, a user class served on the generic WebSocket route.
"""

from __future__ import annotations

from typing import Any

import trio
from counter_app import app as example_app  # examples/ is on PYTHONPATH for the node processes

from actors import App, DurableObject, WebSocket


class Probe(DurableObject):
    async def on_start(self) -> None:
        if self.id.name.startswith("slowstart"):  # an activation that takes a while
            await trio.sleep(0.3)

    async def append(self, item: int) -> list[int]:
        """Append ``item`` to a stored list and return the list (the order calls were applied in)."""
        items: list[int] = [*self.storage.get("items", []), item]
        self.storage.put("items", items)
        return items

    async def echo(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        return {"args": list(args), "kwargs": kwargs}

    async def slow(self, seconds: float) -> int:
        """Count the call (durably, with the turn), then hold the turn for ``seconds``."""
        calls: int = self.storage.get("slow_calls", 0) + 1
        self.storage.put("slow_calls", calls)
        await trio.sleep(seconds)
        return calls

    async def slow_calls(self) -> int:
        calls: int = self.storage.get("slow_calls", 0)
        return calls

    async def fail(self, message: str) -> None:
        raise ValueError(message)

    async def blob(self) -> bytes:
        return b"\x00\xffbytes"

    async def big(self, size: int) -> bytes:
        """``size`` bytes: a reply as large as the test needs, from a small call."""
        return b"x" * size

    async def alarm_now(self) -> None:
        self.storage.set_alarm(0.0)  # long past: the scheduler fires it as soon as it commits

    async def alarm(self) -> None:
        self.storage.put("alarms", self.storage.get("alarms", 0) + 1)

    async def alarms(self) -> int:
        count: int = self.storage.get("alarms", 0)
        return count


class SocketProbe(DurableObject):
    """Echoes every message; its object name picks how ``on_connect`` behaves.

    Names starting with ``raise`` make ``on_connect`` raise, ``refuse`` close with 4001; any other
    socket first gets ``{"type": "hello", "binary": ws.binary, "params": ws.params}``. A message
    ``"raise"`` makes ``on_message`` raise after a send and a write, both of which must be dropped.
    """

    async def on_connect(self, ws: WebSocket) -> None:
        name = self.id.name or ""
        if name.startswith("raise"):
            raise RuntimeError("on_connect refused it")
        if name.startswith("refuse"):
            ws.close(4001, "go away")
            return
        ws.send({"type": "hello", "binary": ws.binary, "params": ws.params})

    async def on_message(self, ws: WebSocket, data: Any) -> None:
        self.storage.put("messages", self.storage.get("messages", 0) + 1)
        if data == "raise":
            ws.send({"type": "never sent"})
            raise LookupError("on_message failed")
        ws.send({"type": "echo", "data": data, "messages": self.storage.get("messages")})

    async def messages(self) -> int:
        count: int = self.storage.get("messages", 0)
        return count

    async def flood(self, frames: int, size: int) -> int:
        """Send ``frames`` binary frames of ``size`` bytes to every open socket; returns the sockets."""
        sockets = self.sockets()
        for _ in range(frames):
            for ws in sockets:
                ws.send(b"x" * size)
        return len(sockets)


app = example_app.merged(App([Probe, SocketProbe]))


def _clashing_counter() -> type[DurableObject]:
    class Counter(DurableObject):  # same name as the built-in room, different class
        async def get(self) -> int:
            return 0

    return Counter


#: ``--app tests.server.probe_app:clashing`` must be refused at startup
clashing = [_clashing_counter()]
