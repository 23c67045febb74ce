"""Hooks (events the node counts) and the statistics dataclasses.

The runtime reports events through a :class:`Hooks` object with no-op defaults; ``server/metrics.py``
implements it with Prometheus, so ``actors`` never imports a metrics library (workerd's ``InputGate::Hooks``
does the same for the same reason). Hooks run on the trio thread and must not block or raise.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._ids import ObjectId


class Hooks:
    """Override any of these; each is called synchronously and must be cheap."""

    def call_finished(self, cls: str, method: str, outcome: str, seconds: float) -> None:
        """A call returned to its caller; ``outcome`` is ``"ok"`` or the error's ``type``."""

    def turn_finished(self, cls: str, method: str, seconds: float) -> None:
        """A turn ran (``seconds`` is the turn alone, without queueing or commit)."""

    def activated(self, cls: str, seconds: float) -> None:
        """An object was activated (file opened, ``on_start`` ran)."""

    def evicted(self, cls: str, reason: str) -> None:
        """An object left memory: ``idle``, ``capacity``, ``reset``, ``forced``, ``shutdown`` or ``moved``
        (``Runtime.release``)."""

    def object_opened(self, object_id: ObjectId) -> None:
        """An activation is about to open (or create) the object's file; none of its turns ran yet.

        With ``object_closed`` it brackets every access of one activation to the file: per activation
        exactly one ``object_opened``, then exactly one ``object_closed`` once the file handle is closed
        (eviction, release, reset, shutdown), even if activating failed. A history checker can assert
        that no two nodes hold one object open at once.
        """

    def object_closed(self, object_id: ObjectId) -> None:
        """The activation's file handle is closed (see ``object_opened``)."""

    def committed(self, seconds: float, turns: int) -> None:
        """A batch of ``turns`` turns committed, taking ``seconds``."""

    def synced(self, seconds: float, objects: int) -> None:
        """A durability round made the commits of ``objects`` objects durable in ``seconds`` (or failed
        to; the failed ones are reset). Called before any reply that waited for it is released."""

    def alarm_finished(self, cls: str, outcome: str) -> None:
        """An alarm ran: ``ok``, ``retry`` (raised, will retry) or ``failed`` (retries exhausted)."""

    def internal_error(self, reference: str, message: str) -> None:
        """Something failed inside the runtime; ``reference`` is what the caller was shown."""


@dataclass(frozen=True, slots=True)
class ActivationStatistics:
    queued: int  # calls waiting for their turn
    running: bool  # a turn is in progress
    batches: int  # batches committed by this activation
    turns_committed: int  # turns in those batches


@dataclass(frozen=True, slots=True)
class RuntimeStatistics:
    live_objects: int  # activations in memory (including those being evicted)
    queued_calls: int  # calls waiting in all queues
    max_queue_depth: int  # the longest queue
    commits_in_flight: int  # batches whose COMMIT is running now
    batches_committed: int  # since the runtime opened
    turns_committed: int  # since the runtime opened
    pending_alarms: int  # alarms the scheduler holds in memory: the next ones due (ALARM_WINDOW), and retries
    open_sockets: int  # WebSockets held for objects (live or evicted)
    open_files: int  # live objects whose SQLite file is open (at most max_open_files, busy ones aside)
    files_rested: int  # files of live objects closed to keep within max_open_files, since the runtime opened
