"""The old owner's ``Mover`` against a real runtime and a peer that answers when the test lets it.

No processes: the router is a small stand-in with what the mover reads of a ``Cluster`` (its epoch,
its map, its links), every object belongs to "n2" under it, and n2's link records each ``adopt``
and answers "stored" once the test sets ``go``. The runtime's I/O runs inline, so
``wait_all_tasks_blocked`` sees the mover's work through.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, cast

import pytest
import trio
import trio.testing

from actors import App, ObjectId, open_runtime
from actors.errors import ActorError, OwnerUnavailable
from server.cluster import handoff, handoff_plan
from server.cluster.handoff import MOVE_CONCURRENCY, RELEASED_AHEAD, Mover

from ..actors.objects import Counter

APP = App([Counter])
ELSEWHERE = OwnerUnavailable("owned by n2", node="n2")


class RefuseAll:
    """The gate of a node that owns nothing any more."""

    def may_activate(self, object_id: ObjectId) -> ActorError | None:
        return ELSEWHERE

    async def admit(self, object_id: ObjectId, deadline: float) -> None:
        raise ELSEWHERE

    def may_write(self) -> ActorError | None:
        return None


class Peer:
    """n2's end of the link: records the names in each adopt, answers once ``go`` is set."""

    def __init__(self, expected: int) -> None:
        self.adopts: list[list[str]] = []
        self.go = trio.Event()
        self.expected = expected
        self.all_arrived = trio.Event()  # ``expected`` adopts arrived

    async def call(self, cls: str, name: str, operation: str, args: Any, kwargs: dict[str, Any]) -> Any:
        assert operation == handoff.ADOPT_OPERATION
        self.adopts.append([entry["name"] for entry in kwargs["objects"]])
        if len(self.adopts) == self.expected:
            self.all_arrived.set()
        await self.go.wait()
        return {"outcomes": [{"id": entry["id"], "outcome": "stored"} for entry in kwargs["objects"]]}


class Everything:
    """A map that places every object on n2."""

    def owner(self, hex_id: str) -> tuple[str, ...]:
        return ("n2",)


class Router:
    """What the mover reads of n1's ``Cluster``."""

    def __init__(self, peer: Peer) -> None:
        self.epoch = 2
        self.self_id = "n1"
        self.map = Everything()
        self.links = {"n2": peer}

    def owns_hex(self, hex_id: str) -> bool:
        return False


class Counted:
    def __init__(self, expected: int) -> None:
        self.handed = 0
        self.expected = expected
        self.all_handed = trio.Event()

    def handed_off(self, objects: int) -> None:
        self.handed += objects
        if self.handed == self.expected:
            self.all_handed.set()

    def received(self, objects: int) -> None:
        raise AssertionError("n1 receives nothing here")


async def test_batches_are_released_ahead_while_the_batches_in_flight_wait_for_their_answers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While ``MOVE_CONCURRENCY`` batches wait for the new owner, ``RELEASED_AHEAD`` more are
    released (evicted, read) already, and no more: the next batch leaves as soon as a slot frees."""
    monkeypatch.setattr(handoff_plan, "BATCH_OBJECTS", 2)
    monkeypatch.setattr(handoff, "HOT_SECONDS", 0.0)  # none of them goes first in a hot batch
    batches = MOVE_CONCURRENCY + RELEASED_AHEAD + 1
    names = [f"c{i}" for i in range(2 * batches)]
    ids = [APP.id_from_name("Counter", name) for name in names]
    peer = Peer(MOVE_CONCURRENCY)
    async with open_runtime(APP, tmp_path, io_in_threads=False) as runtime:
        for object_id in ids:
            await runtime.call(object_id, "increment")
        runtime.set_gate(RefuseAll())
        metrics = Counted(len(ids))
        mover = Mover(cast(Any, Router(peer)), runtime, metrics, rate=math.inf, max_message_bytes=1 << 20)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(mover.run)
            with trio.fail_after(10):  # the scan reads the catalog in a thread
                await peer.all_arrived.wait()
            await trio.testing.wait_all_tasks_blocked()
            assert len(peer.adopts) == MOVE_CONCURRENCY
            live = [name for name, object_id in zip(names, ids, strict=True) if runtime.is_live(object_id)]
            assert live == names[:2]  # every batch released but the last (the least recently active)
            peer.go.set()
            with trio.fail_after(10):
                await metrics.all_handed.wait()
            nursery.cancel_scope.cancel()
        assert sorted(name for adopt in peer.adopts for name in adopt) == sorted(names)  # each once
        assert metrics.handed == len(names)
        assert runtime.count_objects() == 0
