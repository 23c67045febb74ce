"""Benchmark of adopting objects that arrive from another node: objects/s, batches of 64 files.

Run from the repository root (pytest does not collect it)::

    .venv/bin/python -m tests.benchmarks.bench_moves [--objects N] [--batch 64] [--size 16384] [--repeat 3]

Each arriving file is a copy of one real object file padded to ``--size`` bytes (adopt checks the
bytes' SHA-256, not the content). Per batch, the clock covers writing every staged file (as the
cluster does, in a worker thread) and ``Runtime.adopt``: hashing, fsync of each file, the renames,
the folder fsyncs and one catalog transaction. Two ways of running the per-file work are compared:
``syncfs`` (one ``syncfs(2)`` of the filesystem per batch: what the runtime does where the C library
has it) and ``fsync`` (the fallback: an fsync of every file and of every folder a file entered, in
parallel in the runtime's fsync pool). The staging writes and ``adopt`` are also timed apart. Each
repeat uses a fresh data folder under /tmp.
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import tempfile
import time
from pathlib import Path

import trio

from actors import App, Arrival, DurableObject, ObjectId, Runtime, _movework, open_runtime


class Box(DurableObject):
    async def put(self, value: str) -> None:
        self.storage.put("value", value)


APP = App([Box])


async def _template(folder: Path, size: int) -> bytes:
    async with open_runtime(APP, folder) as runtime:
        await runtime.call(APP.id_from_name(Box, "template"), "put", ["x" * 1000])
    (path,) = (folder / "objects").rglob("*.sqlite3")
    data = path.read_bytes()
    return data + b"\0" * max(0, size - len(data))


async def _adopt_all(runtime: Runtime, ids: list[ObjectId], data: bytes, batch: int) -> tuple[float, float]:
    """objects/s end to end (staging writes and adopt), and seconds spent in adopt alone."""
    digest = hashlib.sha256(data).hexdigest()
    started, adopting = time.perf_counter(), 0.0
    for start in range(0, len(ids), batch):
        chunk = ids[start : start + batch]

        def stage(chunk: list[ObjectId] = chunk) -> None:
            for object_id in chunk:
                runtime.staging_path(object_id).write_bytes(data)

        await trio.to_thread.run_sync(stage)
        adopt_started = time.perf_counter()
        outcomes = await runtime.adopt([Arrival(i, digest, None) for i in chunk])
        adopting += time.perf_counter() - adopt_started
        assert all(o.status == "stored" for o in outcomes), outcomes
    return len(ids) / (time.perf_counter() - started), adopting


async def _run(mode: str, objects: int, batch: int, size: int) -> tuple[float, float]:
    original = _movework._syncfs
    if mode == "fsync":
        _movework._syncfs = None
    try:
        with tempfile.TemporaryDirectory() as tmp:
            data = await _template(Path(tmp) / "source", size)
            async with open_runtime(APP, Path(tmp) / "target") as runtime:
                ids = [APP.id_from_name(Box, f"o{i}") for i in range(objects)]
                rate, adopting = await _adopt_all(runtime, ids, data, batch)
                return rate, objects / adopting
    finally:
        _movework._syncfs = original


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=2048)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--size", type=int, default=16384)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    modes = ["syncfs", "fsync"] if _movework._syncfs is not None else ["fsync"]
    print(f"{args.objects} objects, batches of {args.batch}, {args.size} bytes each; median (min-max)")
    for mode in modes:
        runs = [trio.run(_run, mode, args.objects, args.batch, args.size) for _ in range(args.repeat)]
        for label, rates in (("end to end", [r[0] for r in runs]), ("adopt alone", [r[1] for r in runs])):
            print(
                f"{mode:>7} {label:>12}: {statistics.median(rates):7,.0f} objects/s "
                f"({min(rates):,.0f}-{max(rates):,.0f})"
            )


if __name__ == "__main__":
    main()
