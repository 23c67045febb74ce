"""A node dies under load: only its objects fail, fast, and nothing acknowledged is lost.

Real processes: three nodes, HTTP clients through the two survivors and an SDK client, while one
node is SIGKILLed and later restarted on the same port and data folder.
"""

from __future__ import annotations

import trio

from actors.errors import OwnerUnavailable
from client import ConnectionLost, connect
from tests.server.nodes import fetch

from .processes import open_cluster, wait_all_up
from .test_cluster import names_owned_by

#: the survivors' calls for the dead node's objects fail within this many seconds of its death
FAIL_FAST_BOUND = 4.0  # OWNER_WAIT_SECONDS (2 s), a redial backoff (0.5 s) and a busy machine


async def test_sigkill_fails_only_the_dead_nodes_objects_fast_and_loses_no_acknowledged_write(tmp_path):
    async with open_cluster(tmp_path, 3) as cluster:
        nodes = [cluster.nodes[i] for i in cluster.ids]
        doomed = names_owned_by(nodes, "n3", "Counter", "doomed", 3)
        safe = names_owned_by(nodes, "n1", "Counter", "safe", 2) + names_owned_by(
            nodes, "n2", "Counter", "safe", 2
        )
        acknowledged = {name: 0 for name in doomed + safe}
        unknown = {name: 0 for name in doomed + safe}
        outcomes: list[tuple[str, float, float, int]] = []  # (name, started, took, status)
        killed_at: list[float] = []
        stop = trio.Event()

        async def http_load(entry: str, names: list[str]) -> None:
            i = 0
            while not stop.is_set():
                name = names[i % len(names)]
                i += 1
                started = trio.current_time()
                reply = await fetch(cluster.url(entry), "POST", f"/counter/{name}/increment")
                outcomes.append((name, started, trio.current_time() - started, reply.status))
                if reply.status == 200:
                    acknowledged[name] += 1
                elif reply.status == 503:
                    assert reply.json()["error"]["type"] == "OwnerUnavailable"
                    assert reply.json()["error"]["node"] == "n3"
                    assert reply.headers["retry-after"] == "1"
                else:
                    assert reply.status == 502, reply.body  # OwnerLost: sent, outcome unknown
                    unknown[name] += 1
                await trio.sleep(0.01)

        sdk_errors: list[tuple[str, str, float]] = []

        async def sdk_load() -> None:
            async with connect(cluster.url("n1"), timeout=10) as client:
                i = 0
                while not stop.is_set():
                    name = (doomed + safe)[i % len(doomed + safe)]
                    i += 1
                    started = trio.current_time()
                    try:
                        await client.call("Counter", name, "increment")
                        acknowledged[name] += 1
                    except OwnerUnavailable as exc:
                        sdk_errors.append((name, exc.node, trio.current_time() - started))
                    except ConnectionLost:  # a call written to n3 just before it died
                        unknown[name] += 1
                    await trio.sleep(0.01)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(http_load, "n1", doomed + safe)
            nursery.start_soon(http_load, "n2", doomed + safe)
            nursery.start_soon(sdk_load)
            await trio.sleep(1.5)
            cluster.kill("n3")
            killed_at.append(trio.current_time())
            await trio.sleep(FAIL_FAST_BOUND + 2.0)
            stop.set()

        kill = killed_at[0]
        for name, started, took, status in outcomes:
            if name in safe:
                assert status == 200, (name, status)  # the other nodes' objects never failed
            elif status == 503:
                assert took < FAIL_FAST_BOUND  # never waited for its deadline (30 s)
                if started > kill + FAIL_FAST_BOUND:
                    assert took < 0.5  # and at once once the node is known down
        late = [o for o in outcomes if o[0] in doomed and o[1] > kill + FAIL_FAST_BOUND]
        assert late
        assert {status for _, _, _, status in late} == {503}
        assert sdk_errors
        for name, node, took in sdk_errors:
            assert (node, name in doomed) == ("n3", True)
            assert took < FAIL_FAST_BOUND

        seen = (await fetch(cluster.url("n1"), "GET", "/v1/cluster/nodes")).json()["nodes"]
        assert [(n["node"], n["up"], "error" in n) for n in seen] == [
            ("n1", True, False), ("n2", True, False), ("n3", False, True)
        ]  # fmt: skip
        listing = (await fetch(cluster.url("n2"), "GET", "/v1/objects?class=Counter")).json()
        assert [u["node"] for u in listing["unavailable"]] == ["n3"]  # named, not silently skipped
        await cluster.start("n3")
        await wait_all_up(list(cluster.nodes.values()))
        for name in doomed + safe:
            reply = await fetch(cluster.url("n1"), "GET", f"/counter/{name}")
            assert reply.status == 200, reply.body
            final = reply.json()["value"]
            assert acknowledged[name] <= final <= acknowledged[name] + unknown[name], name


async def test_a_node_refuses_to_start_with_a_membership_that_places_its_objects_elsewhere(tmp_path):
    """Objects never get a second, empty life: a changed cluster file that would move stored objects
    to another node stops the node at start (exit 2, one line), and the old file still works."""
    from tests.server.nodes import ENV

    from .processes import free_ports, node_command, write_cluster_file

    async with open_cluster(tmp_path, 2) as cluster:
        for i in range(40):
            assert (
                await fetch(cluster.url(f"n{1 + i % 2}"), "POST", f"/counter/c{i}/increment")
            ).status == 200
    grown = write_cluster_file(
        tmp_path / "grown.toml", {**cluster.ports, "n3": free_ports(1)[0]}
    )  # 40 names: some now land on n3
    for node_id in ("n1", "n2"):
        argv = node_command(tmp_path, node_id, cluster.ports[node_id], grown)
        done = await trio.run_process(
            argv, capture_stdout=True, capture_stderr=True, env=ENV, cwd=tmp_path, check=False
        )
        assert done.returncode == 2, done.stderr
        [line] = done.stderr.decode().strip().splitlines()[-1:]
        assert f"this node ({node_id}) stores" in line
        assert "on n3" in line
        assert done.stdout == b""  # it never listened
    async with open_cluster(tmp_path, 2) as again:  # the same ids (on new ports): the objects stay put
        for i in range(40):
            reply = await fetch(again.url(f"n{1 + i % 2}"), "GET", f"/counter/c{i}")
            assert reply.json() == {"value": 1}
