"""actors: Durable Objects-style stateful objects for trio, each with its own SQLite file.

The public façade. Implementation lives in private modules (``_name.py``); everything a user needs is
re-exported here, plus the public modules :mod:`actors.errors`, :mod:`actors.limits` and
:mod:`actors.testing`. Layering: this package imports neither ``server`` nor ``client`` nor any HTTP or
metrics library (``tests/test_layering.py`` enforces it).
"""

from __future__ import annotations

from . import errors as errors
from . import limits as limits
from ._alarms import ALARM_MAX_RETRIES as ALARM_MAX_RETRIES
from ._alarms import ALARM_RETRY_START_SECONDS as ALARM_RETRY_START_SECONDS
from ._app import App as App
from ._catalog import CatalogEntry as CatalogEntry
from ._codec import describe_unserializable as plain_value_problem
from ._folderlock import DataFolderInUse as DataFolderInUse
from ._hooks import ActivationStatistics as ActivationStatistics
from ._hooks import Hooks as Hooks
from ._hooks import RuntimeStatistics as RuntimeStatistics
from ._ids import ObjectId as ObjectId
from ._lifetime import open_runtime as open_runtime
from ._moves import AdoptOutcome as AdoptOutcome
from ._moves import Arrival as Arrival
from ._moves import Gate as Gate
from ._moves import Released as Released
from ._object import DurableObject as DurableObject
from ._object import Env as Env
from ._object import Stub as Stub
from ._runtime import Runtime as Runtime
from ._settings import Durability as Durability
from ._settings import Settings as Settings
from ._sockets import SocketHub as SocketHub
from ._sockets import SocketTransport as SocketTransport
from ._sockets import WebSocket as WebSocket
from ._storage import SqlResult as SqlResult
from ._storage import Storage as Storage

__all__ = [
    "ALARM_MAX_RETRIES",
    "ALARM_RETRY_START_SECONDS",
    "ActivationStatistics",
    "AdoptOutcome",
    "App",
    "Arrival",
    "CatalogEntry",
    "DataFolderInUse",
    "Durability",
    "DurableObject",
    "Env",
    "Gate",
    "Hooks",
    "ObjectId",
    "Released",
    "Runtime",
    "RuntimeStatistics",
    "Settings",
    "SocketHub",
    "SocketTransport",
    "SqlResult",
    "Storage",
    "Stub",
    "WebSocket",
    "errors",
    "limits",
    "open_runtime",
    "plain_value_problem",
]
