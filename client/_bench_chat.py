"""``actors bench --workload chat-fanout``: R rooms x M members on WebSocket ``/chat/{room}``, checked.

The protocol is the node's chat room (``server/rooms/_chat.py``, the benchmark contract): on join a
member first receives ``{"type": "history", ...}``; it sends ``{"user", "text", "ts"}``; every member,
the sender included, receives ``{"user", "text", "ts", "seq"}`` with ``seq`` growing by one per room;
a refused message gets ``{"type": "error", ...}`` back to its sender only.

A run
1. Join. Every member opens its own socket (``client.websocket``; the SDK connection carries no
   calls here) and waits for the history frame. Only when every member of every room has joined does
   the first message leave, so every member must receive every message of its room. A member that
   cannot join fails the whole run (the error is raised, as for an unreachable node).
2. Load. Each member sends ``{"user": "m<j>", "text": "<k>", "ts": <epoch seconds>}`` and sends its
   next message once its own came back (closed loop): one op is one message sent and echoed, and its
   latency is send → echo. Each member's reader reads all the time, so the node never closes a
   member for falling behind (``MAX_SEND_QUEUE_FRAMES``). Delivered msgs/s counts every message frame
   any member received while measuring.
3. Drain. When the run stops, members finish their message in flight; once every member of a room
   stopped sending, each member reads until it holds every message of the room (bounded by the call
   timeout).

Checks (``violations``; a clean run has none), per member:
    ``order``     a seq not above the last one it received (a duplicate or a reordering)
    ``missing``   messages of its room it never received (counted after the drain)
    ``mismatch``  a seq whose message differs from what another member received under that seq
    ``unexpected`` a frame that is neither a message (with a seq) nor an error frame
A member whose socket failed during the load is counted as an error and left out of the checks.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TextIO

import trio

from actors.errors import ActorError

from . import Client, ObjectSocket, connect
from ._bench_run import Phase, Run
from .errors import ClientError


@dataclass(eq=False, slots=True)
class _Room:
    name: str
    sending: int  # members still sending; at 0 ``done`` is set and ``sent`` is final
    sent: int = 0  # messages the node accepted (sent, minus those answered with an error frame)
    done: trio.Event = field(default_factory=trio.Event)
    by_seq: dict[int, str] = field(default_factory=dict)  # seq -> "user\0text", as first received

    def stop_sending(self) -> None:
        self.sending -= 1
        if self.sending == 0:
            self.done.set()


@dataclass(eq=False, slots=True)
class _Member:
    room: _Room
    user: str
    received: int = 0  # message frames received in seq order
    last_seq: int = 0
    pending: str | None = None  # the text of its own message in flight
    outcome: str | None = None  # None: echoed; else the error type that answered it
    echo: trio.Event = field(default_factory=trio.Event)
    caught_up: trio.Event = field(default_factory=trio.Event)
    failed: bool = False  # its socket failed: left out of the checks


@dataclass(eq=False, slots=True)
class _Countdown:
    left: int
    zero: trio.Event = field(default_factory=trio.Event)

    def done(self) -> None:
        self.left -= 1
        if self.left == 0:
            self.zero.set()


async def run_chat(run: Run, progress: TextIO | None, prefix: str) -> list[dict[str, str]]:
    """Run chat-fanout into ``run.recorder``; return the rooms it used."""
    options = run.options
    rooms = [_Room(f"{prefix}room{r}", sending=options.members) for r in range(options.rooms)]
    members = [_Member(room, f"m{j}") for room in rooms for j in range(options.members)]
    joined, go = _Countdown(len(members)), trio.Event()
    connection = connect(options.url, token=options.token, timeout=options.timeout)
    async with connection as client, trio.open_nursery() as outer:
        async with trio.open_nursery() as nursery:
            for member in members:
                nursery.start_soon(_serve_member, run, client, member, joined, go)
            with trio.fail_after(options.timeout):
                await joined.zero.wait()
            outer.start_soon(run.serve_clock, progress)
            if run.phase is Phase.MEASURE:
                run.start_measuring()
            go.set()
        run.finish()
        outer.cancel_scope.cancel()
    for member in members:
        if not member.failed and member.received < member.room.sent:
            run.recorder.violations["missing"] += member.room.sent - member.received
    return [{"class": "ChatRoom", "name": room.name} for room in rooms]


async def _serve_member(
    run: Run, client: Client, member: _Member, joined: _Countdown, go: trio.Event
) -> None:
    room = member.room
    async with client.websocket("ChatRoom", room.name, path=f"/chat/{room.name}") as ws:
        history = await ws.receive()
        if not (isinstance(history, dict) and history.get("type") == "history"):
            raise RuntimeError(f"{room.name}: expected the history frame first, got {history!r}")
        if history.get("messages"):
            raise RuntimeError(f"{room.name}: the room is not fresh")
        joined.done()
        await go.wait()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_serve_reader, run, ws, member)
            try:
                await _send_loop(run, ws, member)
            finally:
                room.stop_sending()
            await room.done.wait()
            if not member.failed and member.received < room.sent:
                with trio.move_on_after(run.options.timeout):
                    await member.caught_up.wait()
            nursery.cancel_scope.cancel()


async def _send_loop(run: Run, ws: ObjectSocket, member: _Member) -> None:
    rec, clock, room = run.recorder, time.perf_counter_ns, member.room
    sequence = 0
    while not member.failed:
        phase = run.next_call()
        if phase is Phase.STOP:
            return
        sequence += 1
        member.pending, member.outcome, member.echo = str(sequence), None, trio.Event()
        start = clock()
        try:
            await ws.send({"user": member.user, "text": member.pending, "ts": time.time()})
        except (ClientError, ActorError) as exc:
            _fail(run, member, phase, type(exc).__name__)
            return
        room.sent += 1
        with trio.move_on_after(run.options.timeout) as wait:
            await member.echo.wait()
        if wait.cancelled_caught:
            _fail(run, member, phase, "EchoTimeout")
            return
        if member.outcome is not None:
            room.sent -= 1  # answered with an error frame: never posted, nobody receives it
            run.failed(phase, member.outcome)
        elif phase is Phase.MEASURE:
            rec.latency.record(clock() - start)
            rec.ok += 1
        else:
            rec.warmup_ok += 1


async def _serve_reader(run: Run, ws: ObjectSocket, member: _Member) -> None:
    rec, room = run.recorder, member.room
    try:
        async for frame in ws:
            seq = frame.get("seq") if isinstance(frame, dict) else None
            if type(seq) is not int:
                if isinstance(frame, dict) and frame.get("type") == "error":
                    member.outcome = str(frame.get("error") or "ChatError")
                    member.echo.set()
                    continue
                rec.violations["unexpected"] += 1  # neither a message nor an error frame
                continue
            if run.phase is not Phase.WARMUP:
                rec.delivered += 1
            key = f"{frame.get('user')}\0{frame.get('text')}"
            if room.by_seq.setdefault(seq, key) != key:
                rec.violations["mismatch"] += 1
            if seq <= member.last_seq:
                rec.violations["order"] += 1
            else:
                member.last_seq = seq
                member.received += 1
            if frame.get("user") == member.user and frame.get("text") == member.pending:
                member.pending = None
                member.echo.set()
            if room.done.is_set() and member.received >= room.sent:
                member.caught_up.set()
    except (ClientError, ActorError) as exc:
        _fail(run, member, run.phase, type(exc).__name__)
        return
    _fail(run, member, run.phase, "ConnectionClosed")  # the node closed the socket


def _fail(run: Run, member: _Member, phase: Phase, kind: str) -> None:
    if member.failed:
        return
    member.failed = True
    run.failed(Phase.MEASURE if phase is Phase.STOP else phase, kind)
    member.echo.set()
    member.caught_up.set()
