"""A node on a data folder of many objects: time to ``/readyz``, ``GET /v1/objects`` pages, RSS.

Run from the repository root (pytest does not collect it), on a folder ``make_objects`` made::

    .venv/bin/python -m tests.benchmarks.make_objects /tmp/million --objects 1000000
    .venv/bin/python -m tests.benchmarks.bench_million /tmp/million [--repeat 3] [--pages 20]

Each repeat starts ``actors serve --data-dir FOLDER`` (a real process on 127.0.0.1, default settings;
the objects are the built-in ``Counter``) and times from the process start to the first ``200`` of ``/readyz``
(polled every 2 ms; the Python interpreter's own start-up and imports included), reads the node's
``VmRSS`` then, times ``--pages`` pages of ``GET /v1/objects?limit=100`` followed by cursor from the
start, the same from a cursor in the middle of the class (``c0500000``), and one page with a
``prefix``; then stops it with SIGTERM (a clean shutdown). Each row is the median over repeats of the
per-repeat median (page times: client-side wall time of one HTTP request).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from server.codec import encode_cursor
from tests.benchmarks.make_objects import APP

PORT = 18731


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, b""
    except OSError:
        return 0, b""


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def _pages(base: str, first: str, pages: int) -> list[float]:
    times, url = [], first
    for _ in range(pages):
        started = time.perf_counter()
        status, body = _get(url)
        times.append(time.perf_counter() - started)
        assert status == 200, status
        cursor = json.loads(body)["cursor"]
        if cursor is None:
            break
        url = f"{base}/v1/objects?limit=100&cursor={cursor}"
    return times


def once(folder: Path, pages: int) -> dict[str, float]:
    base = f"http://127.0.0.1:{PORT}"
    started = time.perf_counter()
    node = subprocess.Popen(
        [sys.executable, "-m", "server.cli", "serve", "--data-dir", str(folder), "--port", str(PORT),
         "--log-level", "warning"],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        while _get(f"{base}/readyz")[0] != 200:
            if node.poll() is not None:
                raise RuntimeError("the node exited")
            time.sleep(0.002)
        ready = time.perf_counter() - started
        rss = _rss_kib(node.pid)
        middle = APP.id_from_name("Counter", "c0500000")
        cursor = encode_cursor(("Counter", "c0500000", middle.hex))
        first = _pages(base, f"{base}/v1/objects?limit=100", pages)
        deep = _pages(base, f"{base}/v1/objects?limit=100&cursor={cursor}", pages)
        prefix = _pages(base, f"{base}/v1/objects?limit=100&class=Counter&prefix=c07", 1)
    finally:
        node.send_signal(signal.SIGTERM)
        node.wait(timeout=120)
    return {
        "readyz_s": ready,
        "rss_mib_at_ready": rss / 1024,
        "page_ms_from_start": statistics.median(first) * 1000,
        "page_ms_from_middle": statistics.median(deep) * 1000,
        "page_ms_prefix": prefix[0] * 1000,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--pages", type=int, default=20)
    args = parser.parse_args()
    os.environ.setdefault("PYTHONPATH", os.getcwd())
    runs = [once(args.folder, args.pages) for _ in range(args.repeat)]
    for key in runs[0]:
        values = [round(r[key], 3) for r in runs]
        print(f"{key}: median {statistics.median(values):.3f} (runs {values})")


if __name__ == "__main__":
    main()
