"""``actors cluster nodes|leave|remove --etcd``: real CLI processes against a real etcd.

The tests play the part of the nodes through ``Registry`` (join, publish holds, remove themselves
when they have left) and of their liveness keys; each test has a prefix of its own in one etcd.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import aclosing

import pytest
import trio

from server.cluster.etcd import Etcd, open_etcd
from server.cluster.registry import MembershipRefused, Registry, SlotSet
from tests.server.nodes import ENV

from .etcd_server import EtcdServer, running_etcd
from .processes import free_ports

LEAVING = r"^n2: leaving at epoch \d+; its objects move to n1$"


@pytest.fixture(scope="module")
def shared_etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdServer]:
    with running_etcd(tmp_path_factory.mktemp("etcd")) as server:
        yield server


@pytest.fixture
async def etcd(shared_etcd: EtcdServer) -> AsyncIterator[Etcd]:
    async with open_etcd(shared_etcd.url, prefix=f"/cli-{uuid.uuid4().hex}/") as client:
        yield client


@pytest.fixture
async def registry(etcd: Etcd) -> Registry:
    registry = Registry(etcd)
    await registry.join("n1", "http://127.0.0.1:8081")
    await registry.join("n2", "http://127.0.0.1:8082")
    return registry


async def actors(
    etcd: Etcd, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[bytes]:
    """``actors cluster ARGS`` with ACTORS_ETCD and ACTORS_ETCD_PREFIX naming the test's etcd."""
    variables = {**ENV, "ACTORS_ETCD": etcd.url, "ACTORS_ETCD_PREFIX": etcd.prefix, **(env or {})}
    with trio.fail_after(30):
        return await trio.run_process(
            [sys.executable, "-m", "server.cli", "cluster", *args],
            env=variables,
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )


def lines(output: bytes) -> list[str]:
    return output.decode().splitlines()


#### nodes


async def test_nodes_lists_each_member_its_state_and_liveness_then_the_epoch(registry: Registry, etcd: Etcd):
    await registry.set_leaving("n2")
    view = await registry.read()
    await etcd.put("alive/n1", b"")
    shown = await actors(etcd, "nodes", "--etcd", etcd.url, "--etcd-prefix", etcd.prefix)
    assert (shown.returncode, shown.stderr) == (0, b"")
    assert lines(shown.stdout) == [
        "n1\thttp://127.0.0.1:8081\tactive\tyes",
        "n2\thttp://127.0.0.1:8082\tleaving\tno",
        f"epoch\t{view.epoch}",
    ]
    as_json = await actors(etcd, "nodes", "--json")  # the variables name etcd
    assert json.loads(as_json.stdout) == {
        "epoch": view.epoch,
        "nodes": [
            {"id": "n1", "url": "http://127.0.0.1:8081", "state": "active", "alive": True},
            {"id": "n2", "url": "http://127.0.0.1:8082", "state": "leaving", "alive": False},
        ],
    }


async def test_usage_errors_and_an_unreachable_etcd_have_their_exit_statuses(etcd: Etcd):
    (port,) = free_ports(1)
    cases = [
        (
            ["nodes", "--url", "http://127.0.0.1:1", "--etcd", etcd.url],
            2,
            "--url (a node) and --etcd: name one",
        ),
        (["leave", "n2", "--etcd", "ftp://x"], 2, "--etcd must look like http://host:port, not 'ftp://x'"),
        (["leave", "n2", "--etcd", f"http://127.0.0.1:{port}"], 4, "kv/range: etcd at http://127.0.0.1:"),
        (["nodes", "--etcd", f"http://127.0.0.1:{port}"], 4, "kv/range: etcd at http://127.0.0.1:"),
    ]
    results: dict[int, subprocess.CompletedProcess[bytes]] = {}

    async def run(index: int, args: list[str]) -> None:
        results[index] = await actors(etcd, *args)

    async with trio.open_nursery() as nursery:
        for index, (args, _, _) in enumerate(cases):
            nursery.start_soon(run, index, args)
    for index, (args, status, message) in enumerate(cases):
        result = results[index]
        assert result.returncode == status, args
        assert result.stderr.decode().startswith(f"actors cluster {args[0]}: {message}"), result.stderr
    missing = await actors(etcd, "leave", "n2", env={"ACTORS_ETCD": ""})
    assert (missing.returncode, missing.stderr) == (
        2,
        b"actors cluster leave: --etcd URL (or ACTORS_ETCD) is required\n",
    )


#### leave


async def test_leave_refuses_a_stranger_and_the_last_active_member(registry: Registry, etcd: Etcd):
    stranger = await actors(etcd, "leave", "n9")
    assert (stranger.returncode, lines(stranger.stderr)) == (
        2,
        ["actors cluster leave: node n9 is not a member (members: n1, n2)"],
    )
    await registry.set_leaving("n2")
    last = await actors(etcd, "leave", "n1")
    assert (last.returncode, lines(last.stderr)) == (
        2,
        ["actors cluster leave: node n1 is the last active member; it cannot leave"],
    )


async def test_leave_with_wait_0_marks_the_node_leaving_and_returns(registry: Registry, etcd: Etcd):
    result = await actors(etcd, "leave", "n2", "--wait", "0")
    assert result.returncode == 0
    first, second = lines(result.stdout)
    assert first == f"n2: leaving at epoch {(await registry.read()).epoch}; its objects move to n1"
    assert second.startswith("n2: not waiting")
    assert (await registry.read()).member("n2").state == "leaving"  # type: ignore[union-attr]


async def test_leave_waits_until_the_node_removed_itself_printing_what_it_still_holds(
    registry: Registry, etcd: Etcd
):
    await etcd.put("alive/n2", b"")
    done: list[subprocess.CompletedProcess[bytes]] = []

    async def leave() -> None:
        done.append(await actors(etcd, "leave", "n2"))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(leave)
        with trio.fail_after(20):  # the node's part: notice, hand off (its holds shrink), remove itself
            async with aclosing(registry.watch(0)) as views:
                async for view in views:
                    if view.member("n2").state == "leaving":  # type: ignore[union-attr]
                        break
            for slots in ([1, 2, 3], [3]):
                await registry.publish_holds("n2", view.epoch, SlotSet.from_slots(slots))
                await trio.sleep(1.5)  # the command reports at most once a second
            gone = await registry.remove("n2", discard_data=False)
    (result,) = done
    assert (result.returncode, result.stderr) == (0, b"")
    printed = lines(result.stdout)
    assert printed[0] == f"n2: leaving at epoch {view.epoch}; its objects move to n1"
    progress = printed[1:-1]
    if progress[0] == "n2: no holds published":  # (unless the node published before the first look)
        progress.pop(0)
    assert progress == [
        f"n2: may still hold objects in 3 slots (published at epoch {view.epoch})",
        f"n2: may still hold objects in 1 slot (published at epoch {view.epoch})",
    ]
    assert printed[-1] == f"n2: left the cluster at epoch {gone.epoch}"


async def test_leave_that_times_out_exits_5_and_says_what_is_left(registry: Registry, etcd: Etcd):
    view = await registry.set_leaving("n2")
    await registry.publish_holds("n2", view.epoch, SlotSet.from_slots([5, 6]))
    start = trio.current_time()
    result = await actors(etcd, "leave", "n2", "--wait", "1")
    assert 1 <= trio.current_time() - start < 5
    assert result.returncode == 5
    assert lines(result.stdout) == [
        f"n2: leaving at epoch {view.epoch}; its objects move to n1",
        f"n2: may still hold objects in 2 slots (published at epoch {view.epoch}); it is down: nothing "
        "moves until it is back",
    ]
    assert lines(result.stderr) == [
        f"actors cluster leave: n2 is still a member (leaving) after 1 s; may still hold objects "
        f"in 2 slots (published at epoch {view.epoch}); it is down: nothing moves until it is back. It "
        "goes on handing its objects off: run leave again to keep waiting"
    ]


#### remove


async def test_remove_needs_discard_data_and_refuses_a_node_that_is_up_without_force(
    registry: Registry, etcd: Etcd
):
    before = await registry.read()
    plain = await actors(etcd, "remove", "n2")
    assert plain.returncode == 2
    assert lines(plain.stderr) == [
        "actors cluster remove: refusing to remove n2 without --discard-data: a member's objects live on "
        "its disk, and remove gives them away empty; use `actors cluster leave n2` to move them to the "
        "other members first"
    ]
    await etcd.put("alive/n2", b"")
    up = await actors(etcd, "remove", "n2", "--discard-data")
    assert up.returncode == 2
    assert lines(up.stderr) == [
        "actors cluster remove: n2 is up (its liveness key exists): use `actors cluster leave n2` to "
        "move its objects, or stop it first (--force removes it anyway, its objects given away empty)"
    ]
    assert await registry.read() == before
    forced = await actors(etcd, "remove", "n2", "--discard-data", "--force")
    assert forced.returncode == 0
    assert (await registry.read()).member("n2") is None


async def test_remove_discards_the_data_says_so_logs_it_and_the_id_may_not_join_again(
    registry: Registry, etcd: Etcd
):
    await registry.publish_holds("n2", 1, SlotSet.all())
    result = await actors(etcd, "remove", "n2", "--discard-data", env={"ACTORS_LOG_FORMAT": "json"})
    assert result.returncode == 0
    view = await registry.read()
    assert lines(result.stdout) == [
        f"removed n2 at epoch {view.epoch}, its data discarded: its objects start empty on the other "
        "members, and the id n2 may not join again"
    ]
    (logged,) = [json.loads(line) for line in lines(result.stderr)]
    assert {k: logged[k] for k in ("level", "logger", "event", "node", "epoch")} == {
        "level": "warning",
        "logger": "server.cluster",
        "event": "member_removed",
        "node": "n2",
        "epoch": view.epoch,
    }
    assert "@" in logged["by"]
    assert await registry.read_holds() == {}
    with pytest.raises(MembershipRefused, match=r"^node n2 was removed with --discard-data by .+@"):
        await registry.join("n2", "http://127.0.0.1:8082")
    again = await actors(etcd, "remove", "n2", "--discard-data")
    assert (again.returncode, lines(again.stdout)) == (0, [f"n2 was already removed (epoch {view.epoch})"])
