"""How long a clean shutdown takes with many live objects, and what it leaves on disk.

Run from the repository root (pytest does not collect it)::

    .venv/bin/python -m tests.benchmarks.bench_shutdown [--objects N] [--repeat 3] [--rest]

In a fresh process per repeat: ``N`` counters are written once each (so each has a ``-wal`` with one
commit in it) and kept live (idle timeout 1 hour); with ``--rest`` their files rest (closed,
``_resting.py``) as they go, with ``max_open_files`` set to 1, as on a node with more live objects
than open files. Then the runtime
closes, and the time from the start of its shutdown to its end is measured (the drain: every object
evicted, every ``-wal`` folded into its file), with the process's CPU time meanwhile, and the
``-wal`` files left afterwards are counted (the promise: none). Each repeat uses a fresh data folder
under /tmp.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import trio

from actors import Settings, open_runtime

from .bench_footprint import APP, _touch_all

MODULE = "tests.benchmarks.bench_shutdown"


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def once(n: int, rest: bool) -> dict[str, float]:
    # with ``rest``, one open file at most: every other file rests as soon as the next one opens
    open_files = 1 if rest else n + 10
    settings = Settings(max_live_objects=n + 10, max_open_files=open_files, idle_timeout=3600.0)
    with tempfile.TemporaryDirectory(dir="/tmp") as folder:
        async with open_runtime(APP, folder, settings=settings) as runtime:
            await _touch_all(runtime, n)  # creates each file (a creation round)
            await _touch_all(runtime, n)  # a commit through each file's WAL
            live = runtime.statistics().live_objects
            started, cpu = time.perf_counter(), _cpu_seconds()
        seconds, cpu = time.perf_counter() - started, _cpu_seconds() - cpu
        wal = _count_wal_files(Path(folder))
    return {"live": live, "shutdown_s": seconds, "cpu_s": cpu, "wal_files_left": wal}


def _count_wal_files(folder: Path) -> int:
    return sum(1 for _ in folder.rglob("*.sqlite3-wal"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--objects", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--rest", action="store_true", help="let the files rest (close) first")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(trio.run(once, args.objects, args.rest)))
        return
    runs: list[dict[str, float]] = []
    for _ in range(args.repeat):
        command = [sys.executable, "-m", MODULE, "--child", "--objects", str(args.objects)]
        command += ["--rest"] if args.rest else []
        out = subprocess.run(command, check=True, capture_output=True, text=True)
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    print(f"load average {os.getloadavg()[0]:.1f}")
    for key in runs[0]:
        values = [r[key] for r in runs]
        print(f"{key}: median {statistics.median(values):.2f} (runs {[round(v, 2) for v in values]})")


if __name__ == "__main__":
    main()
