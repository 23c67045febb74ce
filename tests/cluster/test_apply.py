"""A file membership changed live: ``actors cluster apply`` adds a node, ``leave --cluster`` drops one.

Real node processes on 127.0.0.1 and the real CLI. Checks what clients read before and after each
change (every counter keeps its value, none is served empty), where each object's file ends up
(exactly one node: its owner under the new epoch), and what the nodes refuse on the way.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

import trio

from actors import ObjectId
from actors.placement import ClusterMap
from server.cluster.applied import Applied, sign
from server.cluster.membership import Member
from tests.server.nodes import ENV, Node, fetch, in_thread

from .history import History, check_counters, check_single_writer, parse_object_events
from .load import final_values, run_load
from .processes import SECRET, Cluster, free_ports, open_cluster, wait_all_up, write_cluster_file

COUNTERS = 48
APPLY_TIMEOUT = 60


def cli(cwd: Path, *argv: str) -> subprocess.CompletedProcess[bytes]:
    command = [sys.executable, "-m", "server.cli", "cluster", *argv]
    return subprocess.run(command, capture_output=True, env=ENV, cwd=cwd, timeout=APPLY_TIMEOUT, check=False)


async def run_cli(cwd: Path, *argv: str) -> subprocess.CompletedProcess[bytes]:
    return await in_thread(cli, cwd, *argv, timeout=APPLY_TIMEOUT)  # type: ignore[no-any-return]


async def values_through(node: Node, names: list[str]) -> dict[str, int]:
    values = {}
    for name in names:
        reply = await fetch(node.url, "GET", f"/counter/{name}")
        assert reply.status == 200, (name, reply.status, reply.body)
        values[name] = reply.json()["value"]
    return values


async def wait_settled(nodes: list[Node], epoch: int) -> None:
    """Until every node runs ``epoch`` and has handed off everything it held for others."""
    with trio.fail_after(APPLY_TIMEOUT):
        for node in nodes:
            while True:
                reply = (await fetch(node.url, "GET", "/v1/cluster/nodes")).json()
                me = next(row for row in reply["nodes"] if row["node"] == reply["self"])
                if reply["epoch"] == epoch and me.get("settled"):
                    break
                await trio.sleep(0.1)


async def wait_epoch(node: Node, epoch: int) -> None:
    with trio.fail_after(APPLY_TIMEOUT):
        while True:
            if (await fetch(node.url, "GET", "/v1/cluster")).json()["epoch"] == epoch:
                return
            await trio.sleep(0.1)


def stored_on(base: Path, node_id: str, name: str) -> bool:
    hex_id = ObjectId.from_name("Counter", name).hex
    return any((base / node_id).rglob(f"{hex_id}.sqlite3"))


async def add_node(cluster: Cluster, node_id: str) -> Node:
    """Give ``node_id`` a port, list it in the cluster file and start it with that file."""
    cluster.ports[node_id] = free_ports(1)[0]
    cluster.ids.append(node_id)
    write_cluster_file(cluster.cluster_file, cluster.ports)
    return await cluster.start(node_id)


async def test_apply_adds_a_node_which_gets_its_share_with_state_and_leave_hands_one_off(tmp_path: Path):
    async with open_cluster(tmp_path, 3) as cluster:
        n1 = cluster.nodes["n1"]
        names = [f"apply-{i}" for i in range(COUNTERS)]
        for i, name in enumerate(names):
            reply = await fetch(n1.url, "POST", f"/counter/{name}/increment", json_body={"by": i + 1})
            assert reply.status == 200
        expected = {name: i + 1 for i, name in enumerate(names)}

        n4 = await add_node(cluster, "n4")
        old_map = ClusterMap(tuple((i, cluster.url(i)) for i in ("n1", "n2", "n3")), 1)
        new_map = ClusterMap(tuple((i, cluster.url(i)) for i in ("n1", "n2", "n3", "n4")), 2)
        gained = [n for n in names if new_map.owner(ObjectId.from_name("Counter", n).hex)[0] == "n4"]
        assert gained, "placement gives n4 none of the counters: use more"

        # Before the change is applied, n4's links are refused (its file differs): it creates nothing.
        before = await fetch(n4.url, "GET", f"/counter/{gained[0]}")
        assert before.status == 503, before.body
        assert before.json()["error"]["type"] == "OwnerUnavailable"
        assert not stored_on(tmp_path, "n4", gained[0])

        done = await run_cli(tmp_path, "apply", str(cluster.cluster_file))
        assert done.returncode == 0, done.stderr.decode()
        assert sorted(line.split("\t")[0] for line in done.stdout.decode().splitlines()) == [
            "n1", "n2", "n3", "n4"
        ]  # fmt: skip
        assert "epoch = 2" in cluster.cluster_file.read_text()

        nodes = list(cluster.nodes.values())
        await wait_all_up(nodes)
        await wait_settled(nodes, 2)
        for node in nodes:  # every counter keeps its value, read through any node
            assert await values_through(node, names) == expected
        for name in names:  # one file per counter, on its owner under epoch 2 only
            owner = new_map.owner(ObjectId.from_name("Counter", name).hex)[0]
            holders = [i for i in cluster.ids if stored_on(tmp_path, i, name)]
            assert holders == [owner], (name, holders, old_map.owner(ObjectId.from_name("Counter", name).hex))

        # Applying the same file again changes nothing.
        again = await run_cli(tmp_path, "apply", str(cluster.cluster_file))
        assert again.returncode == 0, again.stderr.decode()
        assert b"nothing to change" in again.stdout

        # n2 leaves: its objects move to the others, it is dropped from the file and exits 0.
        leave = await run_cli(tmp_path, "leave", "n2", "--cluster", str(cluster.cluster_file))
        assert leave.returncode == 0, leave.stderr.decode()
        with trio.fail_after(APPLY_TIMEOUT):  # it stops by itself
            assert await cluster.processes["n2"].wait() == 0
        assert 'id = "n2"' not in cluster.cluster_file.read_text()
        assert "epoch = 4" in cluster.cluster_file.read_text()
        rest = [cluster.nodes[i] for i in ("n1", "n3", "n4")]
        await wait_settled(rest, 4)
        for node in rest:
            assert await values_through(node, names) == expected
        assert not any(stored_on(tmp_path, "n2", name) for name in names)

        # Restarted, a node keeps the epoch it adopted (saved in its data folder).
        await cluster.stop("n3")
        n3 = await cluster.start("n3")
        reply = (await fetch(n3.url, "GET", "/v1/cluster")).json()
        assert reply["epoch"] == 4
        assert sorted(n["node"] for n in reply["nodes"]) == ["n1", "n3", "n4"]
        await wait_all_up(rest)
        assert await values_through(n3, names) == expected


async def test_a_membership_change_is_refused_unless_signed_newer_and_the_same_under_one_epoch(
    tmp_path: Path,
):
    async with open_cluster(tmp_path, 2, "--handoff-rate", "3") as cluster:
        n1 = cluster.nodes["n1"]
        names = [f"refuse-{i}" for i in range(40)]
        for name in names:
            assert (await fetch(n1.url, "POST", f"/counter/{name}/increment")).status == 200
        # A file that drops n2, which still owns objects: refused, nothing changes.
        alone = write_cluster_file(tmp_path / "alone.toml", {"n1": cluster.ports["n1"]})
        dropped = await run_cli(tmp_path, "apply", str(alone))
        assert dropped.returncode == 2, dropped.stderr.decode()
        assert b"n2 is not in the file but still owns objects" in dropped.stderr
        members = tuple(Member(i, cluster.url(i)) for i in ("n1", "n2"))
        change = Applied(2, members, frozenset({"n2"}), members, frozenset())
        body = {"membership": change.document(), "mac": sign(b"another-secret-0123456789", change)}
        forged = await fetch(n1.url, "PUT", "/v1/cluster/membership", json_body=body)
        assert forged.status == 403, forged.body
        assert (await fetch(n1.url, "GET", "/v1/cluster")).json()["epoch"] == 1

        malformed = {"membership": {"epoch": 2}, "mac": ""}
        bad = await fetch(n1.url, "PUT", "/v1/cluster/membership", json_body=malformed)
        assert (bad.status, bad.json()["error"]["type"]) == (400, "InvalidArgument"), bad.body

        signed = {"membership": change.document(), "mac": sign(SECRET.encode(), change)}
        took = await fetch(n1.url, "PUT", "/v1/cluster/membership", json_body=signed)
        assert (took.status, took.json()) == (200, {"epoch": 2, "adopted": True})
        # n2 learns the change from n1 over their link, without being sent it
        await wait_epoch(cluster.nodes["n2"], 2)
        # n2 now hands its counters (about 20) to n1, 3 a second: meanwhile no other change is taken.
        busy = await run_cli(tmp_path, "apply", str(cluster.cluster_file))
        assert busy.returncode == 2, busy.stderr.decode()
        assert b"still moving objects: n2" in busy.stderr

        other = Applied(2, members, frozenset(), members, frozenset())
        conflict = {"membership": other.document(), "mac": sign(SECRET.encode(), other)}
        refused = await fetch(n1.url, "PUT", "/v1/cluster/membership", json_body=conflict)
        assert (refused.status, refused.json()["error"]["type"]) == (409, "Conflict"), refused.body
        repeat = await fetch(n1.url, "PUT", "/v1/cluster/membership", json_body=signed)
        assert (repeat.status, repeat.json()) == (200, {"epoch": 2, "adopted": False})
        saved = json.loads((tmp_path / "n1" / "cluster.json").read_text())
        assert saved["membership"]["epoch"] == 2
        await wait_settled(list(cluster.nodes.values()), 2)
        assert await values_through(cluster.nodes["n2"], names) == dict.fromkeys(names, 1)
        assert not any(stored_on(tmp_path, "n2", name) for name in names)


async def test_apply_and_leave_under_load_keep_every_history_sound(tmp_path: Path) -> None:
    """Under continuous increments and reads through every node and the SDK: add a node with
    ``apply``, decommission another with ``leave``, SIGKILL and restart a third; then check what
    every client saw and that no object was ever open on two nodes at once."""
    names = [f"file-proof-{i}" for i in range(24)]
    history = History()
    killed_at: dict[str, list[float]] = {}
    async with open_cluster(tmp_path, 3, "--log-objects", "--log-format", "json") as cluster:
        cluster.ports["n4"] = free_ports(1)[0]
        urls = [cluster.url(i) for i in ("n1", "n2", "n3", "n4")]
        stop = trio.Event()
        async with trio.open_nursery() as nursery:
            load = partial(run_load, history, http_urls=urls, sdk_url=urls[1], names=names, stop=stop)
            nursery.start_soon(load)
            await trio.sleep(1.5)
            await add_node(cluster, "n4")
            applied = await run_cli(tmp_path, "apply", str(cluster.cluster_file))
            assert applied.returncode == 0, applied.stderr.decode()
            await wait_settled(list(cluster.nodes.values()), 2)
            await trio.sleep(1)
            left = await run_cli(tmp_path, "leave", "n1", "--cluster", str(cluster.cluster_file))
            assert left.returncode == 0, left.stderr.decode()
            with trio.fail_after(APPLY_TIMEOUT):
                assert await cluster.processes["n1"].wait() == 0
            await trio.sleep(1)
            cluster.kill("n2")
            killed_at["n2"] = [time.time()]
            with trio.fail_after(APPLY_TIMEOUT):
                await cluster.processes["n2"].wait()
            await trio.sleep(1)
            await cluster.start("n2")
            rest = [cluster.nodes[i] for i in ("n2", "n3", "n4")]
            await wait_all_up(rest)
            await trio.sleep(1.5)
            stop.set()
        counts = history.counts()
        finals = await final_values([cluster.url(i) for i in ("n2", "n3", "n4")], names)
    assert counts["ok"] > 200, counts
    problems = check_counters(history, finals)
    assert problems == [], "\n".join(problems)
    events = parse_object_events([tmp_path / f"{i}.log" for i in ("n1", "n2", "n3", "n4")])
    assert check_single_writer(events, killed_at) == []
    assert {e.object for e in events if e.kind == "opened" and e.node == "n4"}, "n4 took a share"
