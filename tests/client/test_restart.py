"""The SDK across node restarts and crashes, with real processes and real time (bounded).

- A graceful restart on the same port and data folder: the client reconnects by itself, and a call
  made while the node is down waits for it (it was never sent) instead of failing.
- SIGKILL while increments are in flight: every increment the SDK acknowledged is in the final
  value, and the final value exceeds that by at most the number of calls that raised ConnectionLost
  (a lost call may or may not have been applied; the SDK never sends one twice).
"""

from __future__ import annotations

import signal
from pathlib import Path
from urllib.parse import urlsplit

import trio
import trio.testing

from actors.errors import ActorError
from client import ConnectionLost, OutcomeUnknown, Unreachable, connect
from tests.server.nodes import STARTUP_TIMEOUT, STOP_TIMEOUT, open_node

APP = "tests.server.probe_app:app"
#: callers driving increments at once
CALLERS = 32
#: increments acknowledged before the node is killed
KILL_AFTER = 300


async def _stop(process: trio.Process, sig: int) -> None:
    process.send_signal(sig)
    with trio.fail_after(STOP_TIMEOUT):
        await process.wait()


async def test_the_client_reconnects_after_the_node_restarts(tmp_path: Path):
    data = tmp_path / "data"
    async with open_node(data, "--app", APP) as first, connect(first.url, timeout=STARTUP_TIMEOUT) as client:
        port = str(urlsplit(first.url).port)
        assert await client.call("Counter", "home", "increment") == 1
        await _stop(first.process, signal.SIGTERM)
        values: list[int] = []
        done = trio.Event()

        async def increment() -> None:
            values.append(await client.call("Counter", "home", "increment"))
            done.set()

        with trio.fail_after(STARTUP_TIMEOUT + 5):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(increment)  # made while the node is down: it waits, unsent
                await trio.testing.wait_all_tasks_blocked()
                assert client.statistics().connections[0].calls_queued == 1
                async with open_node(data, "--app", APP, "--port", port):
                    await done.wait()
        stats = client.statistics().connections[0]
    assert values == [2]
    assert stats.connects == 2
    async with open_node(data, "--app", APP) as third, connect(third.url) as reader:
        assert await reader.call("Counter", "home", "get") == 2


async def test_sigkill_mid_call_never_applies_an_increment_twice(tmp_path: Path):
    data = tmp_path / "data"
    acked = lost = 0
    killed = trio.Event()
    async with open_node(data, "--app", APP) as node, connect(node.url, timeout=5) as client:

        async def drive() -> None:
            nonlocal acked, lost
            while True:
                try:
                    await client.call("Counter", "crash", "increment")
                except ConnectionLost:
                    lost += 1
                    return
                except (Unreachable, OutcomeUnknown, ActorError):
                    return  # never sent, or refused by a node going down: not applied twice either
                acked += 1
                if acked == KILL_AFTER:
                    node.process.send_signal(signal.SIGKILL)
                    killed.set()

        with trio.fail_after(STARTUP_TIMEOUT):
            async with trio.open_nursery() as nursery:
                for _ in range(CALLERS):
                    nursery.start_soon(drive)
        assert killed.is_set()
    assert lost > 0  # the kill landed with calls in flight
    async with open_node(data, "--app", APP) as restarted, connect(restarted.url) as reader:
        value = await reader.call("Counter", "crash", "get")
    assert acked <= value <= acked + lost, (acked, lost, value)
