"""Structured logging: one line per event, as ``key=value`` text or as a JSON object.

Guarantees
- Every record is exactly one line: messages and tracebacks are escaped (JSON) or quoted (text), so
  a log shipper never splits an event.
- Fields passed with ``extra={...}`` become keys of the line (``event``, ``url``, ``reference``...).
- Only the root logger gets a handler (stderr); hypercorn's own logger goes through it too.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

__all__ = ["configure_logging"]

#: attributes every LogRecord has; anything else on a record came from ``extra``
_STANDARD = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
        "level": record.levelname.lower(),
        "logger": record.name,
        "msg": record.getMessage(),
    }
    for key, value in record.__dict__.items():
        if key not in _STANDARD and not key.startswith("_"):
            fields[key] = value
    if record.exc_info:
        fields["exc"] = logging.Formatter().formatException(record.exc_info)
    return fields


class JsonFormatter(logging.Formatter):
    """One JSON object per line."""

    def format(self, record: logging.LogRecord) -> str:
        return json.dumps(_fields(record), default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """``ts level logger msg key=value ...`` on one line; values with spaces are JSON-quoted."""

    def format(self, record: logging.LogRecord) -> str:
        fields = _fields(record)
        head = [
            fields.pop("ts"),
            fields.pop("level").upper(),
            fields.pop("logger"),
            _quote(fields.pop("msg")),
        ]
        return " ".join(head + [f"{key}={_quote(value)}" for key, value in fields.items()])


def _quote(value: Any) -> str:
    text = value if isinstance(value, str) else str(value)
    if text and not any(c in text for c in ' "=\n\r\t'):
        return text
    return json.dumps(text, ensure_ascii=False)


def configure_logging(level: str, fmt: str) -> None:
    """Send every log record to stderr, one line each, in ``fmt`` (``text`` or ``json``)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # hypercorn logs "Running on ..." itself; the node's own "listening" event says the same
    logging.getLogger("hypercorn.error").setLevel(max(root.level, logging.WARNING))
    # the etcd client's HTTP library logs every request at INFO (a lease renewal every 2 s)
    logging.getLogger("httpx").setLevel(max(root.level, logging.WARNING))
