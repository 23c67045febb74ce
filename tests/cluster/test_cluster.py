"""Three real node processes as one server: routing, single writer, rooms, the SDK, admin, metrics.

Every test goes through the public interfaces (HTTP, WebSockets, the SDK) of real processes on
127.0.0.1, and checks what each client saw, not only final values.
"""

from __future__ import annotations

import functools
import json
import random
from collections import Counter as Tally
from pathlib import Path

import trio

from actors import ObjectId
from actors.placement import ClusterMap
from client import connect
from tests.server.nodes import Client, Node, fetch, in_thread
from tests.server.sockets import open_socket, receive, scrape, send_json, value, wait_closed

IDS = ("n1", "n2", "n3")


@functools.lru_cache(maxsize=8)
def _cluster_map(urls: tuple[str, ...]) -> ClusterMap:
    return ClusterMap(tuple(zip(IDS, urls, strict=True)), 1)


def owner_of(nodes: list[Node], cls: str, name: str) -> str:
    """The owner as every node computes it (placement over the ids the cluster map lists)."""
    return _cluster_map(tuple(node.url for node in nodes)).owner(ObjectId.from_name(cls, name).hex)[0]


def names_owned_by(nodes: list[Node], owner: str, cls: str, prefix: str, count: int) -> list[str]:
    names = (f"{prefix}-{i}" for i in range(10_000))
    return [n for n in names if owner_of(nodes, cls, n) == owner][:count]


async def forwarded_total(nodes: list[Node]) -> float:
    total = 0.0
    for node in nodes:
        text = await scrape(node)
        for line in text.splitlines():
            if line.startswith("actors_peer_forwarded_calls_total{"):
                total += float(line.rsplit(" ", 1)[1])
    return total


async def test_every_node_serves_the_same_cluster_map(cluster: list[Node]):
    for node_id, node in zip(IDS, cluster, strict=True):
        body = (await fetch(node.url, "GET", "/v1/cluster")).json()
        assert body["self"] == node_id
        assert body["epoch"] == 1
        assert body["nodes"] == [
            {"node": i, "url": n.url, "up": True} for i, n in zip(IDS, cluster, strict=True)
        ]
        assert body["placement"]["function"]


async def test_concurrent_increments_through_every_node_add_up_and_each_value_is_seen_once(
    cluster: list[Node], unique: str
):
    counters = [f"{unique}-{i}" for i in range(4)]
    per_client = 40

    def drive(node: Node, seed: int) -> list[tuple[str, int]]:
        rng, client, seen = random.Random(seed), Client(node.url), []
        try:
            for _ in range(per_client):
                name = rng.choice(counters)
                reply = client.request("POST", f"/counter/{name}/increment")
                assert reply.status == 200, reply.body
                seen.append((name, reply.json()["value"]))
        finally:
            client.close()
        return seen

    histories: list[list[tuple[str, int]]] = []

    async def one(node: Node, seed: int) -> None:
        histories.append(await in_thread(drive, node, seed, timeout=60))

    async with trio.open_nursery() as nursery:
        for seed, node in enumerate(cluster * 2):  # two clients per node
            nursery.start_soon(one, node, seed)
    by_counter: dict[str, list[int]] = {name: [] for name in counters}
    for history in histories:
        for name, seen in history:
            by_counter[name].append(seen)
        for name in counters:  # one client's own increments of one counter only grow
            mine = [v for n, v in history if n == name]
            assert mine == sorted(mine)
    for name, values in by_counter.items():
        assert sorted(values) == list(range(1, len(values) + 1)), name  # none doubled, none lost
        for node in cluster:
            assert (await fetch(node.url, "GET", f"/counter/{name}")).json() == {"value": len(values)}
    assert sum(len(v) for v in by_counter.values()) == per_client * 6


async def test_each_objects_file_exists_on_exactly_one_node_its_owner(cluster: list[Node], unique: str):
    names = [name for owner in IDS for name in names_owned_by(cluster, owner, "Counter", unique, 4)]
    for i, name in enumerate(names):
        entry = cluster[i % 3]
        assert (await fetch(entry.url, "POST", f"/counter/{name}/increment")).status == 200
    base = Path(cluster[0].log_path).parent
    for name in names:
        hex_id = ObjectId.from_name("Counter", name).hex
        holders = [node_id for node_id in IDS if list((base / node_id).rglob(f"{hex_id}.sqlite3*"))]
        assert holders == [owner_of(cluster, "Counter", name)], name
    owners = {owner_of(cluster, "Counter", n) for n in names}
    assert owners == set(IDS)  # the names spread over all three (chosen so)


async def test_chat_members_on_different_nodes_get_every_message_once_in_one_seq_order(
    cluster: list[Node], unique: str
):
    room, per_member = f"room-{unique}", 5
    received: dict[int, list[dict[str, object]]] = {}

    async def member(index: int, node: Node, ready: trio.Event, go: trio.Event) -> None:
        async with open_socket(node, f"/chat/{room}") as ws:
            assert (await receive(ws))["type"] == "history"
            ready.set()
            await go.wait()
            for k in range(per_member):
                await send_json(ws, {"user": f"u{index}", "text": f"m{k}", "ts": 0})
            frames = []
            while len(frames) < per_member * 3:
                frames.append(await receive(ws))
            received[index] = frames

    go = trio.Event()
    readies = [trio.Event() for _ in cluster]
    async with trio.open_nursery() as nursery:
        for index, node in enumerate(cluster):
            nursery.start_soon(member, index, node, readies[index], go)
        for ready in readies:
            await ready.wait()
        go.set()
    orders = {index: [(f["seq"], f["user"], f["text"]) for f in frames] for index, frames in received.items()}
    first = orders[0]
    assert [seq for seq, _, _ in first] == list(range(1, per_member * 3 + 1))
    assert all(order == first for order in orders.values())  # one order, seen by all
    for index in range(3):  # each member's own messages appear once each, in the order sent
        assert [text for _, user, text in first if user == f"u{index}"] == [
            f"m{k}" for k in range(per_member)
        ]


async def test_a_socket_reaching_a_non_owner_is_relayed_with_close_codes_passed_through(
    cluster: list[Node], unique: str
):
    [name] = names_owned_by(cluster, "n3", "SocketProbe", f"refuse-{unique}", 1)
    async with open_socket(cluster[0], f"/v1/objects/SocketProbe/{name}/ws") as ws:
        assert await wait_closed(ws) == (4001, "go away")  # the owner's close, through the relay
    [name] = names_owned_by(cluster, "n2", "SocketProbe", f"echo-{unique}", 1)
    async with open_socket(cluster[0], f"/v1/objects/SocketProbe/{name}/ws?x=1") as ws:
        hello = await receive(ws)
        assert hello == {"type": "hello", "binary": False, "params": {"x": "1"}}
        await ws.send_message(b"\xa1aa\x01")  # CBOR {"a": 1}: binary passes as binary
        echo = await receive(ws)
        assert echo["data"] == {"a": 1}
    text = await scrape(cluster[0])
    assert value(text, "actors_peer_relayed_websockets_total", peer="n2") >= 1


async def test_the_sdk_calls_owners_directly_and_the_nodes_forward_none_of_its_calls(
    cluster: list[Node], unique: str
):
    before = await forwarded_total(cluster)
    async with connect(cluster[0].url) as client:
        assert [name for name, _ in client.cluster.nodes] == list(IDS)
        for i in range(60):
            assert await client.call("Counter", f"{unique}-{i}", "increment") == 1
        for i in range(60):
            assert await client.call("Counter", f"{unique}-{i}", "get") == 1
    assert await forwarded_total(cluster) == before
    # the same calls over HTTP through one node are forwarded (about two thirds of them)
    for i in range(30):
        assert (await fetch(cluster[0].url, "GET", f"/counter/{unique}-{i}")).json() == {"value": 1}
    assert await forwarded_total(cluster) > before


async def test_listing_from_any_node_covers_the_cluster_in_id_order_across_pages(
    cluster: list[Node], unique: str
):
    prefix = f"list-{unique}"
    names = [name for owner in IDS for name in names_owned_by(cluster, owner, "Counter", prefix, 3)]
    for i, name in enumerate(names):  # three objects on each node, written through every node
        await fetch(cluster[i % 3].url, "POST", f"/counter/{name}/increment")
    for node in cluster:
        seen, cursor = [], None
        while True:
            query = f"/v1/objects?class=Counter&prefix={prefix}&limit=2" + (
                f"&cursor={cursor}" if cursor else ""
            )
            body = (await fetch(node.url, "GET", query)).json()
            assert body["unavailable"] == []
            seen += body["objects"]
            cursor = body["cursor"]
            if cursor is None:
                break
        assert [o["name"] for o in seen] == sorted(names)  # the listing's order: class, name, id
        assert [o["node"] for o in seen] == [owner_of(cluster, "Counter", o["name"]) for o in seen]
        assert Tally(o["node"] for o in seen) == {"n1": 3, "n2": 3, "n3": 3}


async def test_export_redirects_to_the_owner_and_delete_runs_there(cluster: list[Node], unique: str):
    [name] = names_owned_by(cluster, "n2", "Counter", unique, 1)
    await fetch(cluster[0].url, "POST", f"/counter/{name}/increment")
    reply = await fetch(cluster[0].url, "GET", f"/v1/objects/Counter/{name}/export")
    assert reply.status == 307
    location = reply.headers["location"]
    assert location == f"{cluster[1].url}/v1/objects/Counter/{name}/export"
    exported = await fetch(cluster[1].url, "GET", location.removeprefix(cluster[1].url))
    assert exported.status == 200
    assert exported.body.startswith(b"SQLite format 3\0")
    assert (await fetch(cluster[2].url, "DELETE", f"/v1/objects/Counter/{name}")).json() == {"deleted": True}
    assert (await fetch(cluster[0].url, "GET", f"/counter/{name}")).json() == {"value": 0}


async def test_a_connection_to_the_peer_route_without_the_secret_runs_nothing(
    cluster: list[Node], unique: str
):
    import contextlib

    import cbor2
    from trio_websocket import ConnectionClosed

    from actors import wire

    [name] = names_owned_by(cluster, "n1", "Counter", unique, 1)
    async with open_socket(cluster[0], "/v1/peer") as ws:
        challenge = cbor2.loads(await ws.get_message())
        assert (challenge["t"], challenge["node"]) == ("challenge", "n1")
        call = wire.encode([wire.Call(1, "Counter", name, "increment", [], {})])
        await ws.send_message(call)  # a call instead of the proof
        code, _ = await wait_closed(ws)
    assert code == 4401
    async with open_socket(cluster[0], "/v1/peer") as ws:
        challenge = cbor2.loads(await ws.get_message())
        forged = {"t": "auth", "node": "n2", "epoch": 1, "digest": "x", "nonce": b"n" * 32, "mac": b"m" * 32}
        await ws.send_message(cbor2.dumps(forged))
        with contextlib.suppress(ConnectionClosed):  # the node may have closed already: fine too
            await ws.send_message(call)
        code, _ = await wait_closed(ws)
    assert code == 4401
    assert (await fetch(cluster[0].url, "GET", f"/counter/{name}")).json() == {"value": 0}
    assert "peer link refused" in cluster[0].log()
    text = await scrape(cluster[0])
    assert value(text, "actors_peer_links_refused_total") >= 2


async def test_metrics_show_every_peer_link_up(cluster: list[Node]):
    for node_id, node in zip(IDS, cluster, strict=True):
        text = await scrape(node)
        for peer in IDS:
            if peer != node_id:
                assert value(text, "actors_peer_up", peer=peer) == 1.0
        assert json.loads((await fetch(node.url, "GET", "/readyz")).body) == {"status": "ready"}


async def test_actors_objects_lists_the_cluster_from_any_node_and_export_follows_the_owner(
    cluster: list[Node], unique: str, tmp_path: Path
):
    import subprocess
    import sys

    from tests.server.nodes import ENV

    names = sorted(
        name for owner in IDS for name in names_owned_by(cluster, owner, "Counter", f"cli-{unique}", 2)
    )
    for i, name in enumerate(names):
        await fetch(cluster[i % 3].url, "POST", f"/counter/{name}/increment")

    def cli(*args: str) -> subprocess.CompletedProcess[bytes]:
        argv = [sys.executable, "-m", "server.cli", "objects", *args, "--url", cluster[2].url]
        return subprocess.run(argv, capture_output=True, env=ENV, cwd=tmp_path, timeout=60, check=False)

    listed = await in_thread(cli, "list", "--prefix", f"cli-{unique}", timeout=60)
    assert (listed.returncode, listed.stderr) == (0, b"")
    rows = [line.split("\t") for line in listed.stdout.decode().splitlines()]
    assert [(row[1], row[3]) for row in rows] == [(n, owner_of(cluster, "Counter", n)) for n in names]
    remote = next(n for n in names if owner_of(cluster, "Counter", n) != "n3")
    exported = await in_thread(
        cli, "export", "Counter", remote, "-o", str(tmp_path / "x.sqlite3"), timeout=60
    )
    assert exported.returncode == 0, exported.stderr
    assert (tmp_path / "x.sqlite3").read_bytes().startswith(b"SQLite format 3\0")


async def test_actors_cluster_nodes_lists_every_member_with_its_objects(
    cluster: list[Node], unique: str, tmp_path: Path
):
    import subprocess
    import sys

    from tests.server.nodes import ENV

    before = (await fetch(cluster[0].url, "GET", "/v1/cluster/nodes")).json()
    [name] = names_owned_by(cluster, "n2", "Counter", f"count-{unique}", 1)
    await fetch(cluster[0].url, "POST", f"/counter/{name}/increment")
    after = (await fetch(cluster[2].url, "GET", "/v1/cluster/nodes")).json()
    assert (after["epoch"], after["self"]) == (1, "n3")
    assert [(n["node"], n["up"]) for n in after["nodes"]] == [(i, True) for i in IDS]
    grew = {
        n["node"]: n["objects"] - b["objects"] for n, b in zip(after["nodes"], before["nodes"], strict=True)
    }
    assert grew["n2"] >= 1  # other tests of the module may add objects at the same time; none remove

    def cli() -> subprocess.CompletedProcess[bytes]:
        argv = [sys.executable, "-m", "server.cli", "cluster", "nodes", "--url", cluster[1].url]
        return subprocess.run(argv, capture_output=True, env=ENV, cwd=tmp_path, timeout=60, check=False)

    done = await in_thread(cli, timeout=60)
    assert (done.returncode, done.stderr) == (0, b"")
    *rows, epoch = [line.split("\t") for line in done.stdout.decode().splitlines()]
    assert [(row[0], row[1], row[2]) for row in rows] == [
        (i, n.url, "up") for i, n in zip(IDS, cluster, strict=True)
    ]
    assert all(row[3].isdigit() and row[4].isdigit() for row in rows)
    assert epoch == ["epoch", "1"]


async def test_a_node_with_a_wrong_secret_is_refused_and_logged_on_both_sides(
    cluster: list[Node], tmp_path: Path
):
    from tests.server.nodes import open_node

    from .processes import free_ports, write_cluster_file

    [port] = free_ports(1)
    ports = {i: int(n.url.rsplit(":", 1)[1]) for i, n in zip(IDS, cluster, strict=True)} | {"n3": port}
    impostor_file = write_cluster_file(
        tmp_path / "impostor.toml", ports, secret="not-the-cluster-secret-0000"
    )
    async with open_node(
        tmp_path / "impostor", "--cluster", str(impostor_file), "--node-id", "n3", "--port", str(port)
    ) as impostor:
        with trio.fail_after(10):
            while "'n3' could not prove the cluster secret" not in cluster[0].log():  # noqa: ASYNC110
                await trio.sleep(0.1)
        assert (await fetch(impostor.url, "GET", "/readyz")).status == 503  # never reached a peer
        body = (await fetch(impostor.url, "GET", "/v1/cluster")).json()
        assert [n["up"] for n in body["nodes"] if n["node"] != "n3"] == [False, False]
    assert "peer link refused" in impostor.log()
    assert "remote=127.0.0.1:" in cluster[0].log()  # the refusal names where it came from
