"""In-process benchmark of the runtime core: throughput, cold activation, commit latency, batches.

Run from the repository root (pytest does not collect it: the file name does not start with test_)::

    .venv/bin/python -m tests.benchmarks.bench_runtime [--repeat N] [--duration S] [--json FILE]
                                                       [--only NAME,...]

Scenarios (``--only`` takes these names; ``commit`` is measured during the ``hot-write`` runs):

- ``hot-write``: 64 concurrent trio tasks call ``increment`` (``storage.get`` + ``storage.put``) on
  ONE object; calls/s, once per :class:`Durability`.
- ``hot-read``: the same with a read-only method (``storage.get`` only) on an object with a file.
- ``spread-write`` / ``spread-read``: 64 tasks take the next object from one shared round-robin
  cursor over 10,000 objects (so consecutive calls of a task always go to different objects, and no
  object ever has two calls in flight); FSYNC. Both run in the same runtime per repeat: a first pass
  writes every object once (unrecorded: it activates them all and creates their files), then
  spread-write is measured, then spread-read.
- ``cold``: objects created with one write each, the runtime closed and reopened, then one read call
  per object, sequentially: per-call latency for an object whose file exists but is not live, for a
  never-written object (no file), and for a warm (live) object.
- ``commit``: a :class:`Hooks` subclass records ``committed(seconds, turns)`` during the measured
  window of the hot-write runs: commit latency (median, p99) and turns per batch (mean, median).

Every repeat uses a fresh data folder (``tempfile.TemporaryDirectory`` under /tmp), deleted
afterwards. Throughput runs warm up (unrecorded), then count the calls that complete in the measured
window, timed with ``time.perf_counter``. Each row reports the median, min and max over the repeats.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import apsw
import trio

from actors import App, Durability, DurableObject, Hooks, ObjectId, Runtime, Settings, open_runtime

MODULE = "tests.benchmarks.bench_runtime"
CALLERS = 64
SPREAD_OBJECTS = 10_000
COLD_OBJECTS = 1_000
TMP_ROOT = "/tmp"
SCENARIOS = ("hot-write", "hot-read", "spread-write", "spread-read", "cold", "commit")


class BenchCounter(DurableObject):
    async def increment(self) -> int:
        value = self.storage.get("value", 0) + 1
        self.storage.put("value", value)
        return value  # type: ignore[no-any-return]

    async def read(self) -> int:
        return self.storage.get("value", 0)  # type: ignore[no-any-return]


APP = App([BenchCounter])


class RecordingHooks(Hooks):
    """While ``recording``: commits, call latencies, activations and evictions."""

    def __init__(self) -> None:
        self.recording = False
        self.commit_seconds: list[float] = []
        self.commit_turns: list[int] = []
        self.call_seconds: list[float] = []
        self.activation_seconds: list[float] = []
        self.evictions: dict[str, int] = {}
        self.errors: list[str] = []

    def committed(self, seconds: float, turns: int) -> None:
        if self.recording:
            self.commit_seconds.append(seconds)
            self.commit_turns.append(turns)

    def call_finished(self, cls: str, method: str, outcome: str, seconds: float) -> None:
        if self.recording:
            self.call_seconds.append(seconds)

    def activated(self, cls: str, seconds: float) -> None:
        if self.recording:
            self.activation_seconds.append(seconds)

    def evicted(self, cls: str, reason: str) -> None:
        if self.recording:
            self.evictions[reason] = self.evictions.get(reason, 0) + 1

    def internal_error(self, reference: str, message: str) -> None:
        self.errors.append(message)


#### Small statistics helpers


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (``p`` in 0..100); NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return float(ordered[rank - 1])


def summary(values: Sequence[float]) -> dict[str, float]:
    if not values:
        return {"n": 0, "median": math.nan, "min": math.nan, "max": math.nan}
    return {
        "n": len(values),
        "median": float(statistics.median(values)),
        "min": float(min(values)),
        "max": float(max(values)),
    }


def latency_summary_ms(seconds: Sequence[float]) -> dict[str, float]:
    ms = [s * 1000 for s in seconds]
    return {
        "n": len(ms),
        "median_ms": float(statistics.median(ms)) if ms else math.nan,
        "mean_ms": float(statistics.fmean(ms)) if ms else math.nan,
        "p90_ms": percentile(ms, 90),
        "p99_ms": percentile(ms, 99),
        "max_ms": max(ms) if ms else math.nan,
    }


#### The load driver


async def drive(
    runtime: Runtime,
    hooks: RecordingHooks,
    next_id: Callable[[], ObjectId],
    method: str,
    *,
    callers: int,
    warmup: float,
    duration: float,
    min_warmup_calls: int = 0,
) -> dict[str, Any]:
    """``callers`` tasks call ``method`` on ``next_id()`` in a loop: warm up, then count a window.

    The warmup lasts ``warmup`` seconds and at least until ``min_warmup_calls`` calls were issued.
    Calls completing inside the measured window are counted (in steady state each caller has one in flight).
    """
    issued = done = 0
    stop = False
    call = runtime.call
    warmed = trio.Event()
    if min_warmup_calls <= 0:
        warmed.set()

    async def caller() -> None:
        nonlocal issued, done
        while not stop:
            object_id = next_id()
            issued += 1
            if issued == min_warmup_calls:
                warmed.set()
            await call(object_id, method)
            done += 1

    stats_before = runtime.statistics()
    async with trio.open_nursery() as nursery:
        started = time.perf_counter()
        for _ in range(callers):
            nursery.start_soon(caller)
        await trio.sleep(warmup)
        await warmed.wait()
        warm_end = time.perf_counter()
        warm_done = done
        hooks.recording = True
        count_start, t_start = done, time.perf_counter()
        stats_start = runtime.statistics()
        await trio.sleep(duration)
        count_end, t_end = done, time.perf_counter()
        hooks.recording = False
        stats_end = runtime.statistics()
        stop = True
    elapsed = t_end - t_start
    calls = count_end - count_start
    return {
        "calls": calls,
        "seconds": elapsed,
        "calls_per_second": calls / elapsed if elapsed > 0 else math.nan,
        "warmup_seconds": warm_end - started,
        "warmup_calls": warm_done,
        "warmup_calls_per_second": warm_done / (warm_end - started),
        "batches_committed": stats_end.batches_committed - stats_start.batches_committed,
        "turns_committed": stats_end.turns_committed - stats_start.turns_committed,
        "live_objects_before": stats_before.live_objects,
        "live_objects_after": stats_end.live_objects,
    }


def fresh_dir() -> tempfile.TemporaryDirectory[str]:
    return tempfile.TemporaryDirectory(prefix="bench-actors-", dir=TMP_ROOT)


def durability_label(durability: Durability) -> str:
    return durability.value


#### Scenarios (one repeat each)


async def hot_once(durability: Durability, method: str, args: argparse.Namespace) -> dict[str, Any]:
    hooks = RecordingHooks()
    with fresh_dir() as data_dir:
        async with open_runtime(
            APP, data_dir, settings=Settings(durability=durability), hooks=hooks
        ) as runtime:
            object_id = APP.id_from_name(BenchCounter, "hot")
            await runtime.call(object_id, "increment")  # the object has a file and a value

            def next_id() -> ObjectId:
                return object_id

            result = await drive(
                runtime, hooks, next_id, method,
                callers=args.callers, warmup=args.warmup, duration=args.duration,
            )  # fmt: skip
    turns = hooks.commit_turns
    result["commits"] = {
        "n": len(turns),
        "latency": latency_summary_ms(hooks.commit_seconds),
        "turns_mean": statistics.fmean(turns) if turns else math.nan,
        "turns_median": float(statistics.median(turns)) if turns else math.nan,
        "turns_max": max(turns) if turns else math.nan,
        "raw_seconds": hooks.commit_seconds,
        "raw_turns": turns,
    }
    result["call_latency"] = latency_summary_ms(hooks.call_seconds)
    result["errors"] = hooks.errors
    return result


async def spread_once(args: argparse.Namespace, want: set[str]) -> dict[str, Any]:
    """Populate (a write pass over every object), then spread-write and spread-read, one runtime."""
    hooks = RecordingHooks()
    ids = [APP.id_from_name(BenchCounter, f"spread-{i}") for i in range(args.objects)]
    cursor = 0

    def next_id() -> ObjectId:
        nonlocal cursor
        object_id = ids[cursor]
        cursor = (cursor + 1) % len(ids)
        return object_id

    out: dict[str, Any] = {}
    with fresh_dir() as data_dir:
        async with open_runtime(APP, data_dir, hooks=hooks) as runtime:
            opened = time.perf_counter()
            if "spread-write" in want:
                # The warmup is one full write pass: every object is activated and gets its file.
                out["spread-write"] = await drive(
                    runtime, hooks, next_id, "increment", callers=args.callers,
                    warmup=args.warmup, duration=args.duration, min_warmup_calls=len(ids),
                )  # fmt: skip
                out["spread-write"]["evictions"] = dict(hooks.evictions)
                out["spread-write"]["activations"] = len(hooks.activation_seconds)
            else:
                populate = await drive(
                    runtime, hooks, next_id, "increment", callers=args.callers,
                    warmup=0.0, duration=0.0, min_warmup_calls=len(ids),
                )  # fmt: skip
                out["populate"] = {k: populate[k] for k in ("warmup_seconds", "warmup_calls")}
            if "spread-read" in want:
                hooks.evictions.clear()
                hooks.activation_seconds.clear()
                out["spread-read"] = await drive(
                    runtime, hooks, next_id, "read", callers=args.callers,
                    warmup=args.warmup, duration=args.duration,
                )  # fmt: skip
                out["spread-read"]["evictions"] = dict(hooks.evictions)
                out["spread-read"]["activations"] = len(hooks.activation_seconds)
            closing = time.perf_counter()
        closed = time.perf_counter()
    out["open_seconds"] = closing - opened
    out["close_seconds"] = closed - closing
    out["errors"] = hooks.errors
    return out


async def sequential_latencies(runtime: Runtime, ids: Sequence[ObjectId]) -> list[float]:
    call, perf = runtime.call, time.perf_counter
    latencies = []
    for object_id in ids:
        started = perf()
        await call(object_id, "read")
        latencies.append(perf() - started)
    return latencies


async def cold_once(args: argparse.Namespace) -> dict[str, Any]:
    n = args.cold_objects
    stored = [APP.id_from_name(BenchCounter, f"cold-{i}") for i in range(n)]
    never = [APP.id_from_name(BenchCounter, f"never-{i}") for i in range(n)]
    out: dict[str, Any] = {"objects": n}
    with fresh_dir() as data_dir:
        # Create the files: one write per object, 64 at a time.
        started = time.perf_counter()
        async with open_runtime(APP, data_dir) as runtime:
            remaining = iter(stored)

            async def writer() -> None:
                for object_id in remaining:
                    await runtime.call(object_id, "increment")

            async with trio.open_nursery() as nursery:
                for _ in range(args.callers):
                    nursery.start_soon(writer)
            created = time.perf_counter()
        out["create_seconds"] = created - started
        out["close_seconds"] = time.perf_counter() - created

        hooks = RecordingHooks()
        reopen = time.perf_counter()
        async with open_runtime(APP, data_dir, hooks=hooks) as runtime:
            out["reopen_seconds"] = time.perf_counter() - reopen
            assert not any(runtime.is_live(object_id) for object_id in stored)
            hooks.recording = True
            cold_file = await sequential_latencies(runtime, stored)
            activations_file = list(hooks.activation_seconds)
            hooks.activation_seconds.clear()
            cold_none = await sequential_latencies(runtime, never)
            activations_none = list(hooks.activation_seconds)
            hooks.activation_seconds.clear()
            warm = await sequential_latencies(runtime, stored)
            hooks.recording = False
            assert not hooks.activation_seconds, "a warm call activated an object"
    out["cold_file"] = latency_summary_ms(cold_file)
    out["cold_file"]["activation_hook"] = latency_summary_ms(activations_file)
    out["cold_no_file"] = latency_summary_ms(cold_none)
    out["cold_no_file"]["activation_hook"] = latency_summary_ms(activations_none)
    out["warm"] = latency_summary_ms(warm)
    out["raw_ms"] = {
        "cold_file": [s * 1000 for s in cold_file],
        "cold_no_file": [s * 1000 for s in cold_none],
        "warm": [s * 1000 for s in warm],
    }
    out["errors"] = hooks.errors
    return out


#### Rows, table, facts


class Rows:
    """Scenario rows: name -> per-repeat values, with a unit."""

    def __init__(self) -> None:
        self.values: dict[str, list[float]] = {}
        self.units: dict[str, str] = {}

    def add(self, name: str, value: float, unit: str) -> None:
        self.values.setdefault(name, []).append(value)
        self.units[name] = unit

    def table(self) -> list[dict[str, Any]]:
        return [
            {"scenario": name, **summary(values), "unit": self.units[name]}
            for name, values in self.values.items()
        ]


def format_number(value: float) -> str:
    if math.isnan(value):
        return "n/a"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 100:
        return f"{value:.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.3f}"


def render_table(table: list[dict[str, Any]]) -> str:
    header = ("scenario", "median", "min", "max", "unit")
    lines = [
        (row["scenario"], *(format_number(row[k]) for k in ("median", "min", "max")), row["unit"])
        for row in table
    ]
    widths = [max(len(str(x)) for x in col) for col in zip(header, *lines, strict=True)]

    def fmt(cells: Sequence[str]) -> str:
        first = cells[0].ljust(widths[0])
        middle = [c.rjust(w) for c, w in zip(cells[1:4], widths[1:4], strict=True)]
        return "  ".join([first, *middle, cells[4]])

    out = [fmt(header), "  ".join("-" * w for w in widths)]
    out.extend(fmt(line) for line in lines)
    return "\n".join(out)


def filesystem_of(path: str) -> str:
    """The file system type of the mount holding ``path`` (from /proc/mounts), or "unknown"."""
    try:
        mounts = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return "unknown"
    best, kind = "", "unknown"
    real = os.path.realpath(path)
    for line in mounts:
        parts = line.split()
        if len(parts) < 3 or len(parts[1]) <= len(best):
            continue
        if real == parts[1] or real.startswith(parts[1].rstrip("/") + "/"):
            best, kind = parts[1], parts[2]
    return kind


def git_revision() -> str:
    env = {**os.environ, "GIT_OPTIONAL_LOCKS": "0"}
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, env=env,
            check=True, timeout=10,
        ).stdout.strip()  # fmt: skip
        dirty = subprocess.run(
            ["git", "diff", "--quiet", "HEAD", "--", "actors"], capture_output=True, env=env,
            timeout=10, check=False,
        ).returncode  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{head}{' (actors/ modified)' if dirty else ''}"


def fsync_probe_ms(root: str, samples: int = 50) -> float:
    """Median milliseconds of a 4 KiB write + fsync in a fresh file under ``root`` (disk context)."""
    times = []
    with tempfile.TemporaryDirectory(prefix="bench-fsync-", dir=root) as folder:
        fd = os.open(os.path.join(folder, "probe"), os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            for _ in range(samples):
                os.write(fd, b"x" * 4096)
                started = time.perf_counter()
                os.fsync(fd)
                times.append((time.perf_counter() - started) * 1000)
        finally:
            os.close(fd)
    return float(statistics.median(times))


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_facts() -> dict[str, Any]:
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    return {
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpu_affinity": affinity,
        "trio": trio.__version__,
        "apsw": apsw.apsw_version(),
        "sqlite": apsw.sqlitelibversion(),
        "data_dir_root": TMP_ROOT,
        "data_dir_filesystem": filesystem_of(TMP_ROOT),
        "fsync_4k_median_ms": round(fsync_probe_ms(TMP_ROOT), 3),
        "git": git_revision(),
    }


def command_line() -> str:
    exe = sys.executable
    rel = os.path.relpath(exe)
    if not rel.startswith(".."):
        exe = rel
    return shlex.join([exe, "-m", MODULE, *sys.argv[1:]])


def settings_facts() -> dict[str, Any]:
    return {
        k: (v.value if isinstance(v, Durability) else v)
        for k, v in dataclasses.asdict(Settings()).items()
    }


#### Main


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=f"python -m {MODULE}", description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=5, help="repeats per scenario (default 5)")
    parser.add_argument("--duration", type=float, default=3.0, help="measured seconds (default 3)")
    parser.add_argument("--warmup", type=float, default=0.5, help="warmup seconds (default 0.5)")
    parser.add_argument("--json", type=Path, help="write every raw number to this file")
    parser.add_argument("--only", help=f"comma-separated scenarios: {','.join(SCENARIOS)}")
    parser.add_argument("--callers", type=int, default=CALLERS, help="concurrent tasks (64)")
    parser.add_argument(
        "--objects", type=int, default=SPREAD_OBJECTS, help="spread objects (10000)"
    )
    parser.add_argument(
        "--cold-objects", type=int, default=COLD_OBJECTS, help="objects per cold repeat (1000)"
    )
    args = parser.parse_args(argv)
    if args.only:
        names = {name.strip() for name in args.only.split(",") if name.strip()}
        unknown = names - set(SCENARIOS)
        if unknown:
            parser.error(
                f"unknown scenario(s) {sorted(unknown)}; choose from {', '.join(SCENARIOS)}"
            )
        args.selected = names
    else:
        args.selected = set(SCENARIOS)
    if args.repeat < 1 or args.duration <= 0 or args.warmup < 0 or args.callers < 1:
        parser.error("--repeat and --callers must be >= 1, --duration > 0, --warmup >= 0")
    return args


def progress(message: str) -> None:
    print(f"  {message}", file=sys.stderr, flush=True)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    rows = Rows()
    raw: dict[str, Any] = {}
    selected = args.selected
    durabilities = (Durability.FSYNC, Durability.POWER_LOSS_UNSAFE)

    if selected & {"hot-write", "commit"}:
        for durability in durabilities:
            label = durability_label(durability)
            runs = raw.setdefault(f"hot-write[{label}]", [])
            for i in range(args.repeat):
                result = await hot_once(durability, "increment", args)
                runs.append(result)
                progress(
                    f"hot-write[{label}] {i + 1}/{args.repeat}: "
                    f"{result['calls_per_second']:,.0f} calls/s"
                )
            if "hot-write" in selected:
                for result in runs:
                    rows.add(f"hot-write [{label}]", result["calls_per_second"], "calls/s")
        for durability in durabilities:
            label = durability_label(durability)
            for result in raw[f"hot-write[{label}]"]:
                commits, calls = result["commits"], result["call_latency"]
                rows.add(f"commit latency median [{label}]", commits["latency"]["median_ms"], "ms")
                rows.add(f"commit latency p99 [{label}]", commits["latency"]["p99_ms"], "ms")
                rows.add(f"turns per batch mean [{label}]", commits["turns_mean"], "turns")
                rows.add(f"turns per batch median [{label}]", commits["turns_median"], "turns")
                rows.add(f"hot-write call latency median [{label}]", calls["median_ms"], "ms")
                rows.add(f"hot-write call latency p99 [{label}]", calls["p99_ms"], "ms")

    if "hot-read" in selected:
        for durability in durabilities:
            label = durability_label(durability)
            runs = raw.setdefault(f"hot-read[{label}]", [])
            for i in range(args.repeat):
                result = await hot_once(durability, "read", args)
                del result["commits"]  # a read-only turn never commits
                runs.append(result)
                rows.add(f"hot-read [{label}]", result["calls_per_second"], "calls/s")
                progress(
                    f"hot-read[{label}] {i + 1}/{args.repeat}: "
                    f"{result['calls_per_second']:,.0f} calls/s"
                )

    spread_wanted = selected & {"spread-write", "spread-read"}
    if spread_wanted:
        runs = raw.setdefault("spread[fsync]", [])
        for i in range(args.repeat):
            result = await spread_once(args, spread_wanted)
            runs.append(result)
            parts = []
            for name in ("spread-write", "spread-read"):
                if name in result:
                    rows.add(f"{name} [fsync]", result[name]["calls_per_second"], "calls/s")
                    parts.append(f"{name} {result[name]['calls_per_second']:,.0f} calls/s")
            progress(f"spread {i + 1}/{args.repeat}: {', '.join(parts)}")
        if "spread-write" in spread_wanted:
            for result in runs:
                rows.add(
                    "spread first write pass (creates files)",
                    result["spread-write"]["warmup_calls_per_second"],
                    "calls/s",
                )

    if "cold" in selected:
        runs = raw.setdefault("cold", [])
        for i in range(args.repeat):
            result = await cold_once(args)
            runs.append(result)
            rows.add("cold activation, file exists", result["cold_file"]["median_ms"], "ms")
            rows.add("cold activation, no file", result["cold_no_file"]["median_ms"], "ms")
            rows.add("warm call (live object)", result["warm"]["median_ms"], "ms")
            progress(
                f"cold {i + 1}/{args.repeat}: file {result['cold_file']['median_ms']:.3f} ms, "
                f"no file {result['cold_no_file']['median_ms']:.3f} ms, "
                f"warm {result['warm']['median_ms']:.3f} ms"
            )
        for result in runs:
            rows.add("cold activation, file exists p99", result["cold_file"]["p99_ms"], "ms")

    return {"table": rows.table(), "raw": raw}


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    facts = machine_facts()
    command = command_line()
    print(f"command: {command}")
    for key, value in facts.items():
        print(f"{key}: {value}")
    print(f"settings (defaults, used unless noted): {settings_facts()}")
    print(
        f"load: {args.callers} concurrent trio tasks; repeats {args.repeat}; "
        f"warmup {args.warmup} s; measured {args.duration} s; "
        f"spread objects {args.objects}; cold objects {args.cold_objects}"
    )
    print("", flush=True)
    started = time.perf_counter()
    results = trio.run(run, args)
    total = time.perf_counter() - started
    print()
    print(render_table(results["table"]))
    print()
    print(f"total wall time: {total:.1f} s")
    errors = [
        error
        for runs in results["raw"].values()
        for result in runs
        for error in result.get("errors", [])
    ]
    if errors:
        print(f"INTERNAL ERRORS reported through Hooks: {len(errors)}; first: {errors[0]}")
    if args.json:
        document = {
            "command": command,
            "machine": facts,
            "settings": settings_facts(),
            "parameters": {
                "repeat": args.repeat,
                "duration": args.duration,
                "warmup": args.warmup,
                "callers": args.callers,
                "spread_objects": args.objects,
                "cold_objects": args.cold_objects,
                "selected": sorted(args.selected),
            },
            "total_seconds": total,
            "table": results["table"],
            "raw": results["raw"],
        }
        args.json.write_text(json.dumps(document, indent=1, allow_nan=True) + "\n")
        print(f"raw numbers written to {args.json}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
