"""A send whose outcome is unknown survives a crash of the sender (``server/cluster/sent_log.py``).

The log itself is tested on real files; the crash case end to end with etcd and real nodes: an old
owner that crashed after the new owner stored an object, and that owns the object again when it comes
back, must not serve its older copy.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import trio

from server.cluster.sent_log import SENT_LOG_FILE, SentLog
from tests.server.nodes import fetch

from .etcd_nodes import open_etcd_nodes
from .etcd_server import running_etcd
from .history import object_hex
from .test_handoff import _moving_name, _value

A, B, C = ("a" * 64, "b" * 64, "c" * 64)


async def test_sends_stay_open_across_a_restart_until_their_outcome_is_known(tmp_path: Path) -> None:
    path = tmp_path / SENT_LOG_FILE
    sent = SentLog(path)
    await sent.sending("n2", [A, B])
    await sent.sending("n3", [C])
    await sent.done([A])
    assert SentLog(path).load() == {B: "n2", C: "n3"}  # what a restart finds
    await sent.done([B, C, "d" * 64])
    assert SentLog(path).load() == {}
    assert path.stat().st_size == 0  # emptied once nothing is open


async def test_a_torn_last_record_is_a_batch_that_never_left(tmp_path: Path) -> None:
    path = tmp_path / SENT_LOG_FILE
    await SentLog(path).sending("n2", [A])
    with path.open("a") as file:
        file.write('{"to":"n3","ids":["' + B[:20])  # a crash mid-append: the send waits for the fsync
    assert SentLog(path).load() == {A: "n2"}
    path.write_text('{"to":"n2"}\n{"to":"n2","ids":[]}\n')
    with pytest.raises(ValueError, match="line 1 is not a handoff record"):
        SentLog(path).load()


async def test_an_old_owner_back_from_a_crash_mid_handoff_serves_the_newer_copy(tmp_path: Path) -> None:
    """n1 owns X; n3 joins and takes X; n1 crashes with X's send unanswered (its disk as it was
    before the move, and its log naming the send); n3 leaves while n1 is down, so n1 owns X again when
    it comes back. It must take n3's newer copy, not serve its own."""
    name = _moving_name("crash", "Counter", ["n1", "n2"], ["n1", "n2", "n3"], to="n3")
    with running_etcd(tmp_path) as etcd:
        async with open_etcd_nodes(tmp_path, etcd.url, ["n1", "n2"]) as nodes:
            for _ in range(5):
                assert (await fetch(nodes.url("n1"), "POST", f"/counter/{name}/increment")).status == 200
            nodes.processes["n1"].terminate()  # a drain: n1 keeps its membership and its files
            assert await nodes.wait_exit("n1") == 0
            backup = tmp_path / "n1-before-the-move"
            shutil.copytree(tmp_path / "n1", backup)
            await nodes.start("n1")
            await nodes.start("n3")
            await nodes.wait_ready("n1", "n3")
            await nodes.wait_settled("n2", {"n1", "n2", "n3"})
            for _ in range(2):
                assert (await fetch(nodes.url("n3"), "POST", f"/counter/{name}/increment")).status == 200
            assert await _value(nodes, "n2", name) == 7

            nodes.kill("n1")  # n1's disk as if it crashed after n3 stored X, before n1 learned it
            await nodes.wait_exit("n1")
            shutil.rmtree(tmp_path / "n1")
            shutil.copytree(backup, tmp_path / "n1")
            key = object_hex("Counter", name)
            (tmp_path / "n1" / SENT_LOG_FILE).write_text(f'{{"to":"n3","ids":["{key}"]}}\n')

            left = await nodes.cli("cluster", "leave", "n3", "--wait", "0")  # X is n1's again
            assert left.returncode in (0, 5), left.stderr.decode()
            await nodes.start("n1")
            await nodes.wait_ready("n1")
            with trio.fail_after(30):  # n1 asks n3 first; n3 hands X back; n1 takes the newer copy
                while True:
                    if (await fetch(nodes.url("n1"), "GET", f"/counter/{name}")).status != 503:
                        break
                    await trio.sleep(0.1)
            assert await _value(nodes, "n1", name) == 7
            assert await _value(nodes, "n2", name) == 7
            assert await nodes.wait_exit("n3", timeout=60) == 0
            assert not (tmp_path / "n1" / SENT_LOG_FILE).read_text()
