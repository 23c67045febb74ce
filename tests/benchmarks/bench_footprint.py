"""Footprint of objects: memory per live object, disk per small object, ``-wal`` files left at shutdown.

Run from the repository root (pytest does not collect it)::

    .venv/bin/python -m tests.benchmarks.bench_footprint [--objects N] [--repeat 3] [--only rss,disk,wal]
                                                         [--as-server]

- ``rss``: in a fresh process per repeat, ``N`` counters are written once each, the runtime is
  reopened (so every file exists and nothing is live), ``VmRSS`` (``/proc/self/status``) is read,
  then each object is activated by one ``increment`` call (a cold activation that opens the file,
  reads it and commits through the WAL) and kept live (idle timeout 1 hour); ``VmRSS`` again. The
  row is the difference divided by ``N``: what a live object with one key costs, the runtime's
  bookkeeping included. Then the files close as a budget of one open file would close them (the
  objects stay live, ``_resting.py``), and ``VmRSS`` once more: ``rss_kib_per_resting_object``
  (memory SQLite freed stays in glibc's arenas, for the next files opened, so this is the
  high-water mark); and the same
  difference with ``malloc_trim(0)`` called before both readings (``..._trimmed``: what the resting
  objects themselves hold).
- ``disk``: one counter written once, the runtime closed cleanly; the bytes its file and any
  ``-wal`` use on disk (``st_blocks * 512``, what ``du`` counts), and the file's size.
- ``wal``: ``N`` counters written twice each (the second commit goes through the WAL), under
  ``max_live_objects = N / 4`` (capacity eviction) with a 1 s idle timeout and 2 s of waiting (idle
  eviction), then a clean close; the ``-wal`` files left in the data folder.

Each repeat uses a fresh data folder under /tmp. ``--as-server`` first applies what ``actors serve``
sets for its process (``server/tuning.py``: SQLite's lookaside off, the garbage collector tuned), so
the rows are a node's; without it they are an application's that embeds the runtime as it is.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import trio

from actors import App, DurableObject, Settings, open_runtime

MODULE = "tests.benchmarks.bench_footprint"


class Counter(DurableObject):
    async def increment(self) -> int:
        value: int = self.storage.get("value", 0) + 1
        self.storage.put("value", value)
        return value


APP = App([Counter])


def rss_kib() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS in /proc/self/status")


async def _touch_all(runtime: Any, n: int, callers: int = 16) -> None:
    async def worker(start: int) -> None:
        for i in range(start, n, callers):
            await runtime.get("Counter", f"c{i}").increment()

    async with trio.open_nursery() as nursery:
        for start in range(callers):
            nursery.start_soon(worker, start)


async def rss_once(n: int) -> dict[str, float]:
    """Run in a fresh process (``--child rss``): KiB of RSS per live object."""
    settings = Settings(max_live_objects=n + 10, idle_timeout=3600.0)
    with tempfile.TemporaryDirectory(dir="/tmp") as folder:
        async with open_runtime(APP, folder, settings=settings) as runtime:
            await _touch_all(runtime, n)
        async with open_runtime(APP, folder, settings=settings) as runtime:
            await _touch_all(runtime, 64)  # warm the code paths before the baseline
            await _rest_all(runtime)
            before, trimmed_before = rss_kib(), _trimmed_rss_kib()
            await _touch_all(runtime, n)
            after = rss_kib()
            await _rest_all(runtime)  # the files of the live objects close
            rested, trimmed = rss_kib(), _trimmed_rss_kib()
            live = runtime.statistics().live_objects
    return {
        "rss_kib_per_live_object": (after - before) / (live - 64),
        "rss_kib_per_resting_object": (rested - before) / (live - 64),
        "rss_kib_per_resting_object_trimmed": (trimmed - trimmed_before) / (live - 64),
        "live": live,
    }


async def _rest_all(runtime: Any) -> None:
    """Close the file of every live object, as a budget of one open file would (``_resting.py``)."""
    open_files = runtime.open_files
    budget, open_files.budget = open_files.budget, 1
    for _ in range(100):  # objects whose last fsync is still running rest a moment later
        open_files.trim()
        if len(open_files) <= 1:
            break
        await trio.sleep(0.05)
    open_files.budget = budget


def _trimmed_rss_kib() -> int:
    """VmRSS after ``malloc_trim(0)``: glibc returns freed memory to the system."""
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    return rss_kib()


async def disk_once() -> dict[str, float]:
    with tempfile.TemporaryDirectory(dir="/tmp") as folder:
        async with open_runtime(APP, folder) as runtime:
            await runtime.get("Counter", "one").increment()
            path = runtime.object_path(APP.id_from_name("Counter", "one"))
        return _disk(path)


async def wal_once(n: int) -> dict[str, float]:
    settings = Settings(max_live_objects=max(64, n // 4), idle_timeout=1.0)
    with tempfile.TemporaryDirectory(dir="/tmp") as folder:
        async with open_runtime(APP, folder, settings=settings) as runtime:
            await _touch_all(runtime, n)
            await _touch_all(runtime, n)
            await trio.sleep(2.0)
        return _files(Path(folder))


def _disk(path: Path) -> dict[str, float]:
    """Bytes on disk (``st_blocks``) of the file and its WAL, and the file's size."""
    used = sum(os.stat(p).st_blocks * 512 for p in (path, Path(f"{path}-wal")) if os.path.exists(p))
    return {"disk_kib_one_key": used / 1024, "file_bytes": os.path.getsize(path)}


def _files(folder: Path) -> dict[str, float]:
    wal = sum(1 for _ in folder.rglob("*.sqlite3-wal"))
    files = sum(1 for _ in (folder / "objects").rglob("*.sqlite3"))
    return {"wal_files_after_shutdown": wal, "object_files": files}


def child(kind: str, n: int, as_server: bool) -> dict[str, float]:
    if as_server:
        from server.tuning import tune_process

        tune_process()
    if kind == "rss":
        return trio.run(rss_once, n)
    if kind == "disk":
        return trio.run(disk_once)
    return trio.run(wal_once, n)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--objects", type=int, default=5000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--only", default="rss,disk,wal")
    parser.add_argument("--as-server", action="store_true", help="tune the process as actors serve does")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.objects, args.as_server)))
        return
    for kind in args.only.split(","):
        runs: list[dict[str, float]] = []
        for _ in range(args.repeat):
            out = subprocess.run(
                [
                    sys.executable, "-m", MODULE, "--child", kind, "--objects", str(args.objects),
                    *(["--as-server"] if args.as_server else []),
                ],
                check=True, capture_output=True, text=True,
            )  # fmt: skip
            runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
        for key in runs[0]:
            values = [r[key] for r in runs]
            print(f"{kind}: {key} median {statistics.median(values):.2f} (runs {values})")


if __name__ == "__main__":
    main()
