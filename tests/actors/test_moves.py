"""Moving objects between nodes, the runtime's side: the gate and the fence, release, adopt, discard.

Two runtimes on two data folders in one trio run stand for two nodes; the bytes go from one to the
other as the cluster sends them: a small file's bytes in its ``Arrival``, a big one through
``staging_path``. The gate is a small real
implementation of ``Gate`` that refuses what the test says.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from actors import (
    AdoptOutcome,
    App,
    Arrival,
    DurableObject,
    Gate,
    Hooks,
    ObjectId,
    Released,
    Runtime,
    WebSocket,
    _movework,
    open_runtime,
)
from actors.errors import ActorError, InvalidArgument, OwnerUnavailable

from .test_sockets import Recorder

#### Objects, gate, transport


class Box(DurableObject):
    """A counter with a key-value side, an SQL table, an alarm and sockets."""

    log: list[str] = []

    async def on_start(self) -> None:
        Box.log.append(f"start {self.id.name}")

    async def increment(self, seconds: float = 0.0) -> int:
        Box.log.append(f"increment {self.id.name}")
        value = self.storage.get("value", 0) + 1
        self.storage.put("value", value)
        await trio.sleep(seconds)
        return value

    async def get(self) -> int:
        return self.storage.get("value", 0)  # type: ignore[no-any-return]

    async def note(self, key: str, text: str) -> None:
        self.storage.put(key, text)
        self.storage.sql("CREATE TABLE IF NOT EXISTS notes (text TEXT)")
        self.storage.sql("INSERT INTO notes VALUES (?)", text)

    async def notes(self) -> list[Any]:
        return [self.storage.list(), [row[0] for row in self.storage.sql("SELECT text FROM notes")]]

    async def remind_in(self, seconds: float) -> None:
        self.storage.set_alarm(self.env.now() + seconds)

    async def alarm(self) -> None:
        Box.log.append(f"alarm {self.id.name}")
        self.storage.put("alarmed", self.storage.get("alarmed", 0) + 1)

    async def alarmed(self) -> int:
        return self.storage.get("alarmed", 0)  # type: ignore[no-any-return]

    async def on_message(self, ws: WebSocket, data: Any) -> None:
        ws.send(f"echo {data}")

    async def on_close(self, ws: WebSocket, code: int, reason: str) -> None:
        Box.log.append(f"on_close {code}")


APP = App([Box])
MOVING = OwnerUnavailable("Box is moving to n2", node="n2")
FENCED = OwnerUnavailable("this node is fenced", node="n1")


class SwitchGate:
    """Refuses to activate the ids in ``refused``; refuses every batch while ``fence`` is set."""

    def __init__(self) -> None:
        self.refused: set[str] = set()
        self.fence: ActorError | None = None
        self.asked: list[str] = []
        self.on_ask: Callable[[ObjectId], None] | None = None

    def may_activate(self, object_id: ObjectId) -> ActorError | None:
        self.asked.append(object_id.name or "")
        if self.on_ask is not None:
            self.on_ask(object_id)
        return MOVING if object_id.hex in self.refused else None

    def may_write(self) -> ActorError | None:
        return self.fence

    async def admit(self, object_id: ObjectId, deadline: float) -> None:
        raise MOVING  # this gate never waits: a refusal is final


def test_switch_gate_is_a_gate() -> None:
    gate: Gate = SwitchGate()
    assert gate.may_write() is None


class Bracket(Hooks):
    """Logs object_opened / object_closed into Box.log, checking the file handle is closed by then."""

    def __init__(self) -> None:
        self.runtime: Runtime | None = None
        self.outcomes: list[str] = []

    def object_opened(self, object_id: ObjectId) -> None:
        Box.log.append(f"opened {object_id.name}")

    def object_closed(self, object_id: ObjectId) -> None:
        assert self.runtime is not None
        activation = self.runtime.table.find(object_id)
        assert activation is not None
        assert activation.file.conn is None
        Box.log.append(f"closed {object_id.name}")

    def alarm_finished(self, cls: str, outcome: str) -> None:
        self.outcomes.append(outcome)


@pytest.fixture(autouse=True)
def _clear_log() -> None:
    Box.log = []


def box(name: str) -> ObjectId:
    return APP.id_from_name("Box", name)


def files_under(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


@asynccontextmanager
async def node(
    folder: Path, *, threads: bool = False, hooks: Hooks | None = None
) -> AsyncIterator[tuple[Runtime, SwitchGate]]:
    """A runtime on ``folder`` with a SwitchGate (epoch offset 0 on every node: synchronized clocks)."""
    async with open_runtime(APP, folder, io_in_threads=threads, epoch_offset=0.0, hooks=hooks) as runtime:
        if isinstance(hooks, Bracket):
            hooks.runtime = runtime
        gate = SwitchGate()
        runtime.set_gate(gate)
        yield runtime, gate


async def move(source: Runtime, target: Runtime, ids: list[ObjectId]) -> list[AdoptOutcome]:
    """What the cluster does: release, copy the bytes, adopt, discard (the gate must refuse them)."""
    released = [r for r in [await source.release(i) for i in ids] if r is not None]
    for r in released:
        target.staging_path(r.object_id).write_bytes(r.path.read_bytes())
    outcomes = await target.adopt([Arrival(r.object_id, r.sha256_hex, r.alarm) for r in released])
    await source.discard([o.object_id for o in outcomes if o.status != "failed"])
    return outcomes


#### The gate and the fence


async def _refused_connect(runtime: Runtime, object_id: ObjectId) -> Any:
    return await runtime.sockets.connect(object_id, Recorder())


REFUSED_PATHS: dict[str, Callable[[Runtime, ObjectId, Path], Any]] = {
    "call": lambda runtime, i, _: runtime.call(i, "increment"),
    "submit": lambda runtime, i, _: runtime.submit(i, lambda o: o.get(), "read"),  # type: ignore[attr-defined]
    "socket": lambda runtime, i, _: _refused_connect(runtime, i),
    "export": lambda runtime, i, tmp: runtime.export(i, tmp / "export.sqlite3"),
    "delete": lambda runtime, i, _: runtime.delete_object(i),
}


@pytest.mark.parametrize("path", sorted(REFUSED_PATHS))
async def test_a_refused_activation_raises_the_gates_error_and_creates_nothing(tmp_path, path):
    async with node(tmp_path / "n1") as (runtime, gate):
        gate.refused.add(box("b").hex)
        assert runtime.start_call(box("b"), "increment", (), None, None, lambda r, e: None) is None
        with pytest.raises(OwnerUnavailable) as caught:
            await REFUSED_PATHS[path](runtime, box("b"), tmp_path)
        assert caught.value is MOVING
        assert gate.asked == ["b"]
        assert not runtime.is_live(box("b"))
        assert runtime.list_objects() == []
        assert runtime.sockets.count() == 0
    assert Box.log == []
    assert files_under(tmp_path / "n1") == ["catalog.sqlite3", "lock"]


async def test_a_live_object_keeps_serving_its_turns_when_the_gate_refuses_it(tmp_path):
    async with node(tmp_path / "n1") as (runtime, gate):
        assert await runtime.call(box("b"), "increment") == 1
        gate.refused.add(box("b").hex)
        assert await runtime.call(box("b"), "increment") == 2
        replies: list[Any] = []
        work = runtime.start_call(box("b"), "increment", (), None, None, lambda r, e: replies.append(r))
        assert work is not None
        await trio.testing.wait_all_tasks_blocked()
        assert replies == [3]
        assert gate.asked == ["b"]  # asked once, when it was activated


async def test_the_fence_fails_every_call_of_a_batch_without_running_it(tmp_path, autojump_clock):
    async with node(tmp_path / "n1") as (runtime, gate):
        assert await runtime.call(box("b"), "increment") == 1
        outcomes: dict[str, Any] = {}

        async def call(label: str, seconds: float) -> None:
            try:
                outcomes[label] = await runtime.call(box("b"), "increment", [seconds])
            except ActorError as exc:
                outcomes[label] = exc

        async with trio.open_nursery() as nursery:
            nursery.start_soon(call, "running", 5.0)  # started before the fence went up: it commits
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(call, "queued 1", 0.0)
            nursery.start_soon(call, "queued 2", 0.0)
            await trio.testing.wait_all_tasks_blocked()
            gate.fence = FENCED
        assert outcomes == {"running": 2, "queued 1": FENCED, "queued 2": FENCED}
        assert Box.log == ["start b", "increment b", "increment b"]  # the two refused never ran
        gate.fence = None
        assert await runtime.call(box("b"), "get") == 2


async def test_a_fenced_activation_rolls_back_what_on_start_wrote(tmp_path):
    class Greeter(DurableObject):
        async def on_start(self) -> None:
            self.storage.put("started", True)

        async def get(self) -> Any:
            return self.storage.get("started")

    async with open_runtime(App([Greeter]), tmp_path, io_in_threads=False) as runtime:
        gate = SwitchGate()
        gate.fence = FENCED
        runtime.set_gate(gate)
        greeter = runtime.app.id_from_name("Greeter", "g")
        with pytest.raises(OwnerUnavailable):
            await runtime.call(greeter, "get")
        await trio.testing.wait_all_tasks_blocked()
        assert not runtime.is_live(greeter)
        assert runtime.list_objects() == []


#### Release


async def test_active_ids_are_the_live_objects_that_worked_since_a_time(tmp_path, autojump_clock):
    """What the cluster moves first after a change (the objects calls are likely waiting for)."""
    async with node(tmp_path / "n1") as (runtime, _):
        await runtime.call(box("a"), "increment")
        await trio.sleep(5)
        await runtime.call(box("b"), "increment")
        assert set(runtime.live_ids()) == {box("a").hex, box("b").hex}
        assert runtime.active_ids(trio.current_time() - 1) == {box("b").hex}
        assert runtime.active_ids(trio.current_time() - 6) == {box("a").hex, box("b").hex}


async def test_release_lets_queued_turns_finish_and_commit_then_closes_sockets_with_4012(
    tmp_path, autojump_clock
):
    hooks = Bracket()
    async with node(tmp_path / "n1", hooks=hooks) as (runtime, gate):
        transport = Recorder()
        ws = await runtime.sockets.connect(box("b"), transport)
        await runtime.sockets.receive(box("b"), ws, "hi")
        outcomes: list[Any] = []
        released: list[Released | None] = []

        async def call(seconds: float) -> None:
            outcomes.append(await runtime.call(box("b"), "increment", [seconds]))

        async def release() -> None:
            released.append(await runtime.release(box("b")))
            Box.log.append("released")

        async with trio.open_nursery() as nursery:
            nursery.start_soon(call, 5.0)
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(call, 1.0)
            nursery.start_soon(call, 0.0)
            await trio.testing.wait_all_tasks_blocked()
            gate.refused.add(box("b").hex)
            started = trio.current_time()
            nursery.start_soon(release)
        assert trio.current_time() - started == 6  # waited for the running and the queued turns
        assert sorted(outcomes) == [1, 2, 3]
        assert Box.log[-3:] == ["increment b", "closed b", "released"]
        assert transport.events == ["send 'echo hi'", "close 4012 object moved"]
        assert runtime.sockets.sockets(box("b")) == []
        assert not runtime.is_live(box("b"))
        await runtime.sockets.disconnect(box("b"), ws, 4012, "object moved")  # no on_close turn here
        assert "on_close 4012" not in Box.log
        (result,) = released
        assert result is not None
        gate.refused.clear()
        assert await runtime.call(box("b"), "get") == 3  # all three committed


async def test_release_leaves_one_self_contained_file_whose_size_and_sha256_it_reports(tmp_path):
    async with node(tmp_path / "n1", threads=True) as (runtime, gate):
        for name in ("idle", "idle", "live", "live"):  # the second write opens the file (and a WAL)
            await runtime.call(box(name), "increment")
        await runtime.evict(box("idle"))
        idle = runtime.object_path(box("idle"))
        assert os.listdir(idle.parent) == [idle.name]  # eviction folds the WAL into the file
        gate.refused.update({box("idle").hex, box("live").hex})
        for name in ("idle", "live"):
            released = await runtime.release(box(name))
            assert released is not None
            assert released.path == runtime.object_path(box(name))
            data = released.path.read_bytes()
            assert (released.size, released.sha256_hex) == (len(data), hashlib.sha256(data).hexdigest())
            assert released.alarm is None
            assert sorted(os.listdir(released.path.parent)) == [released.path.name]


async def test_a_small_object_is_released_as_one_image_and_its_files_stay_as_they_were(tmp_path):
    """No checkpoint and no fsync on the old owner: the database is read with its WAL applied; its
    file and WAL stay until discard, and a clean shutdown before that folds the WAL in."""
    async with node(tmp_path / "n1", threads=True) as (n1, gate1), node(tmp_path / "n2") as (n2, _):
        for _ in range(3):
            await n1.call(box("b"), "increment")
        await n1.call(box("b"), "note", ["k", "kept"])
        path = n1.object_path(box("b"))
        gate1.refused.add(box("b").hex)
        released = await n1.release(box("b"), inline_bytes=1 << 20)
        assert released is not None
        assert released.data is not None
        assert (released.size, released.sha256_hex) == (
            len(released.data),
            hashlib.sha256(released.data).hexdigest(),
        )
        assert sorted(os.listdir(path.parent)) == [path.name, f"{path.name}-wal"]  # untouched
        assert path.read_bytes() != released.data  # the state is in the WAL still; the image has it
        (outcome,) = await n2.adopt([Arrival(box("b"), released.sha256_hex, released.alarm, released.data)])
        assert outcome.status == "stored"
        assert await n2.call(box("b"), "get") == 3
        assert (await n2.call(box("b"), "notes"))[1] == ["kept"]
        assert await n1.release(box("b"), inline_bytes=1 << 20) == released  # the same image again
    assert sorted(os.listdir(path.parent)) == [path.name]  # not discarded: folded at the shutdown
    async with node(tmp_path / "n1") as (n1, gate1):
        gate1.refused.add(box("b").hex)
        again = await n1.release(box("b"), inline_bytes=1 << 20)
        assert again is not None
        assert again.data == path.read_bytes()  # one self-contained file now: the same state
        await n1.discard([box("b")])
        assert files_under(tmp_path / "n1" / "objects") == []


async def test_release_reports_the_alarm_and_moves_a_file_of_the_older_layout(tmp_path):
    async with node(tmp_path / "n1") as (runtime, _):
        await runtime.call(box("old"), "remind_in", [60.0])
    path = tmp_path / "n1" / "objects" / "Box" / box("old").hex[:2] / f"{box('old').hex}.sqlite3"
    legacy = path.parent / box("old").hex[2:4] / path.name
    legacy.parent.mkdir()
    path.rename(legacy)
    async with node(tmp_path / "n1") as (runtime, gate):
        gate.refused.add(box("old").hex)
        released = await runtime.release(box("old"))
        assert released is not None
        assert released.path == path
        assert released.alarm == runtime.catalog.get(box("old").hex).alarm  # type: ignore[union-attr]
        assert released.alarm is not None
        assert not legacy.exists()


async def test_release_of_an_object_without_storage_is_none_and_needs_a_refusing_gate(tmp_path):
    async with node(tmp_path / "n1") as (runtime, gate):
        with pytest.raises(RuntimeError, match=r"^release\(Box/b\): the gate must refuse"):
            await runtime.release(box("b"))
        gate.refused.add(box("b").hex)
        assert await runtime.release(box("b")) is None
        assert not runtime.holds(box("b"))


async def test_concurrent_releases_of_one_object_get_the_same_answer(tmp_path):
    async with node(tmp_path / "n1", threads=True) as (runtime, gate):
        await runtime.call(box("b"), "increment", [0.2])
        gate.refused.add(box("b").hex)
        answers: list[Released | None] = []

        async def release() -> None:
            answers.append(await runtime.release(box("b")))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(runtime.call, box("b"), "increment", [0.2])
            await trio.testing.wait_all_tasks_blocked()
            for _ in range(3):
                nursery.start_soon(release)
        assert answers[0] is not None
        assert answers == [answers[0]] * 3


#### Adopt and discard


async def test_an_object_moves_with_its_state_and_its_alarm_fires_only_on_the_new_node(
    tmp_path, autojump_clock
):
    hooks = Bracket()
    async with node(tmp_path / "n1") as (n1, gate1), node(tmp_path / "n2", hooks=hooks) as (n2, gate2):
        for _ in range(3):
            await n1.call(box("b"), "increment")
        await n1.call(box("b"), "note", ["k", "kept"])
        await n1.call(box("b"), "remind_in", [60.0])
        due = trio.current_time() + 60  # every node maps epoch seconds to trio time alike here
        gate1.refused.add(box("b").hex)
        released = await n1.release(box("b"))
        assert released is not None
        n2.staging_path(box("b")).write_bytes(released.path.read_bytes())
        Box.log = []
        (outcome,) = await n2.adopt([Arrival(box("b"), released.sha256_hex, released.alarm)])
        assert outcome == AdoptOutcome(box("b"), "stored")
        assert n2.holds(box("b"))
        assert not n2.is_live(box("b"))  # adopting activates nothing
        assert Box.log == []
        assert n2.alarms.pending() == {box("b").hex: released.alarm}
        await n1.discard([box("b")])
        assert not n1.holds(box("b"))
        assert n1.alarms.pending() == {}
        assert files_under(tmp_path / "n1" / "objects") == []
        assert n1.list_objects() == []
        await trio.sleep(due - trio.current_time() - 0.5)
        assert "alarm b" not in Box.log
        await trio.sleep(1)
        assert Box.log.count("alarm b") == 1
        assert await n2.call(box("b"), "get") == 3
        assert await n2.call(box("b"), "notes") == [{"alarmed": 1, "k": "kept", "value": 3}, ["kept"]]
        assert await n2.call(box("b"), "alarmed") == 1
        assert [e.id for e in n2.list_objects()] == [box("b")]
        await trio.sleep(120)
        assert Box.log.count("alarm b") == 1
        assert gate1.asked == ["b", "b"]  # activated once, then release's check: its alarm left with it
        assert gate2.asked == ["b"]


async def test_a_staged_file_whose_sha256_does_not_match_is_refused_and_deleted(tmp_path):
    async with node(tmp_path / "n1") as (n1, gate1), node(tmp_path / "n2") as (n2, _):
        await n1.call(box("b"), "increment")
        gate1.refused.add(box("b").hex)
        released = await n1.release(box("b"))
        assert released is not None
        staged = n2.staging_path(box("b"))
        staged.write_bytes(released.path.read_bytes()[:-1] + b"!")
        (outcome,) = await n2.adopt([Arrival(box("b"), released.sha256_hex, None)])
        assert outcome.status == "failed"
        assert isinstance(outcome.error, InvalidArgument)
        assert "SHA-256" in outcome.error.message
        assert not staged.exists()
        assert not n2.holds(box("b"))
        assert files_under(tmp_path / "n2" / "objects") == []
        (missing,) = await n2.adopt([Arrival(box("b"), released.sha256_hex, None)])
        assert missing.status == "failed"
        assert "no staged file" in str(missing.error)


async def test_an_arrival_with_its_bytes_is_written_under_its_name_only_if_they_match(tmp_path):
    async with node(tmp_path / "n1") as (n1, gate1), node(tmp_path / "n2") as (n2, _):
        await n1.call(box("b"), "increment")
        gate1.refused.add(box("b").hex)
        released = await n1.release(box("b"), inline_bytes=1 << 20)
        assert released is not None
        assert released.data is not None
        wrong = Arrival(box("b"), released.sha256_hex, None, released.data[:-1] + b"!")
        (refused,) = await n2.adopt([wrong])
        assert refused.status == "failed"
        assert isinstance(refused.error, InvalidArgument)
        assert "SHA-256" in refused.error.message
        assert files_under(tmp_path / "n2" / "objects") == []
        assert not n2.holds(box("b"))
        (stored,) = await n2.adopt([Arrival(box("b"), released.sha256_hex, None, released.data)])
        assert stored.status == "stored"
        path = n2.object_path(box("b"))
        objects = tmp_path / "n2" / "objects"
        assert files_under(objects) == [str(path.relative_to(objects))]
        assert path.read_bytes() == released.data
        assert await n2.call(box("b"), "get") == 1


async def test_an_object_arriving_twice_at_once_is_stored_once(tmp_path):
    """A second arrival while the first is being made durable fails (the sender tries again and
    hears ``already_held``): it must not rewrite a file under its round's barrier."""
    async with node(tmp_path / "n1") as (n1, gate1), node(tmp_path / "n2", threads=True) as (n2, _):
        await n1.call(box("b"), "increment")
        gate1.refused.add(box("b").hex)
        released = await n1.release(box("b"), inline_bytes=1 << 20)
        assert released is not None
        arrival = Arrival(box("b"), released.sha256_hex, None, released.data)
        outcomes: list[AdoptOutcome] = []

        async def adopt() -> None:
            outcomes.extend(await n2.adopt([arrival]))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(adopt)
            nursery.start_soon(adopt)
        assert sorted(o.status for o in outcomes) == ["failed", "stored"]
        (failed,) = [o for o in outcomes if o.status == "failed"]
        assert str(failed.error).endswith("is arriving twice at once")
        assert [o.status for o in await n2.adopt([arrival])] == ["already_held"]
        assert await n2.call(box("b"), "get") == 1


async def test_adopting_an_object_already_held_keeps_this_nodes_copy(tmp_path):
    async with node(tmp_path / "n1") as (n1, gate1), node(tmp_path / "n2") as (n2, _):
        await n1.call(box("b"), "increment")
        await n2.call(box("b"), "increment")
        await n2.call(box("b"), "increment")
        gate1.refused.add(box("b").hex)
        released = await n1.release(box("b"))
        assert released is not None
        staged = n2.staging_path(box("b"))
        staged.write_bytes(released.path.read_bytes())
        await n2.evict(box("b"))  # held through its catalog entry, not only while live
        (outcome,) = await n2.adopt([Arrival(box("b"), released.sha256_hex, None)])
        assert outcome == AdoptOutcome(box("b"), "already_held")
        assert not staged.exists()
        assert await n2.call(box("b"), "get") == 2


async def test_staged_files_left_by_unfinished_transfers_are_deleted_when_the_runtime_opens(tmp_path):
    async with node(tmp_path / "n1") as (runtime, _):
        await runtime.call(box("kept"), "increment")
        runtime.staging_path(box("half")).write_bytes(b"half a file")
    staged = f"objects/Box/{box('half').hex[:2]}/{box('half').hex}.sqlite3.incoming"
    assert staged in files_under(tmp_path / "n1")
    assert "staging.marker" in files_under(tmp_path / "n1")  # made before the first staged file
    async with node(tmp_path / "n1") as (runtime, _):
        assert [p for p in files_under(tmp_path / "n1") if p.endswith(".incoming")] == []
        assert "staging.marker" not in files_under(tmp_path / "n1")  # the next start lists no file
        assert await runtime.call(box("kept"), "get") == 1


async def test_discard_deletes_the_files_the_catalog_entries_and_the_alarms_and_is_idempotent(tmp_path):
    async with node(tmp_path / "n1") as (runtime, gate):
        for name in ("a", "b"):
            await runtime.call(box(name), "remind_in", [60.0])
        await runtime.evict(box("a"))
        with pytest.raises(RuntimeError, match=r"^discard\(Box/b\): it is live here"):
            await runtime.discard([box("b")])
        await runtime.evict(box("b"))
        gate.refused.update({box("a").hex, box("b").hex})
        await runtime.discard([box("a"), box("b")])
        await runtime.discard([box("a"), box("b"), box("never")])
        assert files_under(tmp_path / "n1" / "objects") == []
        assert runtime.list_objects() == []
        assert runtime.alarms.pending() == {}
    async with node(tmp_path / "n1") as (runtime, _):
        assert runtime.alarms.pending() == {}
        assert await runtime.call(box("a"), "get") == 0


#### Alarms and the gate


async def test_an_alarm_refused_by_the_gate_stays_pending_uncounted_and_runs_once_allowed(
    tmp_path, autojump_clock
):
    hooks = Bracket()
    async with node(tmp_path / "n1", hooks=hooks) as (runtime, gate):
        await runtime.call(box("b"), "remind_in", [10.0])
        await runtime.evict(box("b"))
        gate.refused.add(box("b").hex)
        await trio.sleep(99.5)  # far longer than every retry of a failing alarm together
        assert "alarm b" not in Box.log
        assert hooks.outcomes == []
        assert list(runtime.alarms.pending()) == [box("b").hex]
        assert gate.asked == ["b"] * (1 + 90)  # its activation; then the alarm at 10 s and every second
        gate.refused.clear()
        await trio.sleep(1)  # it comes due at 100 s
        assert "alarm b" in Box.log
        assert hooks.outcomes == ["ok"]
        assert runtime.alarms.pending() == {}


async def test_an_alarm_refused_by_the_fence_is_kept_too(tmp_path, autojump_clock):
    hooks = Bracket()
    async with node(tmp_path / "n1", hooks=hooks) as (runtime, gate):
        await runtime.call(box("b"), "remind_in", [10.0])  # live: the fence refuses its batch
        gate.fence = FENCED
        await trio.sleep(30.5)
        assert hooks.outcomes == []
        assert "alarm b" not in Box.log
        gate.fence = None
        await trio.sleep(1.5)
        assert hooks.outcomes == ["ok"]


async def test_a_refused_alarm_of_an_object_discarded_meanwhile_is_dropped(tmp_path, autojump_clock):
    async with node(tmp_path / "n1") as (runtime, gate):
        await runtime.call(box("b"), "remind_in", [10.0])
        await runtime.evict(box("b"))
        gate.refused.add(box("b").hex)
        # The object is discarded while its refused alarm is in flight (between its refusal and the
        # scheduler's decision): the catalog no longer holds it.
        gate.on_ask = lambda object_id: runtime.catalog.forget_all([object_id.hex])
        await trio.sleep(10.5)
        assert runtime.alarms.pending() == {}
        await trio.sleep(60)
        assert gate.asked == ["b", "b"]  # its activation, then its alarm once


#### The history hooks


async def test_object_opened_and_closed_bracket_every_activation(tmp_path, autojump_clock):
    hooks = Bracket()
    async with node(tmp_path / "n1", hooks=hooks) as (runtime, gate):
        await runtime.call(box("b"), "increment")
        await trio.sleep(61)  # idle eviction
        await runtime.call(box("b"), "increment")
        gate.refused.add(box("b").hex)
        await runtime.release(box("b"))
        gate.refused.clear()
        await runtime.call(box("b"), "increment")
    assert Box.log == [
        "opened b", "start b", "increment b", "closed b",
        "opened b", "start b", "increment b", "closed b",
        "opened b", "start b", "increment b", "closed b",
    ]  # fmt: skip


#### Many objects


@pytest.mark.parametrize("barrier", ["syncfs", "fsync of each file and folder"])
async def test_a_few_hundred_objects_go_to_another_node_and_back(tmp_path, monkeypatch, barrier):
    if barrier != "syncfs":
        monkeypatch.setattr(_movework, "_syncfs", None)
    elif _movework._syncfs is None:
        pytest.skip("no syncfs in this C library")
    ids = [box(f"o{i}") for i in range(300)]
    async with node(tmp_path / "n1", threads=True) as (n1, gate1), node(tmp_path / "n2", threads=True) as (
        n2,
        gate2,
    ):
        async with trio.open_nursery() as nursery:
            for i, object_id in enumerate(ids):
                nursery.start_soon(n1.call, object_id, "note", ["k", f"v{i}"])
        gate1.refused.update(i.hex for i in ids)
        for start in range(0, len(ids), 64):
            outcomes = await move(n1, n2, ids[start : start + 64])
            assert {o.status for o in outcomes} == {"stored"}
        assert n1.count_objects() == 0
        assert files_under(tmp_path / "n1" / "objects") == []
        gate2.refused.update(i.hex for i in ids)
        gate1.refused.clear()
        for start in range(0, len(ids), 64):
            assert {o.status for o in await move(n2, n1, ids[start : start + 64])} == {"stored"}
        assert n2.count_objects() == 0
        assert n1.count_objects() == 300
        for i, object_id in enumerate(ids):
            assert await n1.call(object_id, "notes") == [{"k": f"v{i}"}, [f"v{i}"]]
