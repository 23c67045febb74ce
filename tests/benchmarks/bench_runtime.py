"""In-process benchmark of the runtime core: throughput, cold activation, commit latency, batches.

Run from the repository root (pytest does not collect it: the file name does not start with test_)::

    .venv/bin/python -m tests.benchmarks.bench_runtime [--repeat N] [--duration S] [--json FILE]
                                                       [--only NAME,...]

Scenarios (``--only`` takes these names; ``commit`` is measured during the ``hot-write`` runs):

- ``hot-write``: 64 concurrent trio tasks call ``increment`` (``storage.get`` + ``storage.put``) on
  ONE object; calls/s, once per :class:`Durability`.
- ``hot-read``: the same with a read-only method (``storage.get`` only) on an object with a file.
- ``commit``: a :class:`Hooks` subclass records ``committed(seconds, turns)`` during the measured
  window of the hot-write runs: commit latency (median, p99) and turns per batch (mean, median).
  With pipelined group commit the hook times the COMMIT only, not the fsync after it, so the fsync
  is timed as well, by wrapping the private ``ObjectFile.sync`` when it exists ("instrumented").
- ``cold``: objects created with one write each, the runtime closed and reopened, then one read call
  per object, sequentially: per-call latency for an object whose file exists but is not live, for a
  never-written object (no file), and for a warm (live) object.
- ``spread-write`` / ``spread-read``: 64 tasks take the next object from one shared round-robin
  cursor over 10,000 objects (so consecutive calls of a task always go to different objects, and no
  object has two calls in flight); default settings (FSYNC, idle timeout 10 s, 10,000 live
  objects). Each repeat runs each on a fresh folder, so the objects are new: unless a full pass of
  the cursor fits in warmup + window, every measured read activates an object that has no file and
  every measured write creates the object's file (rows give the shares). ``--spread-populate``
  instead writes every object once first (one catalog fsync per new object: minutes here) and runs
  all repeats (spread-read, then spread-write) in that runtime, the first warmup being a full pass.

Every repeat uses a fresh data folder (``tempfile.TemporaryDirectory`` under /tmp; with
``--spread-populate`` the spread repeats share one), deleted afterwards. Throughput runs warm up
(unrecorded), then count the calls that complete successfully in the measured window, timed with
``time.perf_counter``. Each row reports the median, min and max over the repeats. Calls that fail
are counted, and the affected rows are flagged and explained.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
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
from actors.errors import ActorError

MODULE = "tests.benchmarks.bench_runtime"
CALLERS = 64
SPREAD_OBJECTS = 10_000
COLD_OBJECTS = 200
TMP_ROOT = "/tmp"
SCENARIOS = ("hot-write", "hot-read", "commit", "cold", "spread-write", "spread-read")
DURABILITIES = (Durability.FSYNC, Durability.POWER_LOSS_UNSAFE)


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


class SyncTimer:
    """Times the runtime's own WAL fsync (pipelined group commit) by wrapping ``ObjectFile.sync``.

    ``ObjectFile.sync`` is private and may not exist (then ``installed`` is False and the fsync rows
    are absent). The wrapper runs in the fsync worker thread; it adds one perf_counter pair.
    """

    def __init__(self) -> None:
        self.recording = False
        self.seconds: list[float] = []
        self.installed = False

    def install(self) -> None:
        try:
            from actors import _file
        except ImportError:
            return
        original = getattr(_file.ObjectFile, "sync", None)
        if original is None or getattr(original, "_bench_wrapped", False):
            return
        timer = self

        def sync(self: Any, *args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return original(self, *args, **kwargs)
            finally:
                if timer.recording:
                    timer.seconds.append(time.perf_counter() - started)

        sync._bench_wrapped = True  # type: ignore[attr-defined]
        _file.ObjectFile.sync = sync
        self.installed = True

    def start(self) -> None:
        self.seconds = []
        self.recording = True

    def stop(self) -> list[float]:
        self.recording = False
        return self.seconds


SYNC_TIMER = SyncTimer()


#### Small statistics helpers


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (``p`` in 0..100); NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return float(ordered[rank - 1])


def summary(values: Sequence[float]) -> dict[str, float]:
    finite = [v for v in values if not math.isnan(v)]
    if not finite:
        return {"n": len(values), "median": math.nan, "min": math.nan, "max": math.nan}
    return {
        "n": len(values),
        "median": float(statistics.median(finite)),
        "min": float(min(finite)),
        "max": float(max(finite)),
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
    Calls that complete successfully inside the measured window are counted; failed calls (an
    ActorError) are counted by type and the caller goes on.
    """
    issued = done = failed = 0
    errors: dict[str, int] = {}
    stop = False
    call = runtime.call
    warmed = trio.Event()
    if min_warmup_calls <= 0:
        warmed.set()

    async def caller() -> None:
        nonlocal issued, done, failed
        while not stop:
            object_id = next_id()
            issued += 1
            if issued == min_warmup_calls:
                warmed.set()
            try:
                await call(object_id, method)
            except ActorError as exc:
                failed += 1
                errors[exc.type] = errors.get(exc.type, 0) + 1
            else:
                done += 1

    async with trio.open_nursery() as nursery:
        started = time.perf_counter()
        for _ in range(callers):
            nursery.start_soon(caller)
        await trio.sleep(warmup)
        await warmed.wait()
        warm_end = time.perf_counter()
        warm_done = done
        hooks.recording = True
        SYNC_TIMER.start()
        count_start, failed_start, issued_start = done, failed, issued
        stats_start = runtime.statistics()
        t_start = time.perf_counter()
        await trio.sleep(duration)
        t_end = time.perf_counter()
        count_end, failed_end, issued_end = done, failed, issued
        hooks.recording = False
        sync_seconds = SYNC_TIMER.stop()
        stats_end = runtime.statistics()
        stop = True
    elapsed = t_end - t_start
    calls = count_end - count_start
    return {
        "calls": calls,
        "failed_calls": failed_end - failed_start,
        "errors_by_type_whole_run": errors,
        "seconds": elapsed,
        "calls_per_second": calls / elapsed if elapsed > 0 else math.nan,
        "issued_at_start": issued_start,
        "issued_at_end": issued_end,
        "warmup_seconds": warm_end - started,
        "warmup_calls": warm_done,
        "warmup_calls_per_second": warm_done / (warm_end - started),
        "batches_committed": stats_end.batches_committed - stats_start.batches_committed,
        "turns_committed": stats_end.turns_committed - stats_start.turns_committed,
        "live_objects_at_start": stats_start.live_objects,
        "live_objects_at_end": stats_end.live_objects,
        "sync_seconds": sync_seconds,
    }


def fresh_dir() -> tempfile.TemporaryDirectory[str]:
    return tempfile.TemporaryDirectory(prefix="bench-actors-", dir=TMP_ROOT)


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
    syncs = result.pop("sync_seconds")
    result["commits"] = {
        "n": len(turns),
        "latency": latency_summary_ms(hooks.commit_seconds),
        "turns_mean": statistics.fmean(turns) if turns else math.nan,
        "turns_median": float(statistics.median(turns)) if turns else math.nan,
        "turns_max": max(turns) if turns else math.nan,
        "raw_seconds": hooks.commit_seconds,
        "raw_turns": turns,
    }
    result["fsyncs"] = {
        "instrumented": SYNC_TIMER.installed,
        "n": len(syncs),
        "latency": latency_summary_ms(syncs),
        "turns_per_fsync": result["turns_committed"] / len(syncs) if syncs else math.nan,
        "raw_seconds": syncs,
    }
    result["call_latency"] = latency_summary_ms(hooks.call_seconds)
    result["internal_errors"] = hooks.errors
    return result


async def sequential_latencies(
    runtime: Runtime, ids: Sequence[ObjectId]
) -> tuple[list[float], dict[str, int]]:
    """Call ``read`` on each object in turn; latencies of the calls that succeeded, errors by type."""
    call, perf = runtime.call, time.perf_counter
    latencies: list[float] = []
    errors: dict[str, int] = {}
    for object_id in ids:
        started = perf()
        try:
            await call(object_id, "read")
        except ActorError as exc:
            errors[exc.type] = errors.get(exc.type, 0) + 1
            continue
        latencies.append(perf() - started)
    return latencies, errors


async def cold_once(args: argparse.Namespace, repeat: int) -> dict[str, Any]:
    n = args.cold_objects
    stored = [APP.id_from_name(BenchCounter, f"cold-{repeat}-{i}") for i in range(n)]
    never = [APP.id_from_name(BenchCounter, f"never-{repeat}-{i}") for i in range(n)]
    out: dict[str, Any] = {"objects": n}
    with fresh_dir() as data_dir:
        # Create the files: one write per object, 64 at a time. No fsync here (it is only set-up and
        # leaves the same files once closed); the measured runtime below uses the defaults (FSYNC).
        started = time.perf_counter()
        unsafe = Settings(durability=Durability.POWER_LOSS_UNSAFE)
        async with open_runtime(APP, data_dir, settings=unsafe) as runtime:
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
            kinds = (("cold_file", stored), ("cold_no_file", never), ("warm", stored))
            for kind, ids in kinds:
                hooks.activation_seconds.clear()
                latencies, errors = await sequential_latencies(runtime, ids)
                out[kind] = latency_summary_ms(latencies)
                out[kind]["errors"] = errors
                out[kind]["activation_hook"] = latency_summary_ms(hooks.activation_seconds)
                out.setdefault("raw_ms", {})[kind] = [s * 1000 for s in latencies]
            hooks.recording = False
    out["internal_errors"] = hooks.errors
    return out


def spread_cursor(n: int, prefix: str) -> tuple[list[ObjectId], Callable[[], ObjectId]]:
    """``n`` ids and one shared round-robin cursor over them (so consecutive calls of a task go to
    different objects, and no object has two calls in flight)."""
    ids = [APP.id_from_name(BenchCounter, f"{prefix}-{i}") for i in range(n)]
    position = 0

    def next_id() -> ObjectId:
        nonlocal position
        object_id = ids[position % n]
        position += 1
        return object_id

    return ids, next_id


def spread_window(result: dict[str, Any], hooks: RecordingHooks, n: int, base: int) -> dict[str, Any]:
    """Add what the measured window did: activations, evictions, calls that first touched an object.

    ``base`` is how many calls the cursor had issued before this drive started.
    """
    result.pop("sync_seconds")
    first, last = base + result["issued_at_start"], base + result["issued_at_end"]
    result["first_touch_calls"] = max(0, min(n, last) - min(n, first))
    result["activations"] = len(hooks.activation_seconds)
    result["evictions"] = dict(hooks.evictions)
    hooks.activation_seconds.clear()
    hooks.evictions.clear()
    return result


async def spread_fresh_once(kind: str, args: argparse.Namespace) -> dict[str, Any]:
    """One repeat of spread-read or spread-write on a fresh data folder and runtime (defaults).

    The objects are new: unless a full pass of the cursor fits in warmup + window, every measured
    call is its object's first (a read activates an object with no file; a write creates its file).
    """
    hooks = RecordingHooks()
    n = args.objects
    _, next_id = spread_cursor(n, kind)
    method = "increment" if kind == "spread-write" else "read"
    with fresh_dir() as data_dir:
        async with open_runtime(APP, data_dir, hooks=hooks) as runtime:
            result = await drive(
                runtime, hooks, next_id, method,
                callers=args.callers, warmup=args.warmup, duration=args.duration,
            )  # fmt: skip
            result = spread_window(result, hooks, n, 0)
            closing = time.perf_counter()
        result["close_seconds"] = time.perf_counter() - closing
    result["internal_errors"] = hooks.errors
    return result


async def spread_populated(args: argparse.Namespace, want: set[str]) -> dict[str, Any]:
    """Populate ``args.objects`` objects once, then ``args.repeat`` x (spread-read, spread-write).

    All in one runtime with default settings on one fresh data folder (``--spread-populate``).
    """
    hooks = RecordingHooks()
    n = args.objects
    ids, next_id = spread_cursor(n, "spread")
    issued = 0

    out: dict[str, Any] = {"objects": n, "repeats": []}
    with fresh_dir() as data_dir:
        opened = time.perf_counter()
        async with open_runtime(APP, data_dir, hooks=hooks) as runtime:
            remaining = iter(ids)
            populate_errors: dict[str, int] = {}

            async def writer() -> None:
                for object_id in remaining:
                    try:
                        await runtime.call(object_id, "increment")
                    except ActorError as exc:
                        populate_errors[exc.type] = populate_errors.get(exc.type, 0) + 1

            async with trio.open_nursery() as nursery:
                for _ in range(args.callers):
                    nursery.start_soon(writer)
            populated = time.perf_counter() - opened
            out["populate"] = {
                "seconds": populated,
                "calls_per_second": n / populated,
                "errors": populate_errors,
            }
            progress(f"spread: populated {n} objects in {populated:.1f} s ({n / populated:,.0f}/s)")
            for i in range(args.repeat):
                repeat: dict[str, Any] = {}
                # The first warmup makes one full pass, so that every object is live (populating
                # took longer than the idle timeout); later repeats find them live already.
                read = await drive(
                    runtime, hooks, next_id, "read", callers=args.callers,
                    warmup=args.warmup, duration=args.duration, min_warmup_calls=n if i == 0 else 0,
                )  # fmt: skip
                repeat["spread-read"] = spread_window(read, hooks, n, n + issued)
                issued += read["issued_at_end"]
                if "spread-write" in want:
                    write = await drive(
                        runtime, hooks, next_id, "increment", callers=args.callers,
                        warmup=args.warmup, duration=args.duration,
                    )  # fmt: skip
                    repeat["spread-write"] = spread_window(write, hooks, n, n + issued)
                    issued += write["issued_at_end"]
                out["repeats"].append(repeat)
                parts = [f"{k} {v['calls_per_second']:,.0f} calls/s" for k, v in repeat.items()]
                progress(f"spread {i + 1}/{args.repeat}: {', '.join(parts)}")
            closing = time.perf_counter()
        out["close_seconds"] = time.perf_counter() - closing
    out["internal_errors"] = hooks.errors
    return out


#### Rows, table, facts


class Rows:
    """Scenario rows: name -> per-repeat values, with a unit and notes (failed calls and the like)."""

    def __init__(self) -> None:
        self.values: dict[str, list[float]] = {}
        self.units: dict[str, str] = {}
        self.notes: dict[str, list[str]] = {}

    def add(self, name: str, value: float, unit: str) -> None:
        self.values.setdefault(name, []).append(value)
        self.units[name] = unit

    def note(self, name: str, message: str) -> None:
        notes = self.notes.setdefault(name, [])
        if message not in notes:
            notes.append(message)

    def note_errors(self, name: str, errors: dict[str, int], what: str = "calls failed") -> None:
        if errors:
            listed = ", ".join(f"{count} {kind}" for kind, count in sorted(errors.items()))
            self.note(name, f"{what}: {listed}")

    def table(self) -> list[dict[str, Any]]:
        return [
            {
                "scenario": name,
                **summary(values),
                "unit": self.units[name],
                "notes": self.notes.get(name, []),
            }
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
    if abs(value) >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}"


def render_table(table: list[dict[str, Any]]) -> str:
    header = ("scenario", "median", "min", "max", "unit")
    lines = []
    footnotes = []
    for row in table:
        name = row["scenario"]
        if row["notes"]:
            footnotes.append(f"[{len(footnotes) + 1}] {name}: {'; '.join(row['notes'])}")
            name = f"{name} [{len(footnotes)}]"
        numbers = (format_number(row[k]) for k in ("median", "min", "max"))
        lines.append((name, *numbers, row["unit"]))
    widths = [max(len(str(x)) for x in col) for col in zip(header, *lines, strict=True)]

    def fmt(cells: Sequence[str]) -> str:
        first = cells[0].ljust(widths[0])
        middle = [c.rjust(w) for c, w in zip(cells[1:4], widths[1:4], strict=True)]
        return "  ".join([first, *middle, cells[4]])

    out = [fmt(header), "  ".join("-" * w for w in widths)]
    out.extend(fmt(line) for line in lines)
    if footnotes:
        out.append("")
        out.extend(footnotes)
    return "\n".join(out)


def render_markdown(table: list[dict[str, Any]]) -> str:
    """The table as Markdown (what BENCHMARKS.md holds), footnotes as a list under it."""
    out = ["| Scenario | Median | Min | Max | Unit |", "|---|---:|---:|---:|---|"]
    footnotes = []
    for row in table:
        name = row["scenario"]
        if row["notes"]:
            footnotes.append(f"{len(footnotes) + 1}. {name}: {'; '.join(row['notes'])}")
            name = f"{name} ({len(footnotes)})"
        numbers = " | ".join(format_number(row[k]) for k in ("median", "min", "max"))
        out.append(f"| {name} | {numbers} | {row['unit']} |")
    if footnotes:
        out.append("")
        out.extend(footnotes)
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
    """HEAD and whether actors/ differs from it (read-only git commands, no index refresh)."""
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
    """Median ms of a 4 KiB write + fsync in a fresh file under ``root`` (the disk's speed)."""
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
        "fsync_4k_median_ms_before": round(fsync_probe_ms(TMP_ROOT), 3),
        "open_files_limit": open_files_limit(),
        "load_average_before": load_average(),
        "git": git_revision(),
    }


def load_average() -> str:
    """1/5/15-minute load averages: other work on the machine skews every number here."""
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "unknown"


def open_files_limit() -> str:
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (ImportError, OSError, ValueError):
        return "unknown"
    return f"{soft}/{hard}"


def command_line() -> str:
    exe = sys.executable
    rel = os.path.relpath(exe)
    if not rel.startswith(".."):
        exe = rel
    return shlex.join([exe, "-m", MODULE, *sys.argv[1:]])


def settings_facts() -> dict[str, Any]:
    return {
        k: (v.value if isinstance(v, Durability) else v) for k, v in dataclasses.asdict(Settings()).items()
    }


#### Main


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=f"python -m {MODULE}", description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=5, help="repeats per scenario (default 5)")
    parser.add_argument("--duration", type=float, default=3.0, help="measured seconds (default 3)")
    parser.add_argument("--warmup", type=float, default=0.5, help="warmup seconds (default 0.5)")
    parser.add_argument("--json", type=Path, help="write every raw number to this file")
    parser.add_argument("--only", help=f"comma-separated scenarios: {','.join(SCENARIOS)}")
    parser.add_argument(
        "--spread-populate",
        action="store_true",
        help="write every spread object once first and run all spread repeats in that runtime "
        "(slow: ~5 min on a 2-core VM with ext4)",
    )
    parser.add_argument(
        "--markdown", action="store_true", help="also print the table as Markdown (BENCHMARKS.md)"
    )
    parser.add_argument(
        "--verbose", action="store_true", help="show the runtime's log (internal error tracebacks)"
    )
    parser.add_argument("--callers", type=int, default=CALLERS, help="concurrent tasks (64)")
    parser.add_argument("--objects", type=int, default=SPREAD_OBJECTS, help="spread objects (10000)")
    parser.add_argument(
        "--cold-objects", type=int, default=COLD_OBJECTS, help="objects per cold repeat (200)"
    )
    args = parser.parse_args(argv)
    if args.only:
        names = {name.strip() for name in args.only.split(",") if name.strip()}
        unknown = names - set(SCENARIOS)
        if unknown:
            parser.error(f"unknown scenario(s) {sorted(unknown)}; choose from {','.join(SCENARIOS)}")
        args.selected = names
    else:
        args.selected = set(SCENARIOS)
    if args.repeat < 1 or args.duration <= 0 or args.warmup < 0 or args.callers < 1:
        parser.error("--repeat and --callers must be >= 1, --duration > 0, --warmup >= 0")
    return args


def progress(message: str) -> None:
    print(f"  {message}", file=sys.stderr, flush=True)


async def run_hot(args: argparse.Namespace, rows: Rows, raw: dict[str, Any]) -> None:
    selected = args.selected
    if selected & {"hot-write", "commit"}:
        for durability in DURABILITIES:
            label = durability.value
            runs = raw.setdefault(f"hot-write[{label}]", [])
            for i in range(args.repeat):
                result = await hot_once(durability, "increment", args)
                runs.append(result)
                progress(
                    f"hot-write[{label}] {i + 1}/{args.repeat}: {result['calls_per_second']:,.0f} calls/s"
                )
            for result in runs:
                name = f"hot-write [{label}]"
                if "hot-write" in selected:
                    rows.add(name, result["calls_per_second"], "calls/s")
                    rows.note_errors(name, result["errors_by_type_whole_run"])
        for durability in DURABILITIES:
            label = durability.value
            for result in raw[f"hot-write[{label}]"]:
                commits, calls, fsyncs = result["commits"], result["call_latency"], result["fsyncs"]
                rows.add(f"commit latency median [{label}]", commits["latency"]["median_ms"], "ms")
                rows.add(f"commit latency p99 [{label}]", commits["latency"]["p99_ms"], "ms")
                rows.add(f"turns per batch mean [{label}]", commits["turns_mean"], "turns")
                rows.add(f"turns per batch median [{label}]", commits["turns_median"], "turns")
                if fsyncs["n"]:
                    name = f"WAL fsync median (instrumented) [{label}]"
                    rows.add(name, fsyncs["latency"]["median_ms"], "ms")
                    name = f"WAL fsync p99 (instrumented) [{label}]"
                    rows.add(name, fsyncs["latency"]["p99_ms"], "ms")
                    name = f"turns per fsync mean (instrumented) [{label}]"
                    rows.add(name, fsyncs["turns_per_fsync"], "turns")
                rows.add(f"hot-write call latency median [{label}]", calls["median_ms"], "ms")
                rows.add(f"hot-write call latency p99 [{label}]", calls["p99_ms"], "ms")

    if "hot-read" in selected:
        for durability in DURABILITIES:
            label = durability.value
            runs = raw.setdefault(f"hot-read[{label}]", [])
            for i in range(args.repeat):
                result = await hot_once(durability, "read", args)
                runs.append(result)
                name = f"hot-read [{label}]"
                rows.add(name, result["calls_per_second"], "calls/s")
                rows.note_errors(name, result["errors_by_type_whole_run"])
                progress(
                    f"hot-read[{label}] {i + 1}/{args.repeat}: {result['calls_per_second']:,.0f} calls/s"
                )


async def run_cold(args: argparse.Namespace, rows: Rows, raw: dict[str, Any]) -> None:
    runs = raw.setdefault("cold", [])
    names = {
        "cold_file": "cold activation, file exists",
        "cold_no_file": "cold activation, no file",
        "warm": "warm read call (live object)",
    }
    for i in range(args.repeat):
        result = await cold_once(args, i)
        runs.append(result)
        for kind, name in names.items():
            rows.add(name, result[kind]["median_ms"], "ms")
            rows.note_errors(name, result[kind]["errors"])
        progress(
            f"cold {i + 1}/{args.repeat}: "
            + ", ".join(f"{kind} {result[kind]['median_ms']:.3f} ms" for kind in names)
        )
    for result in runs:
        rows.add("cold activation, file exists p99", result["cold_file"]["p99_ms"], "ms")
        rows.add(
            "cold activation hook, file exists",
            result["cold_file"]["activation_hook"]["median_ms"],
            "ms",
        )


async def run_spread(args: argparse.Namespace, rows: Rows, raw: dict[str, Any]) -> None:
    want = args.selected & {"spread-write", "spread-read"}
    kinds = [kind for kind in ("spread-read", "spread-write") if kind in want]
    if args.spread_populate:
        result = await spread_populated(args, want)
        raw["spread-populated"] = result
        populate = result["populate"]
        rows.add("spread populate pass (creates files)", populate["calls_per_second"], "calls/s")
        rows.note_errors("spread populate pass (creates files)", populate["errors"])
        windows = [(kind, repeat[kind]) for repeat in result["repeats"] for kind in kinds]
        label = "populated"
    else:
        windows = []
        for i in range(args.repeat):
            for kind in kinds:
                window = await spread_fresh_once(kind, args)
                raw.setdefault(kind, []).append(window)
                windows.append((kind, window))
                progress(
                    f"{kind} {i + 1}/{args.repeat}: {window['calls_per_second']:,.0f} calls/s, "
                    f"{window['activations']} activations in the window"
                )
        label = "new objects"
    for kind, window in windows:
        name = f"{kind} [fsync, {label}]"
        rows.add(name, window["calls_per_second"], "calls/s")
        rows.note_errors(name, window["errors_by_type_whole_run"])
        calls = max(1, window["calls"] + window["failed_calls"])
        rows.add(f"{kind}: calls that activated their object", 100 * window["activations"] / calls, "%")
        if kind == "spread-write" and not args.spread_populate:
            share = 100 * window["first_touch_calls"] / calls
            rows.add("spread-write: calls that created the file", share, "%")


async def run(args: argparse.Namespace) -> dict[str, Any]:
    rows = Rows()
    raw: dict[str, Any] = {}
    selected = args.selected
    if selected & {"hot-write", "commit", "hot-read"}:
        await run_hot(args, rows, raw)
    if "cold" in selected:
        await run_cold(args, rows, raw)
    if selected & {"spread-write", "spread-read"}:
        await run_spread(args, rows, raw)
    return {"table": rows.table(), "raw": raw}


def without_nan(value: Any) -> Any:
    """``value`` with every NaN replaced by None (strict JSON)."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: without_nan(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [without_nan(v) for v in value]
    return value


def internal_errors(raw: dict[str, Any]) -> list[str]:
    found: list[str] = []
    for value in raw.values():
        for result in value if isinstance(value, list) else [value]:
            found.extend(result.get("internal_errors", []))
    return found


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if not args.verbose:
        # Internal errors still reach RecordingHooks and are counted; only the tracebacks go.
        logging.getLogger("actors").setLevel(logging.CRITICAL)
    SYNC_TIMER.install()
    facts = machine_facts()
    command = command_line()
    print(f"command: {command}")
    for key, value in facts.items():
        print(f"{key}: {value}")
    print(f"settings (defaults, used unless noted): {settings_facts()}")
    print(
        f"load: {args.callers} concurrent trio tasks; repeats {args.repeat}; "
        f"warmup {args.warmup} s; measured {args.duration} s; "
        f"spread objects {args.objects}; cold objects {args.cold_objects}; "
        f"fsync instrumented: {SYNC_TIMER.installed}"
    )
    print("", flush=True)
    started = time.perf_counter()
    results = trio.run(run, args)
    total = time.perf_counter() - started
    facts["fsync_4k_median_ms_after"] = round(fsync_probe_ms(TMP_ROOT), 3)
    facts["load_average_after"] = load_average()
    print()
    print(render_table(results["table"]))
    print()
    if args.markdown:
        print(render_markdown(results["table"]))
        print()
    print(f"fsync probe (4 KiB write + fsync, median): {facts['fsync_4k_median_ms_before']} ms "
          f"before, {facts['fsync_4k_median_ms_after']} ms after")  # fmt: skip
    print(
        f"load average (1/5/15 min): {facts['load_average_before']} before, "
        f"{facts['load_average_after']} after (above the CPU count: other work competed)"
    )
    print(f"total wall time: {total:.1f} s")
    errors = internal_errors(results["raw"])
    if errors:
        print(f"internal errors reported through Hooks: {len(errors)}; first: {errors[0]}")
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
                "fsync_instrumented": SYNC_TIMER.installed,
                "spread_populate": args.spread_populate,
            },
            "total_seconds": total,
            "table": results["table"],
            "raw": results["raw"],
        }
        args.json.write_text(json.dumps(without_nan(document), indent=1) + "\n")
        print(f"raw numbers written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
