"""Durability rounds: many objects' commits made durable together, replies only after.

These run the real runtime (commits and fsyncs in the sync pool's threads, real files). The sync
step is held and failed with real files: an object's ``-wal`` is unlinked while SQLite keeps writing
to it through its open descriptor, so the runtime's fsync finds no file (FileNotFoundError), or a
named pipe is put in its place, so the fsync thread blocks opening it until the test opens the other
end (then fsync fails on the pipe). Every wait is bounded (``fail_after``).
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

import trio
import trio.testing

from actors import App, Hooks, Runtime, Settings, open_runtime
from actors.errors import ObjectReset

from .objects import Counter

APP = App([Counter])
OTHERS = 12


class RoundRecorder(Hooks):
    """Objects per durability round, in the order the rounds ended."""

    def __init__(self) -> None:
        self.rounds: list[int] = []

    def synced(self, seconds: float, objects: int) -> None:
        self.rounds.append(objects)


def wal(runtime: Runtime, name: str) -> Path:
    return Path(f"{runtime.object_path(APP.id_from_name('Counter', name))}-wal")


async def test_replies_wait_for_their_round_and_a_failed_sync_fails_exactly_its_objects(tmp_path):
    hooks = RoundRecorder()
    names = [f"o{i}" for i in range(OTHERS)]
    with trio.fail_after(20):
        async with open_runtime(APP, tmp_path, hooks=hooks) as runtime:
            for name in ["blocker", *names]:
                for _ in range(2):  # the first creates the file, the second opens it (a -wal now)
                    await runtime.get("Counter", name).increment()
            # The blocker's next fsync opens a named pipe and waits for a writer: its round is held.
            wal(runtime, "blocker").unlink()
            os.mkfifo(wal(runtime, "blocker"))
            # o0's next fsync finds no -wal (SQLite still writes the unlinked one): it fails.
            wal(runtime, "o0").unlink()
            hooks.rounds.clear()
            replies: dict[str, object] = {}

            async def call(name: str) -> None:
                try:
                    replies[name] = await runtime.get("Counter", name).increment()
                except ObjectReset as exc:
                    replies[name] = exc

            async def release_blocker() -> None:
                """Open the pipe's other end: the held fsync goes on (and fails on the pipe).

                Retried while the fsync thread has not reached its open yet (ENXIO: no reader),
                which a loaded machine can delay past ``wait_all_tasks_blocked``."""
                while True:
                    try:
                        os.close(os.open(wal(runtime, "blocker"), os.O_WRONLY | os.O_NONBLOCK))
                        return
                    except OSError as exc:
                        if exc.errno != errno.ENXIO:
                            raise
                    await trio.sleep(0.01)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(call, "blocker")
                await trio.testing.wait_all_tasks_blocked()  # its round is in flight, held
                try:
                    for name in names:
                        nursery.start_soon(call, name)
                    await trio.testing.wait_all_tasks_blocked()
                    # Every other object ran its turn and committed; no round made it durable yet.
                    assert replies == {}
                    assert hooks.rounds == []
                    assert runtime.statistics().commits_in_flight == 1
                finally:
                    # even if an assertion failed: closing waits for the round
                    with trio.CancelScope(shield=True), trio.fail_after(10):
                        await release_blocker()
            wal(runtime, "blocker").unlink()  # (the pipe; SQLite's -wal was unlinked before)

            assert hooks.rounds == [1, OTHERS]  # the blocker alone, then everyone who waited
            assert isinstance(replies.pop("blocker"), ObjectReset)
            failed = replies.pop("o0")
            assert isinstance(failed, ObjectReset)
            assert "could not be made durable" in str(failed)
            assert replies == {name: 3 for name in names[1:]}
        async with open_runtime(APP, tmp_path) as runtime:
            for name in names[1:]:
                assert await runtime.get("Counter", name).get() == 3


async def test_calls_to_many_objects_share_rounds_and_survive_a_restart(tmp_path):
    hooks = RoundRecorder()
    names = [f"c{i}" for i in range(40)]
    with trio.fail_after(20):
        async with open_runtime(APP, tmp_path, hooks=hooks) as runtime:
            for name in names:
                await runtime.get("Counter", name).increment()
            hooks.rounds.clear()
            async with trio.open_nursery() as nursery:
                for name in names:
                    for _ in range(5):
                        nursery.start_soon(runtime.get("Counter", name).increment)
            assert sum(hooks.rounds) < len(names) * 5  # rounds held several objects' batches
        async with open_runtime(APP, tmp_path) as runtime:
            for name in names:
                assert await runtime.get("Counter", name).get() == 6


async def test_sync_volume_makes_a_round_durable_with_one_syncfs(tmp_path):
    hooks = RoundRecorder()
    names = [f"v{i}" for i in range(20)]
    settings = Settings(sync_volume=True)
    with trio.fail_after(20):
        async with open_runtime(APP, tmp_path, hooks=hooks, settings=settings) as runtime:
            for name in names:
                await runtime.get("Counter", name).increment()
            hooks.rounds.clear()
            async with trio.open_nursery() as nursery:
                for name in names:
                    nursery.start_soon(runtime.get("Counter", name).increment)
            assert hooks.rounds
            assert sum(hooks.rounds) <= len(names)
        async with open_runtime(APP, tmp_path, settings=settings) as runtime:
            for name in names:
                assert await runtime.get("Counter", name).get() == 2
