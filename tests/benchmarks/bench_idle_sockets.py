"""Bytes of node memory per idle WebSocket, with its chat room evicted (hibernation).

Run from the repository root (pytest does not collect it: the file name does not start with test_)::

    .venv/bin/python -m tests.benchmarks.bench_idle_sockets [--connections N] [--idle-timeout S]
                                                            [--json FILE]

It starts one ``actors serve`` process (127.0.0.1, port 0, a fresh data folder under /tmp), then, from
this one client process (trio-websocket):

1. warms up: opens and closes ``--warmup`` sockets to another room, so imports, caches and the first
   activation are paid before the baseline; waits until no object is live;
2. reads the node's ``VmRSS`` from ``/proc/<pid>/status`` (the baseline);
3. opens ``--connections`` sockets to ONE chat room (each reads its history frame) and waits until
   the room was evicted (``actors_live_objects`` is 0 and ``actors_open_sockets`` is N on /metrics);
4. reads ``VmRSS`` again and reports ``(after - before) / N``: what one open socket costs the node
   while its object is not in memory. Kernel socket buffers are not in RSS and not counted.

RSS is coarse (pages; Python's allocator keeps freed arenas), so use a large N and read the number
as "about". The node is stopped with SIGTERM at the end (which closes every socket with 1001).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import trio
from trio_websocket import open_websocket_url

REPO = Path(__file__).resolve().parents[2]
URL_LINE = re.compile(r"^actors: listening on (http://\S+)$")
#: sockets opened at once (the listen backlog is 100)
OPEN_AT_ONCE = 50
#: bound on every wait of the script (startup, eviction, opening N sockets)
TIMEOUT = 120.0


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def scrape(url: str) -> dict[str, float]:
    """Unlabelled samples of /metrics, by name."""
    with urllib.request.urlopen(url + "/metrics", timeout=10) as reply:
        text = reply.read().decode()
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#") and "{" not in line:
            name, _, sample = line.partition(" ")
            samples[name] = float(sample)
    return samples


async def wait_metrics(url: str, what: str, check: object) -> dict[str, float]:
    with trio.fail_after(TIMEOUT):
        while True:
            samples = await trio.to_thread.run_sync(scrape, url)
            if check(samples):  # type: ignore[operator]
                return samples
            await trio.sleep(0.1)


async def open_crowd(nursery: trio.Nursery, url: str, path: str, count: int, stop: trio.Event) -> None:
    """Open ``count`` sockets to ``path`` in ``nursery``, each held open until ``stop``; return once
    every one has read its first frame (the room's history)."""
    limit = trio.Semaphore(OPEN_AT_ONCE)
    opened = 0
    all_open = trio.Event()

    async def hold() -> None:
        nonlocal opened
        await limit.acquire()
        holding = True
        try:
            async with open_websocket_url(url.replace("http://", "ws://") + path) as ws:
                await ws.get_message()
                opened += 1
                if opened == count:
                    all_open.set()
                limit.release()  # the next one may connect; this one stays open
                holding = False
                await stop.wait()
        finally:
            if holding:
                limit.release()

    for _ in range(count):
        nursery.start_soon(hold)
    with trio.fail_after(TIMEOUT):
        await all_open.wait()


async def measure(args: argparse.Namespace) -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="bench-idle-sockets-") as tmp:
        command = [
            sys.executable, "-m", "server.cli", "serve", "--port", "0", "--data-dir", f"{tmp}/data",
            "--idle-timeout", str(args.idle_timeout), "--log-level", "warning",
            # room for every socket (and the scrapes): the bound is not what this measures
            "--max-connections", str(args.connections + args.warmup + 100),
        ]  # fmt: skip
        process = await trio.lowlevel.open_process(
            command, stdout=subprocess.PIPE, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}
        )
        try:
            assert process.stdout is not None
            with trio.fail_after(TIMEOUT):
                line = b""
                while not line.endswith(b"\n"):
                    line += await process.stdout.receive_some(1)
            match = URL_LINE.match(line.decode().strip())
            assert match, line
            url = match.group(1)
            async with trio.open_nursery() as nursery:
                stop = trio.Event()
                await open_crowd(nursery, url, "/chat/warmup", args.warmup, stop)
                stop.set()
            await wait_metrics(
                url,
                "warm-up sockets closed, nothing live",
                lambda s: s["actors_live_objects"] == 0 and s["actors_open_sockets"] == 0,
            )
            before = rss_bytes(process.pid)
            started = time.perf_counter()
            async with trio.open_nursery() as nursery:
                stop = trio.Event()
                await open_crowd(nursery, url, "/chat/idle", args.connections, stop)
                opened = time.perf_counter() - started
                samples = await wait_metrics(
                    url,
                    "the room evicted with every socket held",
                    lambda s: s["actors_live_objects"] == 0 and s["actors_open_sockets"] == args.connections,
                )
                after = rss_bytes(process.pid)
                process.send_signal(signal.SIGTERM)  # closes every socket with 1001
                stop.set()
            with trio.fail_after(TIMEOUT):
                code = await process.wait()
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
    return {
        "connections": args.connections,
        "rss_before_bytes": before,
        "rss_after_bytes": after,
        "bytes_per_idle_socket": round((after - before) / args.connections),
        "open_sockets_held": samples["actors_open_sockets"],
        "websocket_connections": samples["actors_websocket_connections"],
        "seconds_to_open": round(opened, 2),
        "node_exit_code": code,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, default=2000)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--idle-timeout", type=float, default=1.0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    result = trio.run(measure, args)
    print(
        "command:",
        shlex.join([".venv/bin/python", "-m", "tests.benchmarks.bench_idle_sockets", *sys.argv[1:]]),
    )
    for key, value in result.items():
        print(f"{key}: {value}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
