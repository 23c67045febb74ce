"""A separate admin token (``--admin-token``): the admin routes need it, the call token no longer
opens them, and the ordinary routes keep needing the call token (the admin token opens them too).

Through the real HTTP interface of node processes and the real ``actors`` CLI (subprocesses).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from client import connect

from . import nodes
from .conftest import APP
from .nodes import Node, fetch, running_node

CALL = "call-token-0123"
ADMIN = "admin-token-4567"
#: one CLI run: a cold interpreter importing the server package, then a few requests
CLI_TIMEOUT = 30.0

ADMIN_ROUTES = [
    ("GET", "/v1/objects?class=Counter"),
    ("GET", "/v1/cluster/nodes"),
    ("GET", "/v1/objects/Counter/admin-probe/export"),
    ("DELETE", "/v1/objects/Counter/nothing-here"),
]
CALL_ROUTES = [
    ("POST", "/counter/admin-probe/increment"),
    ("GET", "/counter/admin-probe"),
    ("POST", "/v1/objects/Counter/admin-probe/get"),
    ("GET", "/v1/cluster"),
    ("GET", "/metrics"),
]
ADMIN_NEEDED = "this is an admin route: it needs the admin token (Authorization: Bearer <admin token>)"


@pytest.fixture(scope="module")
def two_tokens(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    data_dir = tmp_path_factory.mktemp("admin-token") / "data"
    with running_node(data_dir, "--app", APP, "--auth-token", CALL, "--admin-token", ADMIN) as node:
        yield node


@pytest.fixture(scope="module")
def admin_only(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    data_dir = tmp_path_factory.mktemp("admin-only") / "data"
    with running_node(data_dir, "--app", APP, "--admin-token", ADMIN) as node:
        yield node


@pytest.mark.parametrize(("method", "path"), ADMIN_ROUTES)
async def test_an_admin_route_opens_to_the_admin_token_only(two_tokens: Node, method: str, path: str) -> None:
    await fetch(two_tokens.url, "POST", "/counter/admin-probe/increment", token=CALL)  # to export
    reply = await fetch(two_tokens.url, method, path, token=ADMIN)
    assert reply.status == 200, reply.body
    reply = await fetch(two_tokens.url, method, path, token=CALL)
    assert reply.status == 403
    assert reply.json() == {
        "error": {"type": "Forbidden", "message": ADMIN_NEEDED + "; the call token does not open it"}
    }
    for token in (None, "wrong"):
        reply = await fetch(two_tokens.url, method, path, token=token)
        assert reply.status == 401
        assert reply.json()["error"]["type"] == "Unauthorized"


@pytest.mark.parametrize(("method", "path"), CALL_ROUTES)
async def test_an_ordinary_route_needs_the_call_token_and_the_admin_token_opens_it_too(
    two_tokens: Node, method: str, path: str
) -> None:
    for token in (CALL, ADMIN):
        reply = await fetch(two_tokens.url, method, path, token=token)
        assert reply.status == 200, (token, reply.body)
    for token in (None, "wrong"):
        reply = await fetch(two_tokens.url, method, path, token=token)
        assert reply.status == 401
        assert reply.json()["error"] == {
            "type": "Unauthorized",
            "message": "missing or wrong bearer token (Authorization: Bearer <token>)",
        }


async def test_a_refused_token_is_logged_with_the_peer_and_never_the_token(two_tokens: Node) -> None:
    await fetch(two_tokens.url, "GET", "/v1/cluster/nodes", token="not-the-admin-token-xyz")
    log = two_tokens.log()
    assert "refused: missing or wrong token" in log
    assert "peer=127.0.0.1:" in log
    for secret in ("not-the-admin-token-xyz", ADMIN, CALL):
        assert secret not in log


async def test_the_sdk_and_websockets_take_either_token(two_tokens: Node) -> None:
    for token in (CALL, ADMIN):
        async with connect(two_tokens.url, token=token, timeout=10) as client:
            assert await client.call("Counter", "admin-sdk", "get") == 0


async def test_with_only_an_admin_token_ordinary_routes_stay_open(admin_only: Node) -> None:
    assert (await fetch(admin_only.url, "POST", "/counter/open/increment")).status == 200
    assert (await fetch(admin_only.url, "GET", "/v1/objects")).status == 401
    assert (await fetch(admin_only.url, "GET", "/v1/objects", token=ADMIN)).status == 200


async def _actors(*args: str, url: str, token: str, cwd: Path) -> subprocess.CompletedProcess[bytes]:
    env = {**nodes.ENV, "ACTORS_URL": url, "ACTORS_TOKEN": token}
    with trio.fail_after(CLI_TIMEOUT):
        return await trio.run_process(
            [sys.executable, "-m", "server.cli", *args],
            env=env,
            cwd=cwd,
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )


async def test_actors_objects_and_cluster_nodes_take_the_admin_token_as_their_token(
    two_tokens: Node, tmp_path: Path
) -> None:
    await fetch(two_tokens.url, "POST", "/counter/admin-probe/increment", token=CALL)
    listed = await _actors("objects", "list", "--json", url=two_tokens.url, token=ADMIN, cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert any(json.loads(line)["name"] == "admin-probe" for line in listed.stdout.splitlines())
    members = await _actors("cluster", "nodes", url=two_tokens.url, token=ADMIN, cwd=tmp_path)
    assert members.returncode == 0, members.stderr
    refused = await _actors("objects", "list", url=two_tokens.url, token=CALL, cwd=tmp_path)
    assert refused.returncode == 3
    assert ADMIN_NEEDED in refused.stderr.decode()


def test_an_empty_admin_token_or_one_equal_to_the_call_token_is_refused() -> None:
    from server import Config

    with pytest.raises(ValueError, match=r"^admin_token must not be empty"):
        Config(admin_token="")
    with pytest.raises(ValueError, match=r"^admin_token must differ from auth_token"):
        Config(auth_token="same", admin_token="same")
