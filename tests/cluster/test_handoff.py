"""Membership that changes while calls flow: objects move with their files, never two writers.

Real etcd, real node processes on 127.0.0.1 (``etcd_nodes.py``). The proof under load checks the
history every client saw (``history.py``): nothing doubled, lost or invented, reads in real-time
order, and the nodes' logs of opening and closing objects never overlap across nodes.
"""

from __future__ import annotations

import time
from functools import partial
from pathlib import Path

import trio

from actors.placement import ClusterMap
from client import connect
from tests.server.nodes import fetch
from tests.server.sockets import open_socket, receive, send_json, wait_closed

from .etcd_nodes import EtcdNodes, EtcdProxy, open_etcd_nodes
from .etcd_server import running_etcd
from .history import History, check_counters, check_single_writer, object_hex, parse_object_events
from .load import final_values, run_load

LOG_FLAGS = ("--log-objects", "--log-format", "json")


async def _increment(nodes: EtcdNodes, via: str, name: str) -> tuple[int, dict[str, object]]:
    reply = await fetch(nodes.url(via), "POST", f"/counter/{name}/increment")
    return reply.status, reply.json()


async def _value(nodes: EtcdNodes, via: str, name: str) -> int:
    """The counter's value; 503 (a node just back whose link is not up yet) is asked again, 5 s at most."""
    with trio.fail_after(5):
        while True:
            reply = await fetch(nodes.url(via), "GET", f"/counter/{name}")
            if reply.status != 503:
                break
            await trio.sleep(0.1)
    assert reply.status == 200, reply.body
    return int(reply.json()["value"])


def _stored_files(folder: Path) -> set[str]:
    """Object ids with a file in a node's data folder (its copy of the object)."""
    return {path.name.split(".")[0] for path in (folder / "objects").rglob("*.sqlite3")}


async def test_a_joining_node_takes_its_share_with_the_state(tmp_path: Path) -> None:
    with running_etcd(tmp_path) as etcd:
        async with open_etcd_nodes(tmp_path, etcd.url, ["n1", "n2"]) as nodes:
            names = [f"join-{i}" for i in range(120)]
            for i, name in enumerate(names):
                for _ in range(1 + i % 3):
                    status, _ = await _increment(nodes, "n1", name)
                    assert status == 200
            await nodes.start("n3")
            await nodes.wait_ready("n3")
            await nodes.wait_settled("n1", {"n1", "n2", "n3"})
            for i, name in enumerate(names):  # every value survived the move, read through any node
                assert await _value(nodes, ("n1", "n2", "n3")[i % 3], name) == 1 + i % 3
            view = await nodes.nodes_view("n2")
            assert view["n3"]["objects"] > 0
            files = {node_id: _stored_files(tmp_path / node_id) for node_id in ("n1", "n2", "n3")}
        # each object's file exists on exactly one node, and the right one
        all_ids = {object_hex("Counter", name) for name in names}
        assert set().union(*files.values()) >= all_ids
        for a in files:
            for b in files:
                assert a == b or not (files[a] & files[b] & all_ids), (a, b)


async def test_leave_hands_every_object_off_then_exits(tmp_path: Path) -> None:
    with running_etcd(tmp_path) as etcd:
        async with open_etcd_nodes(tmp_path, etcd.url, ["n1", "n2", "n3"]) as nodes:
            names = [f"leave-{i}" for i in range(90)]
            for name in names:
                assert (await _increment(nodes, "n2", name))[0] == 200
            before = _stored_files(tmp_path / "n1")
            assert before, "n1 should own some of the counters"
            done = await nodes.cli("cluster", "leave", "n1")
            assert done.returncode == 0, done.stderr.decode()
            assert b"left the cluster" in done.stdout
            assert await nodes.wait_exit("n1") == 0
            assert _stored_files(tmp_path / "n1") == set()  # nothing left behind
            view = await nodes.nodes_view("n2")
            assert set(view) == {"n2", "n3"}
            for name in names:
                assert await _value(nodes, "n3", name) == 1


async def test_objects_of_a_down_node_are_never_served_empty(tmp_path: Path) -> None:
    """A member that is down keeps its objects: a node that joins meanwhile does not create them
    empty; they move once their holder is back, with their values."""
    with running_etcd(tmp_path) as etcd:
        async with open_etcd_nodes(tmp_path, etcd.url, ["n1", "n2"]) as nodes:
            names = [f"down-{i}" for i in range(150)]
            for name in names:
                assert (await _increment(nodes, "n1", name))[0] == 200
            on_n2 = _stored_files(tmp_path / "n2")
            nodes.kill("n2")
            await nodes.wait_exit("n2")
            await nodes.start("n3")
            await nodes.wait_ready("n3")
            # n3 owns a share now; objects it owns that n2 holds must not be served empty
            refused = 0
            for name in names:
                key = object_hex("Counter", name)
                status, body = await _increment(nodes, "n1", name)
                if key in on_n2:
                    assert status == 503, (name, status, body)
                    assert body["error"]["type"] == "OwnerUnavailable"
                    refused += 1
                else:
                    assert (status, body.get("value")) == (200, 2), (name, body)
            assert refused > 0
            await nodes.start("n2")  # back with its disk: its objects move to their owners
            await nodes.wait_ready("n2")
            await nodes.wait_settled("n1", {"n1", "n2", "n3"})
            for name in names:
                expected = 1 if object_hex("Counter", name) in on_n2 else 2
                assert await _value(nodes, "n3", name) == expected, name


async def test_a_node_cut_off_from_etcd_stops_taking_turns(tmp_path: Path) -> None:
    """Fencing: within ttl - margin of its last renewal a cut-off node refuses turns; after etcd is
    reachable again it serves again."""
    with running_etcd(tmp_path) as etcd:
        proxy = EtcdProxy(etcd.client_port)
        async with trio.open_nursery() as nursery:
            await nursery.start(proxy.serve)
            nodes = EtcdNodes(tmp_path, etcd.url)
            nodes.etcd_for["n2"] = proxy.url
            try:
                for node_id in ("n1", "n2"):
                    await nodes.start(node_id)
                await nodes.wait_ready("n1", "n2")
                names = [f"fence-{i}" for i in range(40)]
                on_n2 = []
                for name in names:
                    status, body = await _increment(nodes, "n2", name)
                    assert status == 200, body
                    if object_hex("Counter", name) in _stored_files(tmp_path / "n2"):
                        on_n2.append(name)
                assert on_n2
                proxy.cut()
                cut_at = time.monotonic()
                with trio.fail_after(10):  # ttl 4 s, margin 1.5 s: fenced within 2.5 s of the last renewal
                    while True:
                        status, body = await _increment(nodes, "n1", on_n2[0])
                        if status == 503:
                            assert "fencing" in body["error"]["message"], body
                            break
                        await trio.sleep(0.1)
                assert time.monotonic() - cut_at < 4.0  # before the lease can have lapsed in etcd
                await trio.sleep(3)  # the lease lapses; n2 stays a member, marked down
                status, body = await _increment(nodes, "n1", on_n2[0])
                assert status == 503
                proxy.heal()
                with trio.fail_after(15):
                    while True:
                        if (await _increment(nodes, "n1", on_n2[0]))[0] == 200:
                            break
                        await trio.sleep(0.2)
            finally:
                await nodes.close()
                nursery.cancel_scope.cancel()


async def test_membership_changes_under_load_keep_every_history_sound(tmp_path: Path) -> None:
    """The proof: under continuous increments and reads through every node and the SDK, add a node,
    decommission another, SIGKILL and restart a third, restart etcd, cut a node off from etcd long
    enough for its lease to lapse; then check what every client saw and who held what open."""
    names = [f"proof-{i}" for i in range(30)]
    history = History()
    killed_at: dict[str, list[float]] = {}
    with running_etcd(tmp_path) as etcd:
        proxy = EtcdProxy(etcd.client_port)
        async with trio.open_nursery() as outer:
            await outer.start(proxy.serve)
            nodes = EtcdNodes(tmp_path, etcd.url, *LOG_FLAGS)
            nodes.etcd_for["n3"] = proxy.url
            try:
                for node_id in ("n1", "n2", "n3"):
                    await nodes.start(node_id)
                await nodes.wait_ready("n1", "n2", "n3")
                urls = [nodes.url(i) for i in ("n1", "n2", "n3", "n4")]
                stop = trio.Event()
                async with trio.open_nursery() as nursery:
                    load = partial(run_load, history, http_urls=urls, sdk_url=urls[1], names=names, stop=stop)
                    nursery.start_soon(load)
                    await trio.sleep(1.5)
                    await nodes.start("n4")  # a node joins
                    await nodes.wait_settled("n2", {"n1", "n2", "n3", "n4"})
                    await trio.sleep(1)
                    left = await nodes.cli("cluster", "leave", "n1")  # one is decommissioned
                    assert left.returncode == 0, left.stderr.decode()
                    # (its drain may wait for calls in flight up to hypercorn's graceful timeout, 31 s;
                    # the log says what it waits for: event drain_waiting)
                    assert await nodes.wait_exit("n1", timeout=45) == 0
                    await trio.sleep(1)
                    nodes.kill("n2")  # one crashes and comes back
                    killed_at["n2"] = [time.time()]
                    await nodes.wait_exit("n2")
                    await trio.sleep(1)
                    await nodes.start("n2")
                    await nodes.wait_ready("n2")
                    await trio.sleep(1)
                    await trio.to_thread.run_sync(etcd.stop)  # etcd restarts
                    await trio.sleep(0.5)
                    await trio.to_thread.run_sync(etcd.start)
                    await trio.sleep(1)
                    proxy.cut()  # one is cut off from etcd past its lease
                    await trio.sleep(6)
                    proxy.heal()
                    await nodes.wait_ready("n2", "n3", "n4", timeout=30)
                    await trio.sleep(1.5)
                    stop.set()
                counts = history.counts()
                finals = await final_values([nodes.url(i) for i in ("n2", "n3", "n4")], names)
                await nodes.wait_settled("n2", {"n2", "n3", "n4"})
            finally:
                await nodes.close()
                outer.cancel_scope.cancel()
    assert counts["ok"] > 200, counts
    problems = check_counters(history, finals)
    assert problems == [], "\n".join(problems)
    events = parse_object_events([tmp_path / f"{i}.log" for i in ("n1", "n2", "n3", "n4")])
    assert {e.object for e in events} >= {object_hex("Counter", name) for name in names[:5]}
    assert check_single_writer(events, killed_at) == []
    moved = {e.object for e in events if e.kind == "opened" and e.node == "n4"}
    assert moved, "n4 took a share of the counters"


def _moving_name(prefix: str, cls: str, old: list[str], new: list[str], *, to: str) -> str:
    """A name of ``cls`` owned by ``old[0]`` under members ``old`` and by ``to`` under ``new``."""
    before = ClusterMap(tuple((n, "") for n in old))
    after = ClusterMap(tuple((n, "") for n in new))
    for i in range(100_000):
        key = object_hex(cls, f"{prefix}-{i}")
        if before.owner(key)[0] == old[0] and after.owner(key)[0] == to:
            return f"{prefix}-{i}"
    raise AssertionError("no such name")


async def test_a_moved_room_closes_its_sockets_with_4012_and_the_sdk_follows(tmp_path: Path) -> None:
    with running_etcd(tmp_path) as etcd:
        async with open_etcd_nodes(tmp_path, etcd.url, ["n1", "n2"]) as nodes:
            room = _moving_name("room", "ChatRoom", ["n1", "n2"], ["n1", "n2", "n3"], to="n3")
            counter = _moving_name("count", "Counter", ["n1", "n2"], ["n1", "n2", "n3"], to="n3")
            async with connect(nodes.url("n2"), timeout=10) as sdk:
                assert await sdk.call("Counter", counter, "increment") == 1
                epoch = sdk.cluster.epoch
                async with open_socket(nodes.url("n2"), f"/chat/{room}") as ws:  # relayed to n1
                    assert (await receive(ws))["type"] == "history"
                    await send_json(ws, {"user": "ann", "text": "before the move", "ts": 1})
                    assert (await receive(ws))["seq"] == 1
                    await nodes.start("n3")
                    assert await wait_closed(ws) == (4012, "object moved")
                async with open_socket(nodes.url("n1"), f"/chat/{room}") as ws:  # now relayed to n3
                    history = await receive(ws)
                    assert [m["text"] for m in history["messages"]] == ["before the move"]
                await nodes.wait_settled("n1", {"n1", "n2", "n3"})
                assert sdk.cluster.epoch > epoch  # the SDK adopted the new map from a Welcome
                assert {name for name, _ in sdk.cluster.nodes} == {"n1", "n2", "n3"}
                assert await sdk.call("Counter", counter, "increment") == 2  # the state moved with it
