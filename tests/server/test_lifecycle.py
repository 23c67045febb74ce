"""Starting and stopping real node processes: graceful SIGTERM, restarts, refused configurations."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import pytest
import trio

from server.cli import main

from .conftest import APP
from .nodes import ENV, REPO, STARTUP_TIMEOUT, Reply, command, fetch, metric, open_node

#: SIGTERM with one 1 s call in flight: the call's remaining time plus the drain
EXIT_BOUND = 10.0


async def test_sigterm_finishes_in_flight_calls_then_exits_0(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    async with open_node(data_dir, "--app", APP) as node:
        replies: list[Reply] = []

        async def slow_call() -> None:
            replies.append(
                await fetch(node.url, "POST", "/v1/objects/Probe/p/slow", json_body={"args": [1.0]})
            )

        async with trio.open_nursery() as nursery:
            nursery.start_soon(slow_call)
            with trio.fail_after(5):  # the call has reached its object
                while True:
                    text = (await fetch(node.url, "GET", "/metrics")).body.decode()
                    if metric(text, "actors_live_objects") == 1:
                        break
                    await trio.sleep(0.01)
            node.process.send_signal(signal.SIGTERM)
            with trio.fail_after(EXIT_BOUND):
                code = await node.process.wait()
        assert code == 0, node.log()
        assert [(r.status, r.json()) for r in replies] == [(200, {"result": 1})]
        assert "event=draining" in node.log()
        assert "event=stopped" in node.log()

    async with open_node(data_dir, "--app", APP) as restarted:  # the drained turn was committed
        reply = await fetch(restarted.url, "POST", "/v1/objects/Probe/p/slow_calls")
        assert reply.json() == {"result": 1}
        listing = await fetch(restarted.url, "GET", "/v1/objects?class=Probe")
        assert [o["name"] for o in listing.json()["objects"]] == ["p"]


async def test_an_app_whose_class_clashes_with_a_room_exits_1(tmp_path: Path) -> None:
    argv = command(tmp_path / "data", "--app", "tests.server.probe_app:clashing")
    with trio.fail_after(STARTUP_TIMEOUT):
        result = await trio.run_process(
            argv, env=ENV, cwd=REPO, check=False, capture_stdout=True, capture_stderr=True
        )
    assert result.returncode == 1
    assert result.stdout == b""
    assert b"two classes are named 'Counter'" in result.stderr
    assert b"the built-in rooms use that name" in result.stderr


async def test_a_second_node_on_the_same_data_folder_exits_1_and_the_first_serves_on(tmp_path: Path) -> None:
    data = tmp_path / "data"
    async with open_node(data) as node:
        assert (await fetch(node.url, "POST", "/counter/c/increment")).json() == {"value": 1}
        with trio.fail_after(STARTUP_TIMEOUT):
            result = await trio.run_process(
                command(data), env=ENV, cwd=REPO, check=False, capture_stdout=True, capture_stderr=True
            )
        assert result.returncode == 1
        assert result.stdout == b""
        assert f"the data folder {data} is in use by process".encode() in result.stderr
        assert (await fetch(node.url, "POST", "/counter/c/increment")).json() == {"value": 2}


def test_a_bad_flag_exits_2_naming_it(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["serve", "--port", "eighty"])
    assert exit_info.value.code == 2
    assert "--port: invalid int value: 'eighty'" in capsys.readouterr().err


def test_a_bad_variable_exits_2_naming_it(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ACTORS_MAX_QUEUE_DEPTH", "lots")
    with pytest.raises(SystemExit) as exit_info:
        main(["serve"])
    assert exit_info.value.code == 2
    assert "ACTORS_MAX_QUEUE_DEPTH='lots'" in capsys.readouterr().err


def test_python_dash_m_server_cli_without_a_command_prints_usage() -> None:
    result = subprocess.run(
        [*command(Path("unused"))[:3]], env=ENV, capture_output=True, timeout=STARTUP_TIMEOUT
    )
    assert result.returncode == 2
    assert b"usage: actors" in result.stderr
