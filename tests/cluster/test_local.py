"""``actors serve --workers N`` and ``actors demo``: real parent and node processes on 127.0.0.1."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import trio

from tests.server.nodes import ENV, STARTUP_TIMEOUT, STOP_TIMEOUT, URL_LINE, Client, Node, fetch, in_thread

from .processes import APP, wait_all_up


@asynccontextmanager
async def launched(argv: list[str], cwd: Path, lines: int) -> AsyncIterator[tuple[trio.Process, list[str]]]:
    """Start ``actors`` with ``argv``; wait for ``lines`` listening lines; always stop it (SIGTERM)."""
    log = (cwd / "parent.log").open("wb")
    process = await trio.lowlevel.open_process(
        [sys.executable, "-m", "server.cli", *argv], stdout=subprocess.PIPE, stderr=log, env=ENV, cwd=cwd,
        start_new_session=True,
    )  # fmt: skip
    try:
        urls: list[str] = []
        buffer = b""
        assert process.stdout is not None
        with trio.fail_after(STARTUP_TIMEOUT * 2):
            while len(urls) < lines:
                chunk = await process.stdout.receive_some()
                assert chunk, (cwd / "parent.log").read_text()
                buffer += chunk
                *done, buffer = buffer.split(b"\n")
                urls += [m.group(1) for line in done if (m := URL_LINE.match(line.decode().strip()))]
        yield process, urls
    finally:
        with trio.CancelScope(shield=True):
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)
                with trio.move_on_after(STOP_TIMEOUT * 3):
                    await process.wait()
            if process.returncode is None:
                os.killpg(process.pid, signal.SIGKILL)
                await process.wait()
            if process.stdout is not None:
                await process.stdout.aclose()
            log.close()


def pids_matching(pattern: str) -> list[int]:
    done = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True, check=False)
    return [int(pid) for pid in done.stdout.split()]


async def increments(url: str, names: list[str], clients: int, each: int) -> dict[str, list[int]]:
    seen: dict[str, list[int]] = {name: [] for name in names}

    def drive(offset: int) -> None:
        client = Client(url)
        try:
            for i in range(each):
                name = names[(offset + i) % len(names)]
                reply = client.request("POST", f"/counter/{name}/increment")
                assert reply.status == 200, reply.body
                seen[name].append(reply.json()["value"])
        finally:
            client.close()

    async with trio.open_nursery() as nursery:
        for offset in range(clients):
            nursery.start_soon(in_thread, drive, offset)
    return seen


async def test_two_workers_behind_one_port_count_exactly_and_a_crashed_worker_comes_back(tmp_path: Path):
    data = tmp_path / "data"
    argv = ["serve", "--workers", "2", "--port", "0", "--data-dir", str(data), "--app", APP]
    async with launched(argv, tmp_path, 1) as (process, [url]):
        names = [f"c{i}" for i in range(16)]
        seen = await increments(url, names, clients=4, each=32)
        for name, values in seen.items():
            assert sorted(values) == list(range(1, len(values) + 1)), name
        assert sum(len(v) for v in seen.values()) == 128
        holders = {p.parent.parent.parent.parent.name for p in data.glob("w*/objects/Counter/*/*.sqlite3")}
        assert holders == {"w1", "w2"}  # both workers own a share
        [pid] = pids_matching(f"{data}/cluster.toml --node-id w1 ")
        os.kill(pid, signal.SIGKILL)
        with trio.fail_after(STARTUP_TIMEOUT):  # the parent starts it again, same id and folder
            while pids_matching(f"{data}/cluster.toml --node-id w1 ") in ([], [pid]):  # noqa: ASYNC110
                await trio.sleep(0.1)
        cluster = (await fetch(url, "GET", "/v1/cluster")).json()
        workers = [Node(n["url"], None, tmp_path / "parent.log") for n in cluster["nodes"]]
        await wait_all_up(workers)
        again = await increments(url, names, clients=2, each=16)
        for name in names:  # every value after the crash, each once, right after the last before it
            before = len(seen[name])
            assert sorted(again[name]) == list(range(before + 1, before + len(again[name]) + 1)), name
        process.send_signal(signal.SIGTERM)
        with trio.fail_after(STOP_TIMEOUT * 3):
            assert await process.wait() == 0
        assert pids_matching(f"{data}/cluster.toml") == []


def consecutive_free_ports(count: int) -> int:
    for base in range(23_000, 60_000, 97):
        sockets = []
        try:
            for port in range(base, base + count):
                probe = socket.socket()
                sockets.append(probe)
                probe.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for probe in sockets:
                probe.close()
    raise RuntimeError("no free ports")


async def test_actors_demo_starts_three_nodes_that_form_one_cluster_and_stops_them(tmp_path: Path):
    port = consecutive_free_ports(3)
    argv = ["demo", "--nodes", "3", "--port", str(port), "--data-dir", str(tmp_path / "data")]
    async with launched(argv, tmp_path, 3) as (process, urls):
        assert urls == [f"http://127.0.0.1:{port + i}" for i in range(3)]
        nodes = [Node(u, None, tmp_path / "parent.log") for u in urls]
        await wait_all_up(nodes)
        for node in nodes:
            assert (await fetch(node.url, "GET", "/")).status == 200  # the demo page on every node
        values = [(await fetch(u, "POST", "/counter/demo/increment")).json()["value"] for u in urls]
        assert values == [1, 2, 3]
        assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["cluster.toml", "n1", "n2", "n3"]
        process.send_signal(signal.SIGTERM)
        with trio.fail_after(STOP_TIMEOUT * 3):
            assert await process.wait() == 0
        assert pids_matching(f"{tmp_path}/data/cluster.toml") == []


async def test_changing_the_number_of_workers_on_stored_data_is_refused_not_looped(tmp_path: Path):
    data = tmp_path / "data"
    argv = ["serve", "--workers", "2", "--port", "0", "--data-dir", str(data), "--app", APP]
    async with launched(argv, tmp_path, 1) as (process, [url]):
        await increments(url, [f"c{i}" for i in range(16)], clients=2, each=8)
        process.send_signal(signal.SIGTERM)
        with trio.fail_after(STOP_TIMEOUT * 3):
            assert await process.wait() == 0
    three = [
        sys.executable,
        "-m",
        "server.cli",
        "serve",
        "--workers",
        "3",
        "--port",
        "0",
        "--data-dir",
        str(data),
    ]
    with trio.fail_after(STARTUP_TIMEOUT * 2):
        done = await trio.run_process(
            three, capture_stdout=True, capture_stderr=True, env=ENV, cwd=tmp_path, check=False
        )
    assert done.returncode == 2  # not restarted in a loop: the parent stops and says why
    assert b"stores" in done.stderr
    assert b"a file membership does not move objects" in done.stderr
    assert pids_matching(f"{data}/cluster.toml") == []
