"""The admin routes (export, delete) and the ``actors objects`` verbs, against a real node process.

``admin_node`` has a token (admin routes need it) and its own ``TMPDIR``, so a test can see that an
export leaves no temporary file behind. The CLI runs as real ``python -m server.cli objects``
subprocesses; its exit statuses are part of its contract (0 ok, 1 local, 2 usage, 3 remote error,
4 unreachable).
"""

from __future__ import annotations

import json
import socket
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import cbor2
import pytest
import trio

from . import nodes
from .conftest import APP, TOKEN
from .nodes import Node, fetch, running_node

#: one CLI run: a cold interpreter importing the server package, then a few requests
CLI_TIMEOUT = 30.0


@pytest.fixture(scope="module")
def admin_tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("admin-tmpdir")


@pytest.fixture(scope="module")
def admin_node(tmp_path_factory: pytest.TempPathFactory, admin_tmp: Path) -> Iterator[Node]:
    data_dir = tmp_path_factory.mktemp("admin") / "data"
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(nodes.ENV, "TMPDIR", str(admin_tmp))
        with running_node(data_dir, "--app", APP, "--auth-token", TOKEN, token=TOKEN) as started:
            patch.delitem(nodes.ENV, "TMPDIR")
            yield started


async def _increment(node: Node, name: str, times: int = 1) -> None:
    for _ in range(times):
        reply = await fetch(node.url, "POST", f"/counter/{quote(name, safe='')}/increment", token=TOKEN)
        assert reply.status == 200, reply.body


async def _listed(node: Node, prefix: str) -> list[str | None]:
    reply = await fetch(node.url, "GET", f"/v1/objects?prefix={quote(prefix)}", token=TOKEN)
    assert reply.status == 200, reply.body
    return [entry["name"] for entry in reply.json()["objects"]]


def _entries(folder: Path) -> list[str]:
    return sorted(entry.name for entry in folder.iterdir())


def _kv_rows(path: Path) -> list[tuple[str, bytes]]:
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        return db.execute("SELECT key, value FROM _actors_kv ORDER BY key").fetchall()


#### Routes


async def test_export_is_a_sqlite_snapshot_holding_the_objects_kv_rows(
    admin_node: Node, unique: str, tmp_path: Path, admin_tmp: Path
) -> None:
    await _increment(admin_node, unique, times=3)
    reply = await fetch(admin_node.url, "GET", f"/v1/objects/Counter/{unique}/export", token=TOKEN)
    assert reply.status == 200, reply.body
    assert reply.headers["content-type"] == "application/vnd.sqlite3"
    assert reply.headers["content-disposition"] == f'attachment; filename="Counter-{unique}.sqlite3"'
    snapshot = tmp_path / "counter.sqlite3"
    snapshot.write_bytes(reply.body)
    assert _kv_rows(snapshot) == [("value", cbor2.dumps(3))]
    assert _entries(admin_tmp) == []  # the node's temporary copy is gone


async def test_export_filename_replaces_characters_unsafe_in_a_header(admin_node: Node, unique: str) -> None:
    name = f'a/b c"d;{unique}'
    await _increment(admin_node, name)
    reply = await fetch(
        admin_node.url, "GET", f"/v1/objects/Counter/{quote(name, safe='')}/export", token=TOKEN
    )
    assert reply.status == 200, reply.body
    assert reply.headers["content-disposition"] == f'attachment; filename="Counter-a_b_c_d_{unique}.sqlite3"'


async def test_export_of_an_object_never_written_or_of_an_unknown_class_is_404(
    admin_node: Node, unique: str, admin_tmp: Path
) -> None:
    never = await fetch(admin_node.url, "GET", f"/v1/objects/Counter/{unique}/export", token=TOKEN)
    assert never.status == 404
    assert never.json() == {
        "error": {"type": "ObjectNotFound", "message": f"Counter/{unique} has no storage"}
    }
    unknown = await fetch(admin_node.url, "GET", f"/v1/objects/Nope/{unique}/export", token=TOKEN)
    assert unknown.status == 404
    assert unknown.json()["error"]["type"] == "UnknownClass"
    assert _entries(admin_tmp) == []


async def test_admin_routes_need_the_token(admin_node: Node, unique: str) -> None:
    await _increment(admin_node, unique)
    for method, path in [
        ("GET", f"/v1/objects/Counter/{unique}/export"),
        ("DELETE", f"/v1/objects/Counter/{unique}"),
    ]:
        reply = await fetch(admin_node.url, method, path, token="wrong")
        assert reply.status == 401, (method, path)
        assert reply.json()["error"]["type"] == "Unauthorized"
    assert await _listed(admin_node, unique) == [unique]


async def test_delete_removes_the_objects_storage_and_its_listing(admin_node: Node, unique: str) -> None:
    await _increment(admin_node, unique, times=2)
    assert await _listed(admin_node, unique) == [unique]
    reply = await fetch(admin_node.url, "DELETE", f"/v1/objects/Counter/{unique}", token=TOKEN)
    assert (reply.status, reply.json()) == (200, {"deleted": True})
    assert await _listed(admin_node, unique) == []
    export = await fetch(admin_node.url, "GET", f"/v1/objects/Counter/{unique}/export", token=TOKEN)
    assert export.status == 404
    value = await fetch(admin_node.url, "GET", f"/counter/{unique}", token=TOKEN)
    assert value.json() == {"value": 0}


async def test_deleting_an_object_with_no_storage_succeeds(admin_node: Node, unique: str) -> None:
    reply = await fetch(admin_node.url, "DELETE", f"/v1/objects/Counter/{unique}", token=TOKEN)
    assert (reply.status, reply.json()) == (200, {"deleted": True})
    unknown = await fetch(admin_node.url, "DELETE", f"/v1/objects/Nope/{unique}", token=TOKEN)
    assert (unknown.status, unknown.json()["error"]["type"]) == (404, "UnknownClass")


#### The CLI


async def _cli(
    *args: str, url: str | None, token: str | None = TOKEN, cwd: Path
) -> subprocess.CompletedProcess[bytes]:
    """``actors objects ARGS`` with ACTORS_URL / ACTORS_TOKEN set (or unset when None)."""
    env = {k: v for k, v in nodes.ENV.items() if k not in ("ACTORS_URL", "ACTORS_TOKEN")}
    if url is not None:
        env["ACTORS_URL"] = url
    if token is not None:
        env["ACTORS_TOKEN"] = token
    with trio.fail_after(CLI_TIMEOUT):
        return await trio.run_process(
            [sys.executable, "-m", "server.cli", "objects", *args],
            env=env,
            cwd=cwd,
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )


async def test_cli_list_follows_the_cursor_through_every_page(
    admin_node: Node, unique: str, tmp_path: Path
) -> None:
    names = [f"{unique}-{i}" for i in range(5)]
    for name in names:
        await _increment(admin_node, name)
    every = await _cli("list", "--prefix", unique, "--page-size", "2", url=admin_node.url, cwd=tmp_path)
    assert (every.returncode, every.stderr) == (0, b"")
    lines = [line.split("\t") for line in every.stdout.decode().splitlines()]
    assert [(cls, name) for cls, name, _, _ in lines] == [("Counter", name) for name in names]
    assert all(len(object_id) == 64 for _, _, object_id, _ in lines)
    assert {node for _, _, _, node in lines} == {admin_node.url.removeprefix("http://")}  # its owner

    some = await _cli(
        "list", "--prefix", unique, "--page-size", "2", "--limit", "3", url=admin_node.url, cwd=tmp_path
    )
    assert [line.split("\t")[1] for line in some.stdout.decode().splitlines()] == names[:3]

    as_json = await _cli(
        "list", "--class", "Counter", "--prefix", unique, "--json", url=admin_node.url, cwd=tmp_path
    )
    objects = [json.loads(line) for line in as_json.stdout.decode().splitlines()]
    assert [(o["class"], o["name"]) for o in objects] == [("Counter", name) for name in names]
    assert {o["id"] for o in objects} == {object_id for _, _, object_id, _ in lines}


async def test_cli_export_writes_the_snapshot_then_delete_removes_the_object(
    admin_node: Node, unique: str, tmp_path: Path
) -> None:
    await _increment(admin_node, unique, times=4)
    out = tmp_path / "snapshot.sqlite3"
    export = await _cli("export", "Counter", unique, "-o", str(out), url=admin_node.url, cwd=tmp_path)
    assert export.returncode == 0, export.stderr
    assert _kv_rows(out) == [("value", cbor2.dumps(4))]
    assert export.stdout.decode().startswith(f"exported Counter/{unique} to {out} (")

    flags = ["--url", admin_node.url, "--token", TOKEN]  # flags instead of the variables this time
    delete = await _cli("delete", "Counter", unique, *flags, url=None, token=None, cwd=tmp_path)
    assert (delete.returncode, delete.stdout.decode()) == (0, f"deleted Counter/{unique}\n")
    listed = await _cli("list", "--prefix", unique, url=admin_node.url, cwd=tmp_path)
    assert (listed.returncode, listed.stdout) == (0, b"")


async def test_cli_exits_3_with_the_remote_errors_type_and_message(
    admin_node: Node, unique: str, tmp_path: Path
) -> None:
    out = tmp_path / "never.sqlite3"
    never = await _cli("export", "Counter", unique, "-o", str(out), url=admin_node.url, cwd=tmp_path)
    assert never.returncode == 3
    assert never.stderr.decode() == (
        f"actors objects export: ObjectNotFound: Counter/{unique} has no storage (HTTP 404)\n"
    )
    assert _entries(tmp_path) == []  # neither FILE nor FILE.part

    unknown = await _cli("delete", "Nope", unique, url=admin_node.url, cwd=tmp_path)
    assert unknown.returncode == 3
    assert unknown.stderr.decode().startswith("actors objects delete: UnknownClass: ")

    no_token = await _cli("list", url=admin_node.url, token=None, cwd=tmp_path)
    assert no_token.returncode == 3
    assert no_token.stderr.decode().startswith("actors objects list: Unauthorized: ")


async def test_cli_exits_4_when_the_node_cannot_be_reached(tmp_path: Path) -> None:
    # a bound socket that does not listen: connecting is refused, and no one else can take the port
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{closed.getsockname()[1]}"
        for args in (["list"], ["export", "Counter", "x", "-o", "out"], ["delete", "Counter", "x"]):
            result = await _cli(*args, "--url", url, url=None, cwd=tmp_path)
            assert result.returncode == 4, (args, result.stderr)
            assert result.stderr.decode().startswith(f"actors objects {args[0]}: cannot reach {url}: ")
    assert _entries(tmp_path) == []


async def test_cli_exits_2_on_usage_errors(tmp_path: Path) -> None:
    for args in (
        [],
        ["export", "Counter", "x"],  # no -o
        ["list", "--limit", "0"],
        ["list", "--page-size", "1001"],
        ["list", "--url", "ftp://example.com"],
    ):
        result = await _cli(*args, url=None, cwd=tmp_path)
        assert result.returncode == 2, (args, result.stderr)
        assert result.stderr, args
