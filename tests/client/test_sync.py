"""``client.sync``: the blocking facade, from plain threads (no trio in the test itself)."""

from __future__ import annotations

import threading

import pytest

from actors.errors import UnknownMethod
from client import RemoteError, Unreachable
from client.sync import connect
from server.rooms import Counter
from tests.server.nodes import Node


def test_the_sync_client_blocks_until_each_reply(node: Node, unique: str):
    with connect(node.url, timeout=10) as c:
        assert c.get(Counter, unique).increment(by=2) == 2
        assert c.get("Counter", unique).increment() == 3
        assert c.call("Counter", unique, "get") == 3
        with pytest.raises(RemoteError, match=r"^nope$"):
            c.call("Probe", unique, "fail", "nope")
        with pytest.raises(UnknownMethod):
            c.get("Counter", unique).missing()


def test_any_thread_may_call(node: Node, unique: str):
    with connect(node.url, timeout=10) as c:

        def work() -> None:
            for _ in range(25):
                c.call("Counter", unique, "increment")

        threads = [threading.Thread(target=work) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(20)
        assert c.call("Counter", unique, "get") == 100
        assert c.statistics().connections[0].calls_sent == 101


def test_connect_raises_unreachable_when_no_node_listens():
    opening = connect("http://127.0.0.1:9", timeout=0.5)
    with pytest.raises(Unreachable, match=r"^could not connect to http://127\.0\.0\.1:9 in time: "):
        opening.__enter__()
