"""The liveness lease and its fence, against a real etcd (tests/cluster/etcd_server.py): real time,
short TTLs, every wait bounded."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import trio

from server.cluster.etcd import open_etcd
from server.cluster.liveness import LeaseSettings, Liveness

from .etcd_server import EtcdServer, running_etcd

SETTINGS = LeaseSettings(ttl=2, margin=0.8)  # fence 1.2 s after the last renewal sent; renew every 0.4 s


@pytest.fixture
def etcd_server(tmp_path: Path) -> Iterator[EtcdServer]:
    with running_etcd(tmp_path) as server:
        yield server


async def wait_until(check: Callable[[], bool], what: str, timeout: float = 10.0) -> float:
    """Poll ``check()`` until true; returns the trio time it first held (fails naming ``what``)."""
    with trio.fail_after(timeout):
        while not check():  # noqa: ASYNC110 (``writable`` turns with time, not with an event)
            await trio.sleep(0.02)
    return trio.current_time()


async def test_the_node_registers_under_a_lease_and_a_clean_stop_removes_it(etcd_server: EtcdServer):
    async with open_etcd(etcd_server.url, prefix="/t1/") as etcd:
        liveness = Liveness(etcd, "n1", SETTINGS)
        async with trio.open_nursery() as nursery:
            await nursery.start(liveness.run)
            assert liveness.writable
            key = await etcd.get("alive/n1")
            assert key is not None
            assert key.lease == liveness.lease
            await trio.sleep(SETTINGS.ttl * 1.5)  # renewals keep it past its TTL
            assert await etcd.get("alive/n1") is not None
            assert liveness.writable
            nursery.cancel_scope.cancel()
        assert await etcd.get("alive/n1") is None  # revoked at once, not after the TTL


async def test_a_node_cut_off_from_etcd_fences_itself_before_its_lease_can_lapse_then_resumes(
    etcd_server: EtcdServer,
):
    async with open_etcd(etcd_server.url, prefix="/t2/", timeout=0.5) as etcd:
        liveness = Liveness(etcd, "n1", SETTINGS)
        async with trio.open_nursery() as nursery:
            await nursery.start(liveness.run)
            paused_at = trio.current_time()
            etcd_server.pause()  # cut off: requests hang, then time out
            fenced_at = await wait_until(lambda: not liveness.writable, "the fence to fall")
            # it fell no later than ttl - margin after the pause (the last renewal sent was before it):
            # at least `margin` before etcd could have expired the lease
            # (0.5 s of slack for a busy machine's scheduling, still short of the TTL)
            assert fenced_at - paused_at <= SETTINGS.fence_after + 0.5 < SETTINGS.ttl
            assert not liveness.writable
            etcd_server.resume()
            lifted_at = await wait_until(lambda: liveness.writable, "writes to resume")
            assert lifted_at - fenced_at < 3.0
            await liveness.wait_writable()  # returns at once while writable
            nursery.cancel_scope.cancel()


async def test_a_lost_lease_is_replaced_and_the_key_comes_back(etcd_server: EtcdServer):
    async with open_etcd(etcd_server.url, prefix="/t3/") as etcd:
        liveness = Liveness(etcd, "n1", SETTINGS)
        async with trio.open_nursery() as nursery:
            await nursery.start(liveness.run)
            first = liveness.lease
            assert first is not None
            await etcd.revoke_lease(first)  # as if it had expired: the key is gone
            assert await etcd.get("alive/n1") is None
            await wait_until(lambda: liveness.lease not in (None, first), "a new lease")
            with trio.fail_after(5):
                while await etcd.get("alive/n1") is None:  # noqa: ASYNC110 (etcd is another process)
                    await trio.sleep(0.05)
            nursery.cancel_scope.cancel()


async def test_writes_stop_while_etcd_is_down_and_resume_after_it_restarts(etcd_server: EtcdServer):
    async with open_etcd(etcd_server.url, prefix="/t4/", timeout=0.5) as etcd:
        liveness = Liveness(etcd, "n1", SETTINGS)
        async with trio.open_nursery() as nursery:
            await nursery.start(liveness.run)
            await trio.to_thread.run_sync(etcd_server.kill)
            await wait_until(lambda: not liveness.writable, "the fence to fall")
            await trio.to_thread.run_sync(etcd_server.start)
            await wait_until(lambda: liveness.writable, "writes to resume", timeout=15)
            assert await etcd.get("alive/n1") is not None
            nursery.cancel_scope.cancel()


def test_settings_refuse_what_etcd_or_the_arithmetic_cannot_honour():
    with pytest.raises(ValueError, match="at least 2"):
        LeaseSettings(ttl=1, margin=0.5)
    with pytest.raises(ValueError, match="margin"):
        LeaseSettings(ttl=10, margin=10)
    assert LeaseSettings().fence_after == 7.0  # 10 s TTL, 3 s margin
