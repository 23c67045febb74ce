"""Histories of counter calls and of object activations, and the checks a correct cluster passes.

Guarantees checked (``check_counters``), per counter, for a history of ``increment`` (by 1, result:
the new value) and ``read`` calls on counters that started at 0:

- nothing doubled: no two acknowledged increments returned the same value;
- nothing from the future: every value returned (increments and reads) is at most the final value;
- nothing lost, nothing invented: acknowledged <= final <= acknowledged + unknown increments;
- real-time order (linearizability for a counter that only grows): a call started after another call
  completed sees at least the value that call saw, and an increment sees more; in particular one
  client's reads never go backwards and its acknowledged increments strictly increase.

``check_single_writer`` takes the ``object_opened``/``object_closed`` events the nodes log (JSON lines,
``parse_object_events``) and checks that no object was ever live on two nodes at once. A node killed
with SIGKILL logs no close: its open intervals end at its kill (``killed_at``, recorded by the test
just after the kill); an interval still open at the end of the test lasts forever.

Every time is wall-clock seconds (``time.time()``), the clock of the nodes' ``"t"`` fields, so calls,
kills and log events lie on one time line. Calls are timed by the client (invoked before the request
is sent, completed after its answer arrived), so a call's real interval lies inside the recorded one
and the real-time checks never blame a correct server. Each check returns a list of violations in
words, empty when the history passes, at most ``MAX_REPORTED`` lines.
"""

from __future__ import annotations

import bisect
import enum
import json
import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from actors import DurableObject, ObjectId

__all__ = [
    "MAX_REPORTED",
    "History",
    "ObjectEvent",
    "Op",
    "Outcome",
    "check_counters",
    "check_single_writer",
    "object_hex",
    "parse_object_events",
]

#: violations reported by one check; the rest are counted in one last line
MAX_REPORTED = 30

Kind = Literal["increment", "read"]


class Outcome(enum.StrEnum):
    OK = "ok"  # answered with a value: the call ran (an increment's write is durable)
    FAILED = "failed"  # definitely did not run (refused before reaching the object)
    UNKNOWN = "unknown"  # may or may not have run (no answer, or an answer that cannot tell)


@dataclass(frozen=True, slots=True)
class Op:
    """One call as its client saw it."""

    client: str  # one caller: at most one call in flight, so its calls are ordered
    name: str  # the counter's name
    kind: Kind
    invoked: float  # before the request left (wall clock)
    completed: float  # after the answer (or the failure) arrived
    outcome: Outcome
    value: int | None = None  # the result, for OK only
    detail: str = ""  # why FAILED or UNKNOWN (status and error type, exception class), and where

    def __post_init__(self) -> None:
        if (self.outcome is Outcome.OK) != (self.value is not None):
            raise ValueError(f"an OK op has a value and only an OK op has one: {self}")

    def describe(self, origin: float) -> str:
        result = self.value if self.outcome is Outcome.OK else f"{self.outcome} {self.detail}".strip()
        return (
            f"{self.client} {self.kind} [{self.invoked - origin:.3f}, {self.completed - origin:.3f}]"
            f" -> {result}"
        )


@dataclass
class History:
    """Every call of a test, appended as calls complete (trio tasks share it without locks)."""

    ops: list[Op] = field(default_factory=list)

    def record(self, op: Op) -> None:
        self.ops.append(op)

    def counts(self) -> dict[str, int]:
        """Calls per outcome: ``{"ok": n, "failed": n, "unknown": n}``."""
        tally = dict.fromkeys(map(str, Outcome), 0)
        for op in self.ops:
            tally[op.outcome] += 1
        return tally


#### Counters


def check_counters(history: History | Sequence[Op], final_values: Mapping[str, int]) -> list[str]:
    """The violations of the counter guarantees (module docstring) in ``history``; [] if none.

    ``final_values`` holds each counter's value read after every call ended; a counter of the
    history missing from it is a violation (its final value was never read).
    """
    ops = history.ops if isinstance(history, History) else list(history)
    origin = min((op.invoked for op in ops), default=0.0)
    by_name: dict[str, list[Op]] = defaultdict(list)
    for op in ops:
        by_name[op.name].append(op)
    problems: list[str] = []
    for name in sorted(by_name):
        if name not in final_values:
            problems.append(f"{name}: no final value")
            continue
        problems += [f"{name}: {p}" for p in _check_counter(by_name[name], final_values[name], origin)]
    return _bounded(problems)


def _check_counter(ops: list[Op], final: int, origin: float) -> list[str]:
    problems: list[str] = []
    ok = [op for op in ops if op.outcome is Outcome.OK]
    increments = [op for op in ok if op.kind == "increment"]
    unknown = sum(1 for op in ops if op.kind == "increment" and op.outcome is Outcome.UNKNOWN)
    by_value: dict[int, list[Op]] = defaultdict(list)
    for op in increments:
        by_value[op.value or 0].append(op)
    for value, same in sorted(by_value.items()):
        if len(same) > 1:
            calls = "; ".join(op.describe(origin) for op in same)
            problems.append(f"value {value} returned by {len(same)} acknowledged increments: {calls}")
    for op in ok:
        if (op.value or 0) > final:
            problems.append(f"returned {op.value} above the final value {final}: {op.describe(origin)}")
    if final < len(increments):
        problems.append(f"lost writes: final value {final} < {len(increments)} acknowledged increments")
    if final > len(increments) + unknown:
        problems.append(
            f"invented writes: final value {final} > {len(increments)} acknowledged"
            f" + {unknown} unknown increments"
        )
    return problems + _check_real_time(ok, origin)


def _check_real_time(ok: list[Op], origin: float) -> list[str]:
    """Every OK call sees at least the largest value of the OK calls completed before it started
    (an increment sees more); per client, with one call in flight, that is program order too."""
    problems: list[str] = []
    done = sorted(ok, key=lambda op: op.completed)
    ends = [op.completed for op in done]
    best: list[Op] = []  # best[i]: the latest op with the largest value among done[: i + 1]
    for op in done:
        best.append(op if not best or (op.value or 0) >= (best[-1].value or 0) else best[-1])
    for op in sorted(ok, key=lambda op: op.invoked):
        before = bisect.bisect_left(ends, op.invoked)  # the ops completed strictly before op started
        if before == 0:
            continue
        seen = best[before - 1]
        value, floor = op.value or 0, seen.value or 0
        if value < floor or (op.kind == "increment" and value == floor):
            who = "the same client" if seen.client == op.client else "another client"
            problem = "went backwards" if op.kind == "read" else "did not exceed an earlier value"
            problems.append(
                f"{op.kind} {problem}: {op.describe(origin)} started after {who}'s"
                f" {seen.describe(origin)} completed"
            )
    return problems


def _bounded(problems: list[str]) -> list[str]:
    if len(problems) <= MAX_REPORTED:
        return problems
    return [*problems[: MAX_REPORTED - 1], f"... and {len(problems) - MAX_REPORTED + 1} more"]


#### Objects live on one node at a time


@dataclass(frozen=True, slots=True)
class ObjectEvent:
    """A node opened (activated) or closed an object, as its log says."""

    node: str
    object: str  # the object id, 64 hex digits (``object_hex``)
    kind: Literal["opened", "closed"]
    time: float  # wall clock, the node's ``"t"``
    epoch: int | None = None  # the membership epoch the node opened it under, when logged


_EVENT_KINDS: dict[str, Literal["opened", "closed"]] = {
    "object_opened": "opened",
    "object_closed": "closed",
}


def parse_object_events(paths: Iterable[Path]) -> list[ObjectEvent]:
    """The ``object_opened``/``object_closed`` events of the JSON-lines logs ``paths``, in file order.

    Every other line is skipped: text lines, other events, tracebacks, and the half-written last
    line of a node killed mid-write. A missing file holds no events.
    """
    events: list[ObjectEvent] = []
    for path in paths:
        if not path.exists():
            continue
        for line in path.read_text(errors="replace").splitlines():
            event = _parse_line(line)
            if event is not None:
                events.append(event)
    return events


def _parse_line(line: str) -> ObjectEvent | None:
    if not line.startswith("{"):
        return None
    try:
        record = json.loads(line)
    except ValueError:
        return None
    if not isinstance(record, dict) or record.get("event") not in _EVENT_KINDS:
        return None
    node, obj, t, epoch = record.get("node"), record.get("object"), record.get("t"), record.get("epoch")
    if not (isinstance(node, str) and isinstance(obj, str) and isinstance(t, int | float)):
        return None
    return ObjectEvent(
        node, obj, _EVENT_KINDS[record["event"]], float(t), epoch if isinstance(epoch, int) else None
    )


@dataclass(frozen=True, slots=True)
class _Interval:
    node: str
    start: float
    end: float
    how: str  # how it ended: "closed", "killed", "still open"


def check_single_writer(
    events: Iterable[ObjectEvent], killed_at: Mapping[str, Sequence[float]] | None = None
) -> list[str]:
    """The violations of "an object is live on at most one node at a time"; [] if none.

    Per object and node, an ``opened`` starts an interval and the next ``closed`` ends it; an
    interval never closed ends at the first kill of its node after it opened (``killed_at``: node
    id -> wall-clock times of its SIGKILLs), or never. Intervals that merely touch do not overlap.
    An ``opened`` on a node where the object is already open with no kill in between, and a
    ``closed`` with nothing open, are violations too (the log no longer tells the truth).
    """
    kills = {node: sorted(times) for node, times in (killed_at or {}).items()}
    by_key: dict[tuple[str, str], list[ObjectEvent]] = defaultdict(list)
    for event in events:
        by_key[(event.object, event.node)].append(event)
    problems: list[str] = []
    intervals: dict[str, list[_Interval]] = defaultdict(list)
    for (obj, node), seq in sorted(by_key.items()):
        found, odd = _intervals(sorted(seq, key=lambda e: e.time), kills.get(node, []))
        intervals[obj] += found
        problems += [f"object {obj[:16]} on {node}: {p}" for p in odd]
    for obj, spans in sorted(intervals.items()):
        problems += [f"object {obj[:16]}: {p}" for p in _overlaps(spans)]
    return _bounded(problems)


def _intervals(events: list[ObjectEvent], kills: list[float]) -> tuple[list[_Interval], list[str]]:
    found: list[_Interval] = []
    odd: list[str] = []
    opened: float | None = None
    for event in events:
        if opened is not None:
            kill = _first_kill_after(kills, opened)
            if kill is not None and kill <= event.time:  # the node died before this event
                found.append(_Interval(event.node, opened, kill, "killed"))
                opened = None
        if event.kind == "opened":
            if opened is not None:
                odd.append(f"opened at {event.time:.3f} while open since {opened:.3f}")
                found.append(_Interval(event.node, opened, event.time, "opened again"))
            opened = event.time
        elif opened is None:
            odd.append(f"closed at {event.time:.3f} while not open")
        else:
            found.append(_Interval(event.node, opened, event.time, "closed"))
            opened = None
    if opened is not None:
        kill = _first_kill_after(kills, opened)
        node = events[-1].node
        found.append(_Interval(node, opened, math.inf, "still open") if kill is None else
                     _Interval(node, opened, kill, "killed"))  # fmt: skip
    return found, odd


def _first_kill_after(kills: list[float], t: float) -> float | None:
    i = bisect.bisect_right(kills, t)
    return kills[i] if i < len(kills) else None


def _overlaps(spans: list[_Interval]) -> list[str]:
    problems: list[str] = []
    spans = sorted(spans, key=lambda s: s.start)
    for i, first in enumerate(spans):
        for second in spans[i + 1 :]:
            if second.start >= first.end:
                break  # sorted by start: no later span starts before first ends either
            if second.node != first.node:
                problems.append(f"live on {_show(first)} and on {_show(second)} at once")
    return problems


def _show(span: _Interval) -> str:
    return f"{span.node} [{span.start:.3f}, {span.end:.3f}] ({span.how})"


def object_hex(cls: str | type[DurableObject], name: str) -> str:
    """The id (64 hex digits) the nodes give ``name`` in ``cls``, as in their logs and file names."""
    return ObjectId.from_name(cls if isinstance(cls, str) else cls.__name__, name).hex
