"""The objects this node sent to another node without learning the outcome yet, kept on disk.

A handoff's outcome is unknown from the moment the adopt message leaves until its answer arrives: the
new owner may have stored the object, or not. In memory the mover keeps such objects *moving*
(activated for no one, sent again, asked for before this node serves them again; ``handoff.py``).
This log makes that survive a crash: before a batch leaves, its objects and their destination are
appended to ``<data-dir>/handoff-sent.jsonl`` and fsynced; once the outcome is known they are marked
done. At start the mover takes every object not marked done as moving again.

Guarantees
- :meth:`SentLog.sending` returns only once the record is durable, so an object whose adopt
  message left is always found at start, until :meth:`SentLog.done` marked it.
- A lost ``done`` record (a crash right after the outcome) only makes the node ask again: the new
  owner answers ``already_held`` or "not held", and the object is resolved as before. So ``done``
  records are not fsynced, and the file is emptied (not durably) whenever nothing is open.
- A torn last line (a crash mid-append) is ignored: its batch had not left (the send waits for the
  fsync).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Final

import trio

__all__ = ["SENT_LOG_FILE", "SentLog"]

log = logging.getLogger("server.cluster")

SENT_LOG_FILE: Final = "handoff-sent.jsonl"


class SentLog:
    """Sent objects whose outcome is unknown, by hex id, with the node they went to."""

    def __init__(self, path: Path) -> None:
        self._path = path
        #: hex id -> node, for every object sent and not marked done
        self.open: dict[str, str] = {}
        self._lock = trio.Lock()

    def load(self) -> dict[str, str]:
        """Read the log (at start): the objects whose last send has no known outcome."""
        try:
            lines = self._path.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            return {}
        for number, line in enumerate(lines, 1):
            try:
                record = json.loads(line)
                if "to" in record:
                    self.open.update(dict.fromkeys(record["ids"], str(record["to"])))
                else:
                    for key in record["done"]:
                        self.open.pop(key, None)
            except (ValueError, KeyError, TypeError):
                if number == len(lines):  # torn by a crash mid-append: that batch never left
                    break
                raise ValueError(f"{self._path}: line {number} is not a handoff record") from None
        if self.open:
            log.warning(
                "objects sent before a restart without a known outcome: asking before serving them",
                extra={"event": "handoff_unknown_at_start", "objects": len(self.open)},
            )
        return dict(self.open)

    async def sending(self, node: str, keys: list[str]) -> None:
        """Record durably that ``keys`` are about to be sent to ``node``."""
        line = json.dumps({"to": node, "ids": keys}, separators=(",", ":")) + "\n"
        async with self._lock:
            await trio.to_thread.run_sync(_append, self._path, line, True)
            self.open.update(dict.fromkeys(keys, node))

    async def done(self, keys: Iterable[str]) -> None:
        """Record that the outcome of ``keys`` is known (stored there, or not sent after all)."""
        known = [key for key in keys if key in self.open]
        if not known:
            return
        async with self._lock:
            for key in known:
                self.open.pop(key, None)
            if self.open:
                line = json.dumps({"done": known}, separators=(",", ":")) + "\n"
                await trio.to_thread.run_sync(_append, self._path, line, False)
            else:
                await trio.to_thread.run_sync(_empty, self._path)


def _append(path: Path, line: str, durable: bool) -> None:
    new = not path.exists()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        data = memoryview(line.encode())
        while data:
            data = data[os.write(fd, data) :]
        if durable:
            os.fdatasync(fd)
    finally:
        os.close(fd)
    if new and durable:  # the file's entry in its folder, once
        folder = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)


def _empty(path: Path) -> None:
    try:
        os.truncate(path, 0)
    except FileNotFoundError:
        pass
