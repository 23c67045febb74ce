"""The cost of the cluster: one extra hop over HTTP, the SDK on 3 nodes vs 1, and --workers 1 vs 2.

Run from the repository root (pytest does not collect it: the file name does not start with test_)::

    .venv/bin/python -m tests.benchmarks.bench_cluster [--duration S] [--repeat N] [--parts hop,sdk]

- ``hop``: a 2-node cluster, both nodes pinned to CPU 0 with ``taskset`` and ``wrk`` (1 thread, 64
  connections, keep-alive) pinned to CPU 1. ``counter-hot`` posts to one name owned by n2;
  ``counter-spread`` to 10,000 names all owned by n2. Each workload is sent to n2 (direct: the
  owner) and to n1 (forwarded over the node link), alternating, ``--repeat`` times; the table gives
  the medians and the ratio forwarded/direct. The forwarded path spends CPU on both nodes, and both
  share CPU 0 here: on separate machines the hop costs latency, not the owner's CPU.
- ``sdk``: ``actors bench --workload counter-spread`` (64 callers, 1 connection per node, pinned
  to CPU 1) against one node, then against a 3-node cluster whose nodes share CPU 0; it also
  reports how many calls the nodes forwarded (0 means the SDK called every owner directly).

Numbers are medians of ``--repeat`` runs. Every process started here is stopped at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from actors import ObjectId
from actors.placement import ClusterMap
from tests.cluster.processes import free_ports, write_cluster_file

REPO = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": str(REPO)}


def start_node(
    base: Path, node_id: str | None, port: int, cluster: Path | None, cpu: str = "0"
) -> subprocess.Popen[bytes]:
    flags = ["--port", str(port), "--data-dir", str(base / (node_id or "single")), "--log-level", "warning"]
    if cluster is not None and node_id is not None:
        flags += ["--cluster", str(cluster), "--node-id", node_id]
    argv = ["taskset", "-c", cpu, sys.executable, "-m", "server.cli", "serve", *flags]
    return subprocess.Popen(
        argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV, start_new_session=True
    )


def wait_ready(urls: list[str], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    for url in urls:
        while True:
            try:
                with urllib.request.urlopen(url + "/readyz", timeout=2) as reply:
                    if reply.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{url} not ready")
            time.sleep(0.1)


def stop(processes: list[subprocess.Popen[bytes]]) -> None:
    for process in processes:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
    for process in processes:
        try:
            process.wait(timeout=40)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def names_owned(cluster_map: ClusterMap, owner: str, count: int, prefix: str) -> list[str]:
    names: list[str] = []
    i = 0
    while len(names) < count:
        name = f"{prefix}{i}"
        i += 1
        if cluster_map.owner(ObjectId.from_name("Counter", name).hex)[0] == owner:
            names.append(name)
    return names


def lua_script(path: Path, names: list[str]) -> Path:
    quoted = ",".join(f'"{n}"' for n in names)
    path.write_text(
        f"local names = {{{quoted}}}\n"
        'wrk.method = "POST"\n'
        "request = function()\n"
        '  return wrk.format(nil, "/counter/" .. names[math.random(#names)] .. "/increment")\n'
        "end\n"
    )
    return path


def wrk(url: str, script: Path, duration: float) -> tuple[float, float]:
    """Requests/s and p99 (ms) of one wrk run."""
    argv = [
        "taskset",
        "-c",
        "1",
        "wrk",
        "-t1",
        "-c64",
        f"-d{duration:g}s",
        "--latency",
        "-s",
        str(script),
        url,
    ]
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p99_text = re.search(r"99%\s+([\d.]+)(us|ms|s)", out)
    assert p99_text is not None, out
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[p99_text.group(2)]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    assert errors is None, out
    return rate, float(p99_text.group(1)) * scale


def hop(duration: float, repeat: int) -> list[str]:
    base = Path(tempfile.mkdtemp(prefix="bench-cluster-"))
    ports = dict(zip(("n1", "n2"), free_ports(2), strict=True))
    cluster_file = write_cluster_file(base / "cluster.toml", ports)
    urls = {n: f"http://127.0.0.1:{p}" for n, p in ports.items()}
    cluster_map = ClusterMap(tuple(urls.items()), 1)
    processes = [start_node(base, n, p, cluster_file) for n, p in ports.items()]
    try:
        wait_ready(list(urls.values()))
        rows = []
        for workload, count in (("counter-hot", 1), ("counter-spread", 10_000)):
            results: dict[str, list[tuple[float, float]]] = {"n2": [], "n1": []}
            for run in range(repeat):
                script = lua_script(
                    base / f"{workload}-{run}.lua",
                    names_owned(cluster_map, "n2", count, f"{workload}-{run}-"),
                )
                for entry in ("n2", "n1"):
                    results[entry].append(wrk(urls[entry], script, duration))
            direct = statistics.median(r for r, _ in results["n2"])
            forwarded = statistics.median(r for r, _ in results["n1"])
            p99_direct = statistics.median(p for _, p in results["n2"])
            p99_forwarded = statistics.median(p for _, p in results["n1"])
            rows.append(
                f"| {workload} | {direct:,.0f} | {p99_direct:.1f} | {forwarded:,.0f} | {p99_forwarded:.1f} | "
                f"{forwarded / direct:.2f}x |"
            )
        header = (
            "| workload (HTTP, wrk -c64) | through the owner (req/s) | p99 ms "
            "| through the other node (req/s) | p99 ms | forwarded / direct |"
        )
        return [header, "|---|---|---|---|---|---|", *rows]
    finally:
        stop(processes)


def actors_bench(url: str, duration: float) -> float:
    report = Path(tempfile.mktemp(suffix=".json"))
    argv = [
        sys.executable, "-m", "server.cli", "bench", "--url", url, "--workload", "counter-spread",
        "--concurrency", "64", "--duration", f"{duration:g}", "--cpu", "1", "--json", str(report),
    ]  # fmt: skip
    subprocess.run(argv, check=True, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    data = json.loads(report.read_text())
    report.unlink()
    return float(data["ops_per_sec"])


def forwarded_calls(urls: list[str]) -> float:
    total = 0.0
    for url in urls:
        with urllib.request.urlopen(url + "/metrics", timeout=5) as reply:
            for line in reply.read().decode().splitlines():
                if line.startswith("actors_peer_forwarded_calls_total{"):
                    total += float(line.rsplit(" ", 1)[1])
    return total


def sdk(duration: float, repeat: int) -> list[str]:
    base = Path(tempfile.mkdtemp(prefix="bench-sdk-"))
    rows = []
    [single_port] = free_ports(1)
    processes = [start_node(base, None, single_port, None)]
    try:
        wait_ready([f"http://127.0.0.1:{single_port}"])
        one = statistics.median(
            actors_bench(f"http://127.0.0.1:{single_port}", duration) for _ in range(repeat)
        )
    finally:
        stop(processes)
    ports = dict(zip(("n1", "n2", "n3"), free_ports(3), strict=True))
    cluster_file = write_cluster_file(base / "cluster.toml", ports)
    urls = [f"http://127.0.0.1:{p}" for p in ports.values()]
    processes = [start_node(base, n, p, cluster_file) for n, p in ports.items()]
    try:
        wait_ready(urls)
        three = statistics.median(actors_bench(urls[0], duration) for _ in range(repeat))
        forwarded = forwarded_calls(urls)
    finally:
        stop(processes)
    rows.append(f"| 1 node | {one:,.0f} | 1.00x | - |")
    rows.append(f"| 3 nodes (one core between them) | {three:,.0f} | {three / one:.2f}x | {forwarded:,.0f} |")
    return [
        "| SDK counter-spread, 64 callers | calls/s | vs 1 node | calls forwarded by the nodes |",
        "|---|---|---|---|",
        *rows,
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--parts", default="hop,sdk")
    args = parser.parse_args()
    for part in args.parts.split(","):
        lines = {"hop": hop, "sdk": sdk}[part](args.duration, args.repeat)
        print("\n".join(lines), flush=True)
        print()


if __name__ == "__main__":
    main()
