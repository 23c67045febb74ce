"""``actors call`` run as a user runs it: ``python -m server.cli call ...`` against a real node process.

Each exit status of the table in ``client/cli.py`` is provoked once, against the SDK tests' session
nodes (``conftest.py``: ``tests.server.probe_app:app`` with ``Probe.slow``, ``fail`` and ``blob``
beside the built-in rooms; ``token_node`` wants a bearer token).
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import uuid

import pytest

from tests.server.nodes import ENV, REPO, Node

#: one CLI process: a cold interpreter importing trio and the SDK, one connection, one call
CLI_TIMEOUT = 30.0


def run_actors(
    *argv: str, env: dict[str, str] | None = None, timeout: float = CLI_TIMEOUT
) -> subprocess.CompletedProcess[str]:
    """Run ``actors ARGV...`` in a subprocess (ACTORS_URL/ACTORS_TOKEN unset unless ``env`` sets them)."""
    environ = {k: v for k, v in ENV.items() if k not in ("ACTORS_URL", "ACTORS_TOKEN")}
    return subprocess.run(
        [sys.executable, "-m", "server.cli", *argv],
        env={**environ, **(env or {})},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def free_port() -> int:
    """A port nothing listens on (bound and released; nothing else on this machine takes it meanwhile)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def name() -> str:
    return f"cli-{uuid.uuid4().hex[:12]}"


def test_call_prints_the_result_as_one_line_of_json(node: Node, name: str) -> None:
    first = run_actors("call", "Counter", name, "increment", "--kwargs", '{"by": 2}', "--url", node.url)
    assert (first.returncode, first.stdout, first.stderr) == (0, "2\n", "")
    second = run_actors("call", "Counter", name, "increment", "--args", "[3]", "--url", node.url)
    assert (second.returncode, second.stdout) == (0, "5\n")
    take = run_actors("call", "RateLimiter", name, "take", "--url", node.url)
    assert (take.returncode, json.loads(take.stdout)) == (0, {"allowed": True, "remaining": 99})


def test_bytes_are_printed_and_sent_as_base64_objects(node: Node, name: str) -> None:
    blob = run_actors("call", "Probe", name, "blob", "--url", node.url)
    assert (blob.returncode, json.loads(blob.stdout)) == (0, {"$bytes": "AP9ieXRlcw=="})
    echo = run_actors(
        "call",
        "Probe",
        name,
        "echo",
        "--args",
        '[{"$bytes": "AP8="}]',
        "--kwargs",
        '{"k": [1]}',
        "--url",
        node.url,
    )
    assert json.loads(echo.stdout) == {"args": [{"$bytes": "AP8="}], "kwargs": {"k": [1]}}


def test_the_url_comes_from_actors_url_unless_a_flag_gives_it(node: Node, name: str) -> None:
    from_env = run_actors("call", "Counter", name, "increment", env={"ACTORS_URL": node.url})
    assert (from_env.returncode, from_env.stdout) == (0, "1\n")
    nowhere = f"http://127.0.0.1:{free_port()}"
    flag_wins = run_actors("call", "Counter", name, "get", "--url", node.url, env={"ACTORS_URL": nowhere})
    assert (flag_wins.returncode, flag_wins.stdout) == (0, "1\n")


@pytest.mark.parametrize(
    "flags",
    [
        ["--kwargs", "{"],
        ["--kwargs", "[1]"],
        ["--args", '{"by": 2}'],
        ["--args", '[{"$bytes": "not base64!"}]'],
        ["--timeout", "0"],
        ["--url", "ftp://127.0.0.1:1"],
        ["--no-such-flag"],
    ],
)
def test_bad_flags_and_bad_json_exit_2(node: Node, flags: list[str]) -> None:
    result = run_actors("call", "Counter", "x", "increment", *flags, env={"ACTORS_URL": node.url})
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    assert "error:" in result.stderr


def test_a_bad_actors_url_exits_2() -> None:
    result = run_actors("call", "Counter", "x", "get", env={"ACTORS_URL": "localhost:8080"})
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr.startswith("actors: error: ACTORS_URL: not an http(s)://host[:port] URL")


def test_an_unknown_method_exits_3_with_its_type_on_stderr(node: Node, name: str) -> None:
    result = run_actors("call", "Counter", name, "nope", "--url", node.url)
    assert (result.returncode, result.stdout) == (3, "")
    assert result.stderr.startswith("UnknownMethod: "), result.stderr
    as_json = run_actors("call", "Counter", name, "nope", "--url", node.url, "--json-errors")
    assert as_json.returncode == 3
    assert json.loads(as_json.stderr)["error"]["type"] == "UnknownMethod"


def test_an_exception_of_the_object_exits_3_with_its_class_name(node: Node, name: str) -> None:
    result = run_actors("call", "Probe", name, "fail", "--args", '["boom"]', "--url", node.url)
    assert (result.returncode, result.stderr) == (3, "ValueError: boom\n")


def test_a_call_past_its_timeout_exits_5(node: Node, name: str) -> None:
    result = run_actors(
        "call", "Probe", name, "slow", "--args", "[10]", "--timeout", "0.5", "--url", node.url
    )
    assert result.returncode == 5, result.stderr
    assert result.stderr.startswith(("CallTimeout: ", "ReplyTimeout: ")), result.stderr


def test_a_port_nobody_listens_on_exits_4() -> None:
    result = run_actors(
        "call", "Counter", "x", "get", "--url", f"http://127.0.0.1:{free_port()}", "--timeout", "1"
    )
    assert (result.returncode, result.stdout) == (4, "")
    assert result.stderr.startswith("Unreachable: "), result.stderr


def test_a_node_with_a_token_refuses_a_call_without_it(token_node: Node, name: str) -> None:
    refused = run_actors("call", "Counter", name, "increment", "--url", token_node.url)
    assert (refused.returncode, refused.stdout) == (3, "")
    assert refused.stderr.startswith("Unauthorized: "), refused.stderr
    assert token_node.token is not None
    allowed = run_actors(
        "call", "Counter", name, "increment", "--url", token_node.url, env={"ACTORS_TOKEN": token_node.token}
    )
    assert (allowed.returncode, allowed.stdout) == (0, "1\n")
