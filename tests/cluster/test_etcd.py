"""``server.cluster.etcd`` against a real etcd (``etcd_server.py``): Debian's etcd 3.4 on 127.0.0.1.

Most tests share one etcd and keep apart by a prefix of their own; tests that stop, kill or pause
etcd start their own. Leases run on etcd's clock, not trio's, so the lease tests wait in real time
(a 2 s TTL, every wait bounded) and assert the bounds etcd promises, not exact durations.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
import trio

from server.cluster.etcd import (
    Etcd,
    EtcdError,
    EtcdUnavailable,
    KeyValue,
    Watch,
    WatchCompacted,
    WatchEvent,
    _range_end,
    open_etcd,
)

from .etcd_server import EtcdServer, running_etcd
from .processes import free_ports

TIMEOUT = 5.0
#: the timeout of the clients of a hung or absent etcd
SHORT = 0.3
TTL = 2


@pytest.fixture(scope="module")
def shared_etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdServer]:
    with running_etcd(tmp_path_factory.mktemp("etcd")) as server:
        yield server


@pytest.fixture
def own_etcd(tmp_path: Path) -> Iterator[EtcdServer]:
    with running_etcd(tmp_path) as server:
        yield server


@pytest.fixture
async def etcd(shared_etcd: EtcdServer) -> AsyncIterator[Etcd]:
    async with open_etcd(shared_etcd.url, prefix=f"/test-{uuid.uuid4().hex}/", timeout=TIMEOUT) as client:
        yield client


#### Keys and revisions


async def test_values_round_trip_as_bytes_under_the_client_prefix(
    etcd: Etcd, shared_etcd: EtcdServer
) -> None:
    binary = bytes(range(256))
    revision = await etcd.put("a/1", binary)
    await etcd.put("a/2", b"")
    last = await etcd.put("b", b"x")
    async with open_etcd(shared_etcd.url, prefix="/elsewhere/") as other:
        await other.put("a/3", b"not under the test's prefix")

    assert await etcd.get("a/1") == KeyValue("a/1", binary, revision, revision, version=1, lease=0)
    assert await etcd.get("a/3") is None
    values, snapshot = await etcd.get_prefix("a/")
    assert [(kv.key, kv.value) for kv in values] == [("a/1", binary), ("a/2", b"")]
    assert snapshot >= last
    everything, _ = await etcd.get_prefix()
    assert [kv.key for kv in everything] == ["a/1", "a/2", "b"]


async def test_every_write_gets_a_higher_revision(etcd: Etcd) -> None:
    created = await etcd.put("k", b"1")
    changed = await etcd.put("k", b"2")
    assert changed > created
    assert await etcd.get("k") == KeyValue("k", b"2", created, changed, version=2, lease=0)
    deleted = await etcd.delete("k")
    assert deleted > changed
    assert await etcd.get("k") is None
    assert await etcd.delete("k") == deleted  # nothing to delete: no write


async def test_put_if_writes_only_over_the_expected_revision_or_absence(etcd: Etcd) -> None:
    assert (await etcd.put_if("k", b"1", expected_mod_revision=123))[0] is False
    succeeded, first = await etcd.put_if("k", b"1", expected_mod_revision=None)
    assert succeeded
    assert await etcd.put_if("k", b"x", expected_mod_revision=0) == (False, first)
    assert await etcd.put_if("k", b"x", expected_mod_revision=first - 1) == (False, first)
    succeeded, second = await etcd.put_if("k", b"2", expected_mod_revision=first)
    assert succeeded
    assert second > first
    assert (await etcd.put_if("k", b"x", expected_mod_revision=first))[0] is False
    assert await etcd.get("k") == KeyValue("k", b"2", first, second, version=2, lease=0)


async def test_of_concurrent_put_if_with_one_expectation_exactly_one_succeeds(etcd: Etcd) -> None:
    expected = await etcd.put("k", b"start")
    outcomes: list[bool] = []

    async def attempt(n: int) -> None:
        succeeded, _ = await etcd.put_if("k", str(n).encode(), expected_mod_revision=expected)
        outcomes.append(succeeded)

    async with trio.open_nursery() as nursery:
        for n in range(10):
            nursery.start_soon(attempt, n)
    assert sorted(outcomes) == [False] * 9 + [True]


async def test_a_url_that_is_not_the_gateway_gives_etcd_error(shared_etcd: EtcdServer) -> None:
    async with open_etcd(f"{shared_etcd.url}/not-etcd") as etcd:
        with pytest.raises(EtcdError, match=r"^HTTP 404: b'404 page not found\\n'$"):
            await etcd.get("k")


def test_the_range_of_a_prefix_ends_at_the_next_prefix() -> None:
    assert _range_end(b"/actors/") == b"/actors0"
    assert _range_end(b"a\xff\xff") == b"b"
    assert _range_end(b"\xff") == b"\0"


#### Leases


async def test_a_leased_key_goes_with_its_revoked_lease(etcd: Etcd) -> None:
    lease = await etcd.grant_lease(TTL)
    revision = await etcd.put("k", b"v", lease=lease)
    assert await etcd.get("k") == KeyValue("k", b"v", revision, revision, version=1, lease=lease)
    await etcd.revoke_lease(lease)
    assert await etcd.get("k") is None
    assert await etcd.keep_alive_once(lease) == 0
    await etcd.revoke_lease(lease)  # already gone: no error
    with pytest.raises(EtcdError, match=r"^etcdserver: requested lease not found$") as raised:
        await etcd.put("k", b"v", lease=lease)
    assert raised.value.code == 5


async def test_etcd_raises_a_ttl_below_its_minimum(etcd: Etcd) -> None:
    lease = await etcd.grant_lease(1)
    assert await etcd.keep_alive_once(lease) == 2  # 1.5 election timeouts of 1 s, rounded up
    await etcd.revoke_lease(lease)


async def test_keep_alives_keep_a_lease_past_its_ttl_and_it_expires_ttl_after_the_last(etcd: Etcd) -> None:
    lease = await etcd.grant_lease(TTL)
    await etcd.put("k", b"v", lease=lease)
    start = trio.current_time()
    while trio.current_time() - start < 1.5 * TTL:
        sent = trio.current_time()
        assert await etcd.keep_alive_once(lease) == TTL
        await trio.sleep(TTL / 4)
    assert await etcd.get("k") is not None

    with trio.fail_after(TTL + 2):
        while True:
            if await etcd.get("k") is None:
                break
            await trio.sleep(0.05)
    gone = trio.current_time()
    assert TTL <= gone - sent < TTL + 1.5  # never before the TTL; etcd revokes every 0.5 s
    assert await etcd.keep_alive_once(lease) == 0


#### Watches


def changes(events: list[WatchEvent]) -> list[tuple[str, str, bytes]]:
    return [(event.type.value, event.key, event.value) for event in events]


async def read_into(events: list[WatchEvent], watch: Watch) -> None:
    async for event in watch:
        events.append(event)


async def test_a_watch_sees_puts_and_deletes_in_order_from_its_start_revision(etcd: Etcd) -> None:
    await etcd.put("w/before", b"0")
    revisions = [
        await etcd.put("w/a", b"1"),
        await etcd.put("w/b", b"2"),
        await etcd.delete("w/a"),
    ]
    await etcd.put("outside", b"-")
    revisions.append(await etcd.put("w/b", b"3"))
    with trio.fail_after(TIMEOUT):
        async with etcd.open_watch("w/", start_revision=revisions[0]) as watch:
            events = [await anext(watch) for _ in range(4)]
            revisions.append(await etcd.put("w/c", b"4"))
            events.append(await anext(watch))
    assert changes(events) == [
        ("put", "w/a", b"1"),
        ("put", "w/b", b"2"),
        ("delete", "w/a", b""),
        ("put", "w/b", b"3"),
        ("put", "w/c", b"4"),
    ]
    assert [event.mod_revision for event in events] == revisions


async def test_a_watch_from_compacted_history_raises_watch_compacted(
    etcd: Etcd, shared_etcd: EtcdServer
) -> None:
    first = await etcd.put("k", b"1")
    latest = await etcd.put("k", b"2")
    async with httpx.AsyncClient(trust_env=False) as http:
        reply = await http.post(f"{shared_etcd.url}/v3/kv/compaction", json={"revision": str(latest)})
        assert reply.status_code == 200
    with trio.fail_after(TIMEOUT):
        async with etcd.open_watch("", start_revision=first) as watch:
            for _ in range(2):  # and again: the watch stays failed
                with pytest.raises(WatchCompacted) as raised:
                    await anext(watch)
                assert raised.value.compact_revision == latest
        # The way back: read the state, then watch from just after it.
        values, revision = await etcd.get_prefix()
        assert [(kv.key, kv.value) for kv in values] == [("k", b"2")]
        async with etcd.open_watch("", start_revision=revision + 1) as watch:
            await etcd.put("k", b"3")
            assert changes([await anext(watch)]) == [("put", "k", b"3")]


async def test_a_watch_resumed_after_an_etcd_crash_from_the_last_revision_plus_one_misses_nothing(
    own_etcd: EtcdServer,
) -> None:
    seen: list[WatchEvent] = []
    with trio.fail_after(20):
        async with open_etcd(own_etcd.url, timeout=TIMEOUT) as etcd:
            start = await etcd.put("k/0", b"0")
            for n in range(1, 4):
                await etcd.put(f"k/{n}", str(n).encode())
            async with etcd.open_watch("k/", start_revision=start) as watch:
                seen.append(await anext(watch))  # the rest are on the way, unread
                await trio.to_thread.run_sync(own_etcd.kill)
                with pytest.raises(EtcdUnavailable):
                    await read_into(seen, watch)

            await trio.to_thread.run_sync(own_etcd.start)
            for n in range(4, 6):
                await etcd.put(f"k/{n}", str(n).encode())
            async with etcd.open_watch("k/", start_revision=seen[-1].mod_revision + 1) as watch:
                async for event in watch:
                    seen.append(event)
                    if event.key == "k/5":
                        break
    assert changes(seen) == [("put", f"k/{n}", str(n).encode()) for n in range(6)]
    assert [event.mod_revision for event in seen] == list(range(start, start + 6))


@pytest.mark.parametrize("how", ["kill", "stop"])
async def test_a_waiting_watch_raises_etcd_unavailable_when_etcd_goes_away(
    own_etcd: EtcdServer, how: str
) -> None:
    async with open_etcd(own_etcd.url, timeout=TIMEOUT) as etcd:
        revision = await etcd.put("k", b"v")
        async with etcd.open_watch("", start_revision=revision + 1) as watch:
            with trio.fail_after(TIMEOUT):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(trio.to_thread.run_sync, getattr(own_etcd, how))
                    with pytest.raises(EtcdUnavailable, match=r"^watch: etcd "):
                        await anext(watch)
            with pytest.raises(EtcdUnavailable):  # and again
                await anext(watch)


async def test_a_cancelled_wait_ends_the_watch(etcd: Etcd) -> None:
    async with etcd.open_watch("", start_revision=await etcd.put("k", b"v") + 1) as watch:
        with trio.move_on_after(0.1):
            await anext(watch)
        with pytest.raises(EtcdUnavailable, match=r"^watch: a wait for its next event was cancelled"):
            await anext(watch)


#### etcd down or hung


async def test_calls_to_an_etcd_that_is_not_there_raise_etcd_unavailable_at_once() -> None:
    (port,) = free_ports(1)
    async with open_etcd(f"http://127.0.0.1:{port}", timeout=TIMEOUT) as etcd:
        with trio.fail_after(1):
            with pytest.raises(
                EtcdUnavailable, match=r"^kv/range: etcd at http://127\.0\.0\.1:\d+: ConnectError"
            ):
                await etcd.get("k")
            with pytest.raises(EtcdUnavailable, match=r"^watch: etcd at .*ConnectError"):
                async with etcd.open_watch("", start_revision=1):
                    pass


async def test_every_call_to_a_hung_etcd_raises_etcd_unavailable_within_the_timeout(
    own_etcd: EtcdServer,
) -> None:
    async with open_etcd(own_etcd.url, timeout=SHORT) as etcd:
        lease = await etcd.grant_lease(TTL)
        own_etcd.pause()

        async def open_watch() -> None:
            async with etcd.open_watch("", start_revision=1):
                pass

        calls = {
            "kv/range": lambda: etcd.get("k"),
            "kv/put": lambda: etcd.put("k", b"v"),
            "kv/deleterange": lambda: etcd.delete("k"),
            "kv/txn": lambda: etcd.put_if("k", b"v", expected_mod_revision=None),
            "lease/grant": lambda: etcd.grant_lease(TTL),
            "lease/keepalive": lambda: etcd.keep_alive_once(lease),
            "lease/revoke": lambda: etcd.revoke_lease(lease),
            "watch": open_watch,
        }
        for name, call in calls.items():
            start = trio.current_time()
            with pytest.raises(
                EtcdUnavailable, match=rf"^{name}: no answer from etcd at .* within {SHORT} s$"
            ):
                await call()
            assert SHORT <= trio.current_time() - start < SHORT + 0.2, name
        with pytest.raises(EtcdUnavailable):
            await etcd.get_prefix()


async def test_txn_writes_and_deletes_several_keys_in_one_revision_only_if_every_compare_holds(etcd: Etcd):
    first = await etcd.put("a", b"1")
    await etcd.put("gone", b"x")
    assert await etcd.txn({"a": first, "b": 1}, put={"c": b"3"}) == (False, first + 1)
    assert await etcd.get("c") is None
    succeeded, revision = await etcd.txn(
        {"a": first, "b": 0}, put={"a": b"2", "b": b"2"}, delete=["gone", "x"]
    )
    assert succeeded
    values, _ = await etcd.get_prefix()
    assert [(kv.key, kv.value, kv.mod_revision) for kv in values] == [
        ("a", b"2", revision),
        ("b", b"2", revision),
    ]
