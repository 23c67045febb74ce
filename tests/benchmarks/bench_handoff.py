"""Live handoff: a 4th node joins a 3-node etcd cluster holding 10,000 idle objects and 100 busy ones.

Run from the repository root (pytest does not collect it)::

    .venv/bin/python -m tests.benchmarks.bench_handoff [--idle 10000] [--busy 100] [--repeat 3]

Each run starts a fresh etcd and three nodes (``--etcd``, all on this machine), creates ``--idle``
counters (one increment each, through the SDK) and starts a steady load on ``--busy`` counters: 16
SDK callers, one call in flight each, for the whole run. After 5 s of load it starts n4 and measures:

- **move time**: from the membership change (n4 listed by n1, polled every 20 ms) until no node
  has anything left to hand off (``to_move`` 0 everywhere), and the objects n4 received
  (``actors_handoff_objects_total``); objects/s is their ratio;
- calls/s and p50/p99 latency of the busy load in the 5 s **before** n4's process started and
  **during** the move (from the membership change to the end of the move, at least 1 s).

Every value read back at the end must equal what the load acknowledged (the busy counters) or 1 (the
idle ones): a failed check stops the benchmark. Numbers are medians of ``--repeat`` runs.

By default the four nodes' data folders share one filesystem (this machine's), so a ``syncfs`` on one
node flushes the other three nodes' writes too, and file creations and deletions on every node wait
for the one journal. ``--volume-per-node`` gives each node its own loop-mounted ext4 volume, as on
separate machines (``tests/benchmarks/volumes.py`` says what that emulates and what not: the images
still share one disk). It needs root and ``mkfs.ext4``; the volumes are always unmounted and deleted
at the end of each run. etcd's folder and the logs stay on the shared filesystem.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import trio

from actors import ObjectId
from actors.placement import ClusterMap
from client import connect
from tests.cluster.etcd_server import EtcdServer
from tests.cluster.processes import SECRET, free_ports

from .volumes import VolumeError, check_volumes_possible, node_volumes

REPO = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": str(REPO), "ACTORS_CLUSTER_SECRET": SECRET}


#: extra flags of every node (``--handoff-rate``)
NODE_FLAGS: list[str] = []
#: keep the nodes' folders and logs (``--keep``)
KEEP = "--keep" in sys.argv


def start_node(base: Path, data: Path, etcd: str, node_id: str, port: int) -> subprocess.Popen[bytes]:
    url = f"http://127.0.0.1:{port}"
    argv = [
        sys.executable, "-m", "server.cli", "serve", "--port", str(port), "--data-dir", str(data),
        "--etcd", etcd, "--node-id", node_id, "--advertise", url, "--log-level", "warning", *NODE_FLAGS,
    ]  # fmt: skip
    log = (base / f"{node_id}.log").open("ab")
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=log, env=ENV, start_new_session=True)


def wait_ready(url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{url} not ready")


async def create(url: str, names: list[str]) -> None:
    async with connect(url, timeout=30) as sdk:
        it = iter(names)

        async def worker() -> None:
            for name in it:
                assert await sdk.call("Counter", name, "increment") == 1

        async with trio.open_nursery() as nursery:
            for _ in range(64):
                nursery.start_soon(worker)


async def to_move(url: str) -> tuple[int, int]:
    """(objects left to hand off on all nodes, members) as ``url`` sees them."""
    async with httpx.AsyncClient(timeout=5) as http:
        rows = (await http.get(f"{url}/v1/cluster/nodes")).json()["nodes"]
    return sum(int(r.get("to_move", 0)) for r in rows), len(rows)


async def one_run(idle: int, busy: int, volume_per_node: bool) -> dict[str, Any]:
    base = Path(tempfile.mkdtemp(prefix="bench-handoff-"))
    failed = True
    try:
        with ExitStack() as volumes:  # unmounted once _measure has stopped the nodes
            names = [f"n{i}" for i in range(1, 5)]
            folders = {n: base / n for n in names}
            if volume_per_node:
                folders = volumes.enter_context(node_volumes(base, names))
            result = await _measure(base, folders, idle, busy)
        failed = False
        return result
    finally:
        if failed or KEEP:
            print(f"{'failed: ' if failed else ''}the nodes' logs are in {base}", file=sys.stderr)
        else:
            shutil.rmtree(base, ignore_errors=True)


async def _measure(base: Path, folders: dict[str, Path], idle: int, busy: int) -> dict[str, Any]:
    """One run in ``base`` (etcd, logs) with each node's data in ``folders``; always stops them."""
    etcd = EtcdServer(base)
    processes: list[subprocess.Popen[bytes]] = []
    try:
        etcd.start()
        ports = free_ports(4)
        urls = [f"http://127.0.0.1:{p}" for p in ports]
        for i in range(3):
            processes.append(start_node(base, folders[f"n{i + 1}"], etcd.url, f"n{i + 1}", ports[i]))
            wait_ready(urls[i])
        idle_names = [f"idle-{i}" for i in range(idle)]
        busy_names = [f"busy-{i}" for i in range(busy)]
        started = time.monotonic()
        await create(urls[0], idle_names)
        create_seconds = time.monotonic() - started
        samples: list[tuple[float, float, str]] = []  # (finish time, latency, name)
        acknowledged: dict[str, int] = {}
        stop = trio.Event()
        marks: dict[str, float] = {}

        async def load() -> None:
            if not busy:  # the move alone
                return
            async with connect(urls[1], timeout=30) as sdk:

                async def caller(k: int) -> None:
                    i = k
                    while not stop.is_set():
                        name = busy_names[i % busy]
                        i += 16
                        t0 = time.monotonic()
                        value = await sdk.call("Counter", name, "increment")
                        t1 = time.monotonic()
                        samples.append((t1, t1 - t0, name))
                        acknowledged[name] = max(acknowledged.get(name, 0), value)

                async with trio.open_nursery() as nursery:
                    for k in range(16):
                        nursery.start_soon(caller, k)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(load)
            await trio.sleep(5)
            marks["start"] = time.monotonic()
            processes.append(start_node(base, folders["n4"], etcd.url, "n4", ports[3]))
            while True:
                await trio.sleep(0.02)
                try:
                    left, members = await to_move(urls[0])
                except (httpx.HTTPError, KeyError, ValueError):
                    continue
                if members == 4 and "join" not in marks:
                    marks["join"] = time.monotonic()  # the membership changed (n4 joined)
                if members == 4 and left == 0 and time.monotonic() - marks["join"] > 0.3:
                    break
            marks["moved"] = time.monotonic()
            await trio.sleep(1)
            stop.set()
        async with httpx.AsyncClient(timeout=5) as http:
            metrics = (await http.get(f"{urls[3]}/metrics")).text
            received = sum(
                float(line.split()[-1])
                for line in metrics.splitlines()
                if line.startswith('actors_handoff_objects_total{direction="received"}')
            )
            for name in list(acknowledged)[:20] + idle_names[:: max(1, idle // 50)]:
                value = (await http.get(f"{urls[2]}/counter/{name}")).json()["value"]
                expected = acknowledged.get(name, 1)
                assert value >= expected, (name, value, expected)
        move_seconds = marks["moved"] - marks["join"]
        if not busy:
            return {
                "received": received,
                "move_seconds": move_seconds,
                "objects_per_second": received / move_seconds,
            }
        before = [lat for t, lat, _ in samples if marks["start"] - 5 <= t < marks["start"]]
        during_end = max(marks["moved"], marks["join"] + 1)
        during = [lat for t, lat, _ in samples if marks["join"] <= t < during_end]
        after_map = ClusterMap(tuple((f"n{i}", "") for i in range(1, 5)))
        moved = {n for n in busy_names if after_map.owner(ObjectId.from_name("Counter", n).hex)[0] == "n4"}
        stayed = [lat for t, lat, n in samples if marks["join"] <= t < during_end and n not in moved]
        return {
            "create_seconds": create_seconds,
            "received": received,
            "move_seconds": move_seconds,
            "objects_per_second": received / move_seconds,
            "before_calls_per_second": len(before) / 5,
            "during_calls_per_second": len(during) / (during_end - marks["join"]),
            "before_p50_ms": 1000 * statistics.median(before),
            "before_p99_ms": 1000 * statistics.quantiles(before, n=100)[98],
            "during_p50_ms": 1000 * statistics.median(during),
            "during_p99_ms": 1000 * statistics.quantiles(during, n=100)[98],
            "during_p99_unmoved_ms": 1000 * statistics.quantiles(stayed, n=100)[98],
        }
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
        etcd.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--idle", type=int, default=10_000)
    parser.add_argument("--busy", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--keep", action="store_true", help="keep the nodes' folders and logs")
    parser.add_argument("--handoff-rate", type=float, default=None, help="the nodes' --handoff-rate")
    parser.add_argument(
        "--volume-per-node", action="store_true",
        help="give each node its own loop-mounted ext4 volume, as on separate machines (needs root)",
    )  # fmt: skip
    args = parser.parse_args()
    if args.volume_per_node:
        try:
            check_volumes_possible()
        except VolumeError as e:
            parser.error(str(e))
    if args.handoff_rate is not None:
        NODE_FLAGS.extend(["--handoff-rate", str(args.handoff_rate)])
    runs = []
    for i in range(args.repeat):
        run = trio.run(one_run, args.idle, args.busy, args.volume_per_node)
        runs.append(run)
        print(f"run {i + 1}: " + ", ".join(f"{k}={v:.1f}" for k, v in run.items()), flush=True)
    print("medians:")
    for key in runs[0]:
        print(f"  {key}: {statistics.median(r[key] for r in runs):.1f}")


if __name__ == "__main__":
    main()
