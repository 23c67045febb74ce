"""The process that ``test_crash_safety.py`` kills: writes to objects forever, reports each reply.

    python tests/actors/crash_worker.py DATA_DIR SEED
    python -m tests.actors.crash_worker DATA_DIR SEED      (from the project root)

It opens a runtime on DATA_DIR with the default settings (commits in worker threads, fsync
durability), prints ``READY`` once the runtime is open, then runs ``CALLERS`` tasks that call
``Tally.bump`` on ``OBJECTS`` objects in a loop. After each reply it prints ``ACK <object> <value>``
and flushes, so a line on stdout is proof that the reply was sent. It never stops by itself; any
error ends it with a traceback on stderr (the test treats an exit before its SIGKILL as a failure).

Each ``bump`` turn writes three things that must always agree: the KV key ``count``, a row
``n = count`` in the user table ``log`` and the KV key ``shadow``. A checkpoint sits between the
writes, so other objects run and commit while this turn is half written.
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

if not __package__:  # run by path: make the project root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import trio

import actors
from actors import App, DurableObject

#: objects written to; names are ``t0`` .. ``t7``
OBJECTS = 8
#: concurrent callers (several per object, so turns queue and share group commits)
CALLERS = 32


class Tally(DurableObject):
    """A counter whose every turn writes the count twice in KV and once as a row of user SQL."""

    async def on_start(self) -> None:
        # A write during activation, so a kill can also land between activation and the first call.
        self.storage.sql("CREATE TABLE IF NOT EXISTS log (n INTEGER PRIMARY KEY)")

    async def bump(self) -> int:
        n = self.storage.get("count", 0) + 1
        self.storage.put("count", n)
        await trio.lowlevel.checkpoint()  # other objects run and commit meanwhile
        self.storage.sql("INSERT INTO log (n) VALUES (?)", n)
        self.storage.put("shadow", n)
        return n

    async def state(self) -> list[int]:
        """[count, shadow, rows in log, max n in log]; 0 for what does not exist."""
        rows, top = self.storage.sql("SELECT count(*), coalesce(max(n), 0) FROM log").one()
        return [self.storage.get("count", 0), self.storage.get("shadow", 0), rows, top]


APP = App([Tally])


def object_names() -> list[str]:
    return [f"t{i}" for i in range(OBJECTS)]


async def call_forever(runtime: actors.Runtime, rng: random.Random) -> None:
    names = object_names()
    while True:
        name = rng.choice(names)
        value = await runtime.get(Tally, name).bump()
        # One write per line: a line is in the pipe whole or not at all (it is far below PIPE_BUF).
        sys.stdout.write(f"ACK {name} {value}\n")
        sys.stdout.flush()


async def create_forever(runtime: actors.Runtime, rng: random.Random) -> None:
    """Every call to a fresh name: every call creates its object (creation rounds)."""
    while True:
        name = f"n{rng.getrandbits(48):012x}"
        value = await runtime.get(Tally, name).bump()
        sys.stdout.write(f"ACK {name} {value}\n")
        sys.stdout.flush()


async def main(data_dir: str, seed: int, fresh: bool) -> None:
    rng = random.Random(seed)
    caller = create_forever if fresh else call_forever
    async with actors.open_runtime(APP, data_dir) as runtime:
        sys.stdout.write("READY\n")
        sys.stdout.flush()
        async with trio.open_nursery() as nursery:
            for _ in range(CALLERS):
                nursery.start_soon(caller, runtime, random.Random(rng.getrandbits(64)))


if __name__ == "__main__":
    if len(sys.argv) not in (3, 4) or sys.argv[3:] not in ([], ["fresh"]):
        sys.exit(f"usage: {sys.argv[0]} DATA_DIR SEED [fresh]")
    trio.run(main, sys.argv[1], int(sys.argv[2]), sys.argv[3:] == ["fresh"])
