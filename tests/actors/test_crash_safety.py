"""Crash safety: a process killed with SIGKILL at any moment loses no write whose reply was
sent, and leaves no half-applied turn.

Each round starts ``crash_worker.py`` as a real process on the same data folder (default settings:
commits in worker threads, fsync durability), lets it write for a random 0.05-0.5 s after
``READY``, SIGKILLs it, and keeps every ``ACK <object> <value>`` line it printed: each one is a
reply that was sent. Then the folder is reopened in-process and every object must hold

- no lost acknowledged write: ``count`` at least the highest value ever acknowledged and at least
  what the previous check saw, and no value acknowledged twice (a lost write done again);
- no half-applied turn: ``count == shadow == rows in log == max(n) in log``;
- an entry in the catalog if it has storage (the catalog may run ahead of a file, never behind).

Later rounds start from the files the earlier kills left, so they also crash during WAL recovery
and activation. This test needs real time (a real process), so it takes no ``autojump_clock``;
every wait is bounded. The seed comes from ``ACTORS_CRASH_SEED`` (random by default) and is in
every failure message.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import apsw
import trio

from actors.testing import open_test_runtime

from .crash_worker import APP, Tally, object_names

WORKER = Path(__file__).with_name("crash_worker.py")
#: kill/check cycles on one data folder
ROUNDS = 12
#: the kill lands this many seconds after READY (uniform)
KILL_AFTER = (0.05, 0.5)
#: a cold interpreter importing trio and apsw on a busy 2-core machine
STARTUP_TIMEOUT = 15.0
#: from SIGKILL to the process reaped and its pipes at EOF
EXIT_TIMEOUT = 5.0
#: reopening the folder and reading every object
CHECK_TIMEOUT = 15.0


@dataclass
class Run:
    """What one worker process said before it died."""

    #: object name -> values in the order their ACK lines were read
    acks: dict[str, list[int]] = field(default_factory=dict)
    #: stdout lines that are neither READY nor a well-formed ACK
    strange: list[str] = field(default_factory=list)
    stderr: bytearray = field(default_factory=bytearray)
    returncode: int | None = None


async def read_stdout(stream: trio.abc.ReceiveStream, ready: trio.Event, run: Run) -> None:
    """Parse the worker's lines until EOF; set ``ready`` at READY, or at EOF if it never came."""
    pending = b""
    async for chunk in stream:
        *lines, pending = (pending + chunk).split(b"\n")
        for line in lines:
            match line.decode(errors="replace").split():
                case ["READY"]:
                    ready.set()
                case ["ACK", name, value] if value.isdigit():
                    run.acks.setdefault(name, []).append(int(value))
                case _:
                    run.strange.append(repr(line))
    # ``pending`` is a line cut short by the kill: its write never completed, so it proves nothing.
    ready.set()


async def read_stderr(stream: trio.abc.ReceiveStream, run: Run) -> None:
    async for chunk in stream:
        run.stderr += chunk


async def run_and_kill(data_dir: Path, seed: int, delay: float, *, fresh: bool = False) -> Run:
    """Start a worker on ``data_dir``, SIGKILL it ``delay`` s after READY, return all it printed
    (``fresh``: every call of the worker creates a new object)."""
    run, ready = Run(), trio.Event()
    command = [sys.executable, str(WORKER), str(data_dir), str(seed), *(["fresh"] if fresh else [])]
    process = await trio.lowlevel.open_process(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert process.stdout is not None
    assert process.stderr is not None
    try:
        with trio.fail_after(STARTUP_TIMEOUT + delay + EXIT_TIMEOUT):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(read_stdout, process.stdout, ready, run)
                nursery.start_soon(read_stderr, process.stderr, run)
                with trio.fail_after(STARTUP_TIMEOUT):
                    await ready.wait()
                await trio.sleep(delay)
                process.send_signal(signal.SIGKILL)
            # Both readers reached EOF: every line written before the kill has been read.
    finally:
        process.kill()  # no-op if it is already dead
        with trio.CancelScope(shield=True), trio.fail_after(EXIT_TIMEOUT):
            run.returncode = await process.wait()
            await process.stdout.aclose()
            await process.stderr.aclose()
    return run


async def read_back(data_dir: Path) -> tuple[dict[str, list[int]], set[str]]:
    """Reopen ``data_dir``: each object's [count, shadow, rows, max n]; the names in the catalog."""
    with trio.fail_after(CHECK_TIMEOUT):
        async with open_test_runtime(APP, data_dir) as t:
            # Listed before the reads: activating an object writes (on_start), which would add it.
            listed = {e.id.name or "" for e in t.runtime.list_objects(cls="Tally", limit=1000)}
            states = {name: await t.get(Tally, name).state() for name in object_names()}
    return states, listed


def check_acks(run: Run, acked: dict[str, set[int]], floor: dict[str, int], where: str) -> None:
    """Record ``run``'s acknowledged values; none may have been acknowledged before."""
    assert not run.strange, f"{where}: unexpected lines from the worker: {run.strange[:5]}"
    for name, values in run.acks.items():
        seen = acked[name]
        for value in values:
            assert value not in seen, (
                f"{where}: {name} acknowledged value {value} twice: "
                "an acknowledged write was lost and its value handed out again"
            )
            seen.add(value)
        floor[name] = max(floor[name], *values)


def check_objects(states: dict[str, list[int]], listed: set[str], floor: dict[str, int], where: str) -> None:
    """Every object holds at least ``floor`` and agrees with itself; then raise ``floor`` to it."""
    for name, (count, shadow, rows, top) in states.items():
        assert count >= floor[name], (
            f"{where}: {name} lost acknowledged or committed writes: "
            f"count is {count}, but {floor[name]} was acknowledged or seen before"
        )
        assert count == shadow == rows == top, (
            f"{where}: {name} holds a half-applied turn: "
            f"count {count}, shadow {shadow}, rows in log {rows}, max n in log {top}"
        )
        assert count == 0 or name in listed, (
            f"{where}: {name} has storage (count {count}) but no catalog entry"
        )
        floor[name] = count


async def test_sigkill_at_any_moment_loses_no_acknowledged_write_and_leaves_no_half_applied_turn(
    tmp_path,
):
    seed = int(os.environ.get("ACTORS_CRASH_SEED") or random.getrandbits(32))
    rng = random.Random(seed)
    data_dir = tmp_path / "data"
    acked: dict[str, set[int]] = {name: set() for name in object_names()}
    floor = dict.fromkeys(object_names(), 0)
    rounds_with_acks = 0
    for round_number in range(ROUNDS):
        delay = rng.uniform(*KILL_AFTER)
        where = f"ACTORS_CRASH_SEED={seed}, round {round_number}, SIGKILL {delay:.3f} s after READY"
        run = await run_and_kill(data_dir, rng.getrandbits(32), delay)
        assert run.returncode == -signal.SIGKILL, (
            f"{where}: the worker ended by itself (exit {run.returncode}):\n"
            f"{run.stderr.decode(errors='replace')[-3000:]}"
        )
        check_acks(run, acked, floor, where)
        rounds_with_acks += bool(run.acks)
        states, listed = await read_back(data_dir)
        check_objects(states, listed, floor, where)
    # Guard against a vacuous pass (a worker too slow to ever reply before its kill).
    assert rounds_with_acks >= ROUNDS // 2, (
        f"ACTORS_CRASH_SEED={seed}: only {rounds_with_acks} of {ROUNDS} rounds got a reply out"
    )


def object_files(data_dir: Path) -> dict[str, Path]:
    """hex id -> file, for every object file under its real name (``.new`` files are not files yet)."""
    return {path.name.removesuffix(".sqlite3"): path for path in data_dir.glob("objects/*/*/*.sqlite3")}


def check_complete(path: Path) -> None:
    """The file is a whole SQLite database (a crash must never leave half of one under the name)."""
    conn = apsw.Connection(str(path), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)], f"{path} is damaged"
    finally:
        conn.close()


async def test_sigkill_while_objects_are_created_loses_no_acknowledged_object_and_no_file_is_partial(
    tmp_path,
):
    seed = int(os.environ.get("ACTORS_CRASH_SEED") or random.getrandbits(32))
    rng = random.Random(seed)
    data_dir = tmp_path / "data"
    acked: set[str] = set()
    for round_number in range(ROUNDS // 3):
        delay = rng.uniform(*KILL_AFTER)
        where = f"ACTORS_CRASH_SEED={seed}, round {round_number}, SIGKILL {delay:.3f} s after READY"
        run = await run_and_kill(data_dir, rng.getrandbits(32), delay, fresh=True)
        assert run.returncode == -signal.SIGKILL, f"{where}: the worker ended by itself"
        assert not run.strange, f"{where}: unexpected lines from the worker: {run.strange[:5]}"
        assert all(values == [1] for values in run.acks.values()), f"{where}: a name was reused"
        acked.update(run.acks)
        files = object_files(data_dir)
        for path in files.values():
            check_complete(path)
        with trio.fail_after(CHECK_TIMEOUT):
            async with open_test_runtime(APP, data_dir) as t:
                stored = set(t.runtime.stored_ids())  # the catalog: may run ahead, never behind
                assert set(files) <= stored, f"{where}: files without a catalog entry"
                for name in sorted(acked):
                    state = await t.get(Tally, name).state()
                    assert state == [1, 1, 1, 1], f"{where}: acknowledged {name} holds {state}"
    assert acked, f"ACTORS_CRASH_SEED={seed}: no object was ever acknowledged"
