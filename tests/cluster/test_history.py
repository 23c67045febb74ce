"""The history checkers catch every violation they name (hand-made histories), pass correct ones, and
the load generator records a real node's calls so that they pass."""

from __future__ import annotations

import json
import time
from functools import partial
from pathlib import Path

import httpx
import pytest
import trio

from actors import ObjectId
from actors.errors import CallTimeout, InvalidArgument, ObjectReset, OwnerLost, OwnerUnavailable
from client import ConnectionLost, ReplyTimeout, Unreachable
from server.rooms import Counter
from tests.server.nodes import open_node

from .history import (
    MAX_REPORTED,
    History,
    ObjectEvent,
    Op,
    Outcome,
    check_counters,
    check_single_writer,
    object_hex,
    parse_object_events,
)
from .load import classify_exception, classify_reply, final_values, run_load
from .processes import open_cluster

OK, FAILED, UNKNOWN = Outcome.OK, Outcome.FAILED, Outcome.UNKNOWN


def inc(client: str, start: float, end: float, value: int | None, outcome: Outcome = OK) -> Op:
    return Op(client, "c", "increment", start, end, outcome, value)


def read(client: str, start: float, end: float, value: int) -> Op:
    return Op(client, "c", "read", start, end, OK, value)


#### check_counters


def test_a_sequential_history_with_failures_and_unknowns_passes() -> None:
    ops = [
        inc("a", 0, 1, 1),
        inc("b", 0.5, 1.5, 2),  # concurrent with a's: either order
        inc("a", 2, 3, None, FAILED),
        inc("b", 2, 3, None, UNKNOWN),  # it ran: the final value is 4
        read("a", 4, 5, 3),
        inc("a", 6, 7, 4),
        read("b", 6.5, 8, 4),
    ]
    assert check_counters(History(ops), {"c": 4}) == []
    assert check_counters(ops[:3], {"c": 2}) == []  # a plain list of ops works too


def test_an_unknown_increment_that_did_not_run_passes() -> None:
    assert check_counters([inc("a", 0, 1, 1), inc("a", 2, 3, None, UNKNOWN)], {"c": 1}) == []


def test_a_doubled_value_is_a_violation() -> None:
    problems = check_counters([inc("a", 0, 1, 1), inc("b", 0, 1, 1)], {"c": 2})
    assert len(problems) == 1
    assert problems[0].startswith("c: value 1 returned by 2 acknowledged increments: a increment")


def test_a_lost_increment_is_a_violation() -> None:
    problems = check_counters([inc("a", 0, 1, 1), inc("b", 0, 1, 2), inc("a", 2, 3, 3)], {"c": 2})
    assert "c: lost writes: final value 2 < 3 acknowledged increments" in problems
    assert any(p.startswith("c: returned 3 above the final value 2") for p in problems)


def test_an_invented_increment_is_a_violation() -> None:
    ops = [inc("a", 0, 1, 1), inc("a", 2, 3, None, FAILED), inc("a", 4, 5, None, UNKNOWN)]
    assert check_counters(ops, {"c": 3}) == [
        "c: invented writes: final value 3 > 1 acknowledged + 1 unknown increments"
    ]


def test_a_value_above_the_final_value_is_a_violation() -> None:
    problems = check_counters([inc("a", 0, 1, 1), read("b", 2, 3, 5)], {"c": 1})
    assert problems == ["c: returned 5 above the final value 1: b read [2.000, 3.000] -> 5"]


def test_a_read_that_goes_backwards_for_one_client_is_a_violation() -> None:
    ops = [inc("b", 0, 1, 1), inc("b", 0, 1.5, 2), read("a", 2, 3, 2), read("a", 4, 5, 1)]
    problems = check_counters(ops, {"c": 2})
    assert problems == [
        "c: read went backwards: a read [4.000, 5.000] -> 1 started after the same client's"
        " a read [2.000, 3.000] -> 2 completed"
    ]


def test_a_stale_read_after_another_clients_acknowledged_increment_is_a_violation() -> None:
    ops = [inc("a", 0, 1, 1), inc("a", 2, 3, 2), read("b", 3.5, 4, 1)]
    problems = check_counters(ops, {"c": 2})
    assert len(problems) == 1
    assert problems[0].startswith("c: read went backwards: b read [3.500, 4.000] -> 1 started after")
    assert "another client's a increment [2.000, 3.000] -> 2" in problems[0]


def test_a_read_concurrent_with_an_increment_may_see_the_old_value() -> None:
    ops = [inc("a", 0, 1, 1), inc("a", 2, 3, 2), read("b", 2.5, 4, 1)]
    assert check_counters(ops, {"c": 2}) == []


def test_a_clients_increments_that_do_not_increase_are_a_violation() -> None:
    ops = [inc("a", 0, 1, 2), inc("b", 0, 1.5, 1), inc("a", 2, 3, 1)]
    problems = check_counters(ops, {"c": 2})
    assert any(p.startswith("c: value 1 returned by 2") for p in problems)
    assert any(
        p.startswith("c: increment did not exceed an earlier value: a increment [2.000, 3.000] -> 1")
        for p in problems
    )


def test_a_counter_without_a_final_value_is_a_violation() -> None:
    assert check_counters([inc("a", 0, 1, 1)], {}) == ["c: no final value"]


def test_violations_are_reported_in_a_bounded_number_of_lines() -> None:
    ops = [Op("a", f"c{i}", "increment", 0, 1, OK, 1) for i in range(100)]
    problems = check_counters(ops, dict.fromkeys((f"c{i}" for i in range(100)), 0))
    assert len(problems) == MAX_REPORTED
    assert problems[-1] == f"... and {200 - MAX_REPORTED + 1} more"


def test_an_op_has_a_value_exactly_when_it_is_ok() -> None:
    with pytest.raises(ValueError, match=r"^an OK op has a value"):
        Op("a", "c", "read", 0, 1, OK, None)
    with pytest.raises(ValueError, match=r"^an OK op has a value"):
        Op("a", "c", "read", 0, 1, FAILED, 3)


#### check_single_writer

X = "ab" * 32


def ev(node: str, kind: str, t: float, obj: str = X) -> ObjectEvent:
    return ObjectEvent(node, obj, "opened" if kind == "open" else "closed", t)


def test_an_object_that_moves_after_closing_passes() -> None:
    events = [ev("n1", "open", 1), ev("n1", "close", 2), ev("n2", "open", 2), ev("n2", "close", 3)]
    assert check_single_writer(events) == []
    assert check_single_writer([*events, ev("n1", "open", 4)]) == []  # back on n1, open to the end


def test_overlapping_intervals_on_two_nodes_are_a_violation() -> None:
    events = [ev("n1", "open", 1), ev("n2", "open", 2), ev("n1", "close", 3), ev("n2", "close", 4)]
    assert check_single_writer(events) == [
        f"object {X[:16]}: live on n1 [1.000, 3.000] (closed) and on n2 [2.000, 4.000] (closed) at once"
    ]


def test_other_objects_and_the_same_node_never_overlap() -> None:
    events = [ev("n1", "open", 1), ev("n2", "open", 1, obj="cd" * 32), ev("n1", "close", 2)]
    events += [ev("n1", "open", 2), ev("n1", "close", 3)]
    assert check_single_writer(events) == []


def test_an_interval_left_open_by_a_kill_ends_at_the_kill() -> None:
    events = [ev("n1", "open", 1), ev("n2", "open", 5)]
    assert check_single_writer(events, {"n1": [4.0]}) == []
    problems = check_single_writer(events)  # no kill: n1 still holds it
    assert problems == [
        f"object {X[:16]}: live on n1 [1.000, inf] (still open) and on n2 [5.000, inf] (still open) at once"
    ]


def test_a_kill_after_the_other_node_opened_is_a_violation() -> None:
    events = [ev("n1", "open", 1), ev("n2", "open", 5)]
    assert check_single_writer(events, {"n1": [6.0]}) == [
        f"object {X[:16]}: live on n1 [1.000, 6.000] (killed) and on n2 [5.000, inf] (still open) at once"
    ]


def test_a_kill_before_the_interval_opened_does_not_end_it() -> None:
    events = [ev("n1", "open", 3), ev("n2", "open", 5)]
    assert len(check_single_writer(events, {"n1": [2.0]})) == 1
    assert check_single_writer(events, {"n1": [2.0, 4.0]}) == []  # the second kill ends it


def test_a_node_restarted_after_a_kill_may_open_the_object_again() -> None:
    events = [ev("n1", "open", 1), ev("n1", "open", 5), ev("n1", "close", 6), ev("n2", "open", 7)]
    assert check_single_writer(events, {"n1": [3.0]}) == []


def test_events_the_log_cannot_explain_are_violations() -> None:
    problems = check_single_writer([ev("n1", "close", 1), ev("n1", "open", 2), ev("n1", "open", 3)])
    assert problems == [
        f"object {X[:16]} on n1: closed at 1.000 while not open",
        f"object {X[:16]} on n1: opened at 3.000 while open since 2.000",
    ]


#### Logs and ids


def test_object_events_are_parsed_from_json_lines_and_everything_else_is_skipped(tmp_path: Path) -> None:
    opened = {"ts": "...", "level": "debug", "event": "object_opened", "object": X, "node": "n1"}
    lines = [
        "actors: listening on http://127.0.0.1:1",
        json.dumps({**opened, "epoch": 3, "t": 10.5}),
        json.dumps({"event": "listening", "url": "http://x"}),
        "Traceback (most recent call last):",
        json.dumps({**opened, "event": "object_closed", "t": 11}),  # no epoch
        json.dumps({**opened, "t": "soon"}),  # malformed: skipped
        '{"event": "object_opened", "object": "ab", "no',  # cut off by a SIGKILL
    ]
    (tmp_path / "n1.log").write_text("\n".join(lines))
    assert parse_object_events([tmp_path / "n1.log", tmp_path / "missing.log"]) == [
        ObjectEvent("n1", X, "opened", 10.5, 3),
        ObjectEvent("n1", X, "closed", 11.0, None),
    ]


def test_object_hex_is_the_id_the_server_gives_a_name() -> None:
    assert object_hex("Counter", "home") == ObjectId.from_name("Counter", "home").hex
    assert object_hex(Counter, "home") == object_hex("Counter", "home")
    assert len(object_hex("Counter", "home")) == 64


#### Outcomes


@pytest.mark.parametrize(
    ("status", "body", "outcome"),
    [
        (200, {"value": 7}, OK),
        (503, {"error": {"type": "OwnerUnavailable"}}, FAILED),
        (503, {"error": {"type": "Overloaded"}}, FAILED),
        (503, {"error": {"type": "ShuttingDown"}}, FAILED),
        (400, {"error": {"type": "InvalidArgument"}}, FAILED),
        (504, {"error": {"type": "CallTimeout"}}, FAILED),
        (503, {"error": {"type": "ObjectReset"}}, UNKNOWN),
        (502, {"error": {"type": "OwnerLost"}}, UNKNOWN),
        (500, {"error": {"type": "InternalError"}}, UNKNOWN),
        (200, {"result": 7}, UNKNOWN),
    ],
)
def test_http_replies_are_classified_by_whether_the_call_may_have_run(
    status: int, body: object, outcome: Outcome
) -> None:
    assert classify_reply(status, json.dumps(body).encode())[0] is outcome


def test_a_reply_that_is_not_json_is_unknown() -> None:
    assert classify_reply(502, b"<html>bad gateway</html>") == (UNKNOWN, None, "502 ?")


@pytest.mark.parametrize(
    ("exc", "outcome"),
    [
        (httpx.ConnectError("refused"), FAILED),
        (httpx.ConnectTimeout("slow"), FAILED),
        (httpx.ReadTimeout("slow"), UNKNOWN),
        (httpx.RemoteProtocolError("Server disconnected"), UNKNOWN),
        (httpx.ReadError("reset"), UNKNOWN),
        (OwnerUnavailable("down", node="n2"), FAILED),
        (CallTimeout("late"), FAILED),
        (InvalidArgument("bad"), FAILED),
        (Unreachable("no route"), FAILED),
        (OwnerLost("link dropped"), UNKNOWN),
        (ObjectReset("commit failed"), UNKNOWN),
        (ConnectionLost("dropped"), UNKNOWN),
        (ReplyTimeout("no reply"), UNKNOWN),
        (trio.TooSlowError(), UNKNOWN),
    ],
)
def test_exceptions_are_classified_by_whether_the_call_may_have_run(
    exc: BaseException, outcome: Outcome
) -> None:
    assert classify_exception(exc)[0] is outcome


#### The load generator against a real node


async def test_calls_without_an_answer_are_unknown_and_a_call_cut_off_by_cancellation_is_recorded() -> None:
    connections: list[trio.SocketStream] = []
    third = trio.Event()

    async def silent(stream: trio.SocketStream) -> None:
        connections.append(stream)  # a timed-out call's connection is closed: one per call
        if len(connections) == 3:
            third.set()
        await trio.sleep_forever()  # reads nothing, answers nothing

    history = History()
    async with trio.open_nursery() as nursery:
        [listener] = await nursery.start(partial(trio.serve_tcp, silent, 0, host="127.0.0.1"))
        url = f"http://127.0.0.1:{listener.socket.getsockname()[1]}"
        nursery.start_soon(
            partial(run_load, history, http_urls=[url], sdk_url=None, names=["c"],
                    stop=trio.Event(), callers_per_url=1, timeout=0.2)
        )  # fmt: skip
        with trio.fail_after(10):
            await third.wait()  # the third call is in flight
        nursery.cancel_scope.cancel()  # run_load and the server
    first, second, cut_off = history.ops
    assert (first.outcome, first.detail) == (UNKNOWN, f"ReadTimeout via {url}")
    assert (second.outcome, second.detail) == (UNKNOWN, f"ReadTimeout via {url}")
    assert (cut_off.outcome, cut_off.detail) == (UNKNOWN, "cancelled")


async def test_a_load_against_a_real_node_records_every_call_and_passes_the_checks(tmp_path: Path) -> None:
    names = [f"smoke-{i}" for i in range(4)]
    history = History()
    async with open_node(tmp_path / "node") as node:
        stop = trio.Event()
        counts: dict[str, int] = {}

        async def load() -> None:
            counts.update(
                await run_load(history, http_urls=[node.url], sdk_url=node.url, names=names, stop=stop)
            )

        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(load)
                await trio.sleep(1.5)
                stop.set()
            finals = await final_values([node.url], names, deadline=10)
    assert counts == {"ok": len(history.ops), "failed": 0, "unknown": 0}
    assert history.counts() == counts
    assert {op.client for op in history.ops} == {"http-0-0", "http-0-1", "sdk-0", "sdk-1"}
    assert {op.kind for op in history.ops} == {"increment", "read"}
    assert check_counters(history, finals) == []
    assert sum(finals.values()) == sum(op.kind == "increment" for op in history.ops)


async def test_a_load_through_a_cluster_losing_a_node_passes_the_checks(tmp_path: Path) -> None:
    """The template of an end-to-end test: load through every node and the SDK, SIGKILL a node,
    restart it, read the final values, check the history and the nodes' logs."""
    history = History()
    killed_at: dict[str, list[float]] = {"n2": []}  # wall clock, just after each SIGKILL
    async with open_cluster(tmp_path, 2, "--log-format", "json") as cluster:
        urls = [cluster.url(i) for i in cluster.ids]
        names = [f"moving-{i}" for i in range(6)]
        stop = trio.Event()
        with trio.fail_after(40):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(
                    partial(run_load, history, http_urls=urls, sdk_url=urls[0], names=names, stop=stop)
                )
                await trio.sleep(0.5)
                cluster.kill("n2")
                killed_at["n2"].append(time.time())
                await trio.sleep(0.5)
                await cluster.start("n2")
                await trio.sleep(0.5)
                stop.set()
            finals = await final_values(urls, names, deadline=10)
        logs = [cluster.base / f"{node_id}.log" for node_id in cluster.ids]
    assert check_counters(history, finals) == []
    assert check_single_writer(parse_object_events(logs), killed_at) == []
    counts = history.counts()
    assert counts["ok"] > 0
    assert counts["failed"] + counts["unknown"] > 0, counts  # the kill was seen (n2's callers at least)
