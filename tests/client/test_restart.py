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


async def test_a_rolling_restart_under_load_costs_callers_no_errors_and_applies_each_call_once(
    tmp_path: Path,
):
    # SIGTERM with increments in flight, then a new node on the same port and folder: every call
    # succeeds (answered before the drain close, or refused with ShuttingDown, or left unanswered
    # by the drain close, or made while the node was down: the last three are sent again), and the
    # final value is exactly the number of calls acknowledged.
    data = tmp_path / "data"
    acked = 0
    async with open_node(data, "--app", APP) as first:
        port = str(urlsplit(first.url).port)
        async with connect(first.url, timeout=STARTUP_TIMEOUT) as client:
            restarted = trio.Event()

            async def drive() -> None:
                nonlocal acked
                while acked < 2 * KILL_AFTER or not restarted.is_set():
                    await client.call("Counter", "rolling", "increment")  # any error fails the test
                    acked += 1
                    if acked == KILL_AFTER:
                        first.process.send_signal(signal.SIGTERM)

            async def restart(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
                with trio.fail_after(STOP_TIMEOUT):
                    await first.process.wait()
                async with open_node(data, "--app", APP, "--port", port):
                    restarted.set()
                    await trio.sleep_forever()  # until the callers are done

            with trio.fail_after(STARTUP_TIMEOUT + STOP_TIMEOUT + 10):
                async with trio.open_nursery() as nodes:
                    nodes.start_soon(restart)
                    async with trio.open_nursery() as callers:
                        for _ in range(CALLERS):
                            callers.start_soon(drive)
                    nodes.cancel_scope.cancel()
            stats = client.statistics().connections[0]
    assert stats.connects == 2
    async with open_node(data, "--app", APP) as third, connect(third.url) as reader:
        assert await reader.call("Counter", "rolling", "get") == acked
