"""A node SIGKILLed under HTTP load, then restarted, has every write it acknowledged.

Several threads drive ``POST /counter/{name}/increment`` over keep-alive connections and keep the
highest value each counter acknowledged; the node is killed with SIGKILL while they run; a new node on
the same data folder must report every counter at least at its highest acknowledged value. Real
processes and real time (bounded), as the policy in ``tests/conftest.py`` says.
"""

from __future__ import annotations

import http.client
import random
import signal
import threading

import trio

from .nodes import Client, fetch, open_node

COUNTERS = 6
THREADS = 8
#: kills per test; each lands 0.3-0.8 s into the load
ROUNDS = 3


def _drive(
    url: str, names: list[str], acked: dict[str, int], lock: threading.Lock, stop: threading.Event
) -> None:
    client = Client(url)
    rng = random.Random()
    try:
        while not stop.is_set():
            name = rng.choice(names)
            try:
                reply = client.request("POST", f"/counter/{name}/increment")
            except (OSError, http.client.HTTPException):
                return  # the node died: everything acknowledged so far is recorded
            if reply.status != 200:
                continue
            value = reply.json()["value"]
            with lock:
                acked[name] = max(acked.get(name, 0), value)
    finally:
        client.close()


async def test_sigkill_under_http_load_loses_no_acknowledged_increment(tmp_path):
    data = tmp_path / "data"
    names = [f"crash-{i}" for i in range(COUNTERS)]
    acked: dict[str, int] = {}
    lock = threading.Lock()
    rng = random.Random()
    for round_number in range(ROUNDS):
        async with open_node(data) as node:
            stop = threading.Event()
            threads = [
                threading.Thread(target=_drive, args=(node.url, names, acked, lock, stop), daemon=True)
                for _ in range(THREADS)
            ]
            for thread in threads:
                thread.start()
            delay = rng.uniform(0.3, 0.8)
            await trio.sleep(delay)
            node.process.send_signal(signal.SIGKILL)
            with trio.fail_after(10):
                await node.process.wait()
            stop.set()
            for thread in threads:
                await trio.to_thread.run_sync(thread.join, 10)
            assert node.process.returncode == -signal.SIGKILL
        assert acked, "no increment was acknowledged before the kill; the test proved nothing"
        async with open_node(data) as node:
            for name in names:
                reply = await fetch(node.url, "GET", f"/counter/{name}")
                stored = reply.json()["value"]
                assert stored >= acked.get(name, 0), (
                    f"round {round_number} (kill after {delay:.2f} s): {name} holds {stored}, "
                    f"but {acked[name]} was acknowledged"
                )
