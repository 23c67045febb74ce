"""client: the Python SDK for an actors node or cluster (trio-native; ``client.sync`` blocks).

    from client import connect

    async with connect("http://127.0.0.1:8080", token=...) as c:
        counter = c.get(Counter, "home")          # typed as Counter; or c.get("Counter", "home")
        value = await counter.increment(by=2)
        async with c.websocket("ChatRoom", "lobby", path="/chat/lobby") as ws:
            await ws.send({"user": "ann", "text": "hi", "ts": 0})
            async for message in ws: ...

Calls travel as CBOR frames (``actors/wire.py``) over one persistent WebSocket per node, many at
once, batched into shared messages; the retry policy and the errors are in ``client/_client.py``
and :mod:`client.errors`. Layering: imports ``actors`` (ids, errors, the wire format), never
``server`` (``tests/test_layering.py``).
"""

from __future__ import annotations

from . import errors as errors
from ._calls import REPLY_GRACE_SECONDS as REPLY_GRACE_SECONDS
from ._client import DEFAULT_TIMEOUT as DEFAULT_TIMEOUT
from ._client import Client as Client
from ._client import ClientStatistics as ClientStatistics
from ._client import connect as connect
from ._connection import ConnectionStatistics as ConnectionStatistics
from ._stub import RemoteMethod as RemoteMethod
from ._stub import Stub as Stub
from ._websocket import ObjectSocket as ObjectSocket
from .errors import ClientError as ClientError
from .errors import ConnectionLost as ConnectionLost
from .errors import OutcomeUnknown as OutcomeUnknown
from .errors import Rejected as Rejected
from .errors import RemoteError as RemoteError
from .errors import ReplyTimeout as ReplyTimeout
from .errors import SocketClosed as SocketClosed
from .errors import Unreachable as Unreachable

__all__ = [
    "DEFAULT_TIMEOUT",
    "REPLY_GRACE_SECONDS",
    "Client",
    "ClientError",
    "ClientStatistics",
    "ConnectionLost",
    "ConnectionStatistics",
    "ObjectSocket",
    "OutcomeUnknown",
    "Rejected",
    "RemoteError",
    "RemoteMethod",
    "ReplyTimeout",
    "SocketClosed",
    "Stub",
    "Unreachable",
    "connect",
    "errors",
]
