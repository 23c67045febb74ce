"""Every route of a real node over real HTTP, and the benchmark contract exactly.

Contract (``shared/bench/README.md``): increment twice gives 1 then 2, GET gives 2, ``{"by": 5}``
gives 7; 100 rate-limit requests are allowed with remaining 99..0 and the 101st gets 429 with
``retry_after_ms``.
"""

from __future__ import annotations

import itertools
import math
from urllib.parse import quote

import cbor2

from .nodes import Client, Node, Reply, fetch, in_thread, metric


async def test_healthz_and_readyz_answer_ok_on_a_running_node(node: Node) -> None:
    health = await fetch(node.url, "GET", "/healthz")
    assert (health.status, health.json()) == (200, {"status": "ok"})
    ready = await fetch(node.url, "GET", "/readyz")
    assert (ready.status, ready.json()) == (200, {"status": "ready"})


async def test_counter_follows_the_bench_contract(node: Node, unique: str) -> None:
    path = f"/counter/{unique}"
    first = await fetch(node.url, "POST", f"{path}/increment")
    assert (first.status, first.json()) == (200, {"value": 1})
    second = await fetch(node.url, "POST", f"{path}/increment", body=b"")
    assert (second.status, second.json()) == (200, {"value": 2})
    read = await fetch(node.url, "GET", path)
    assert (read.status, read.json()) == (200, {"value": 2})
    by_five = await fetch(node.url, "POST", f"{path}/increment", json_body={"by": 5})
    assert (by_five.status, by_five.json()) == (200, {"value": 7})
    assert first.headers["content-type"] == "application/json"


async def test_an_unwritten_counter_reads_zero(node: Node, unique: str) -> None:
    reply = await fetch(node.url, "GET", f"/counter/{unique}")
    assert (reply.status, reply.json()) == (200, {"value": 0})


def _burst(url: str, path: str, count: int, token: str | None = None) -> list[Reply]:
    client = Client(url, token)
    try:
        return [client.request("POST", path) for _ in range(count)]
    finally:
        client.close()


async def test_ratelimit_allows_100_then_answers_429_with_retry_after(strict_node: Node, unique: str) -> None:
    # strict_node refills over 3600 s instead of 60 s, so a slow machine cannot refill a token
    # during the burst and the remaining counts are exact (the default policy is checked exactly,
    # in virtual time, in test_rooms.py, and on the default node below).
    replies = await in_thread(_burst, strict_node.url, f"/ratelimit/{unique}", 101, strict_node.token)
    assert [(r.status, r.json()) for r in replies[:100]] == [
        (200, {"allowed": True, "remaining": n}) for n in range(99, -1, -1)
    ]
    refused = replies[100]
    assert refused.status == 429
    body = refused.json()
    assert list(body) == ["allowed", "retry_after_ms"]
    assert body["allowed"] is False
    assert type(body["retry_after_ms"]) is int
    assert 30_000 < body["retry_after_ms"] <= 36_000  # one token every 36 s
    assert refused.headers["retry-after"] == str(math.ceil(body["retry_after_ms"] / 1000))


async def test_ratelimit_default_policy_refuses_after_a_burst_of_100(node: Node, unique: str) -> None:
    replies = await in_thread(_burst, node.url, f"/ratelimit/{unique}", 100)
    assert all(r.status == 200 for r in replies)
    remaining = [r.json()["remaining"] for r in replies]
    assert remaining[0] == 99
    # tokens come back at 100 per 60 s, so a slow burst may see a count repeat, never rise
    assert all(0 <= a - b <= 1 for a, b in itertools.pairwise(remaining))
    more = await in_thread(_burst, node.url, f"/ratelimit/{unique}", 5)
    refused = [r for r in more if r.status == 429]
    assert refused, "the bucket never emptied"
    body = refused[0].json()
    assert body["allowed"] is False
    assert 0 < body["retry_after_ms"] <= 600
    assert refused[0].headers["retry-after"] == "1"


async def test_ratelimit_keys_are_independent(node: Node, unique: str) -> None:
    reply = await fetch(node.url, "POST", f"/ratelimit/{unique}-other")
    assert (reply.status, reply.json()) == (200, {"allowed": True, "remaining": 99})


async def test_generic_call_takes_json_args_and_kwargs(node: Node, unique: str) -> None:
    path = f"/v1/objects/Tally/{unique}"
    add = await fetch(node.url, "POST", f"{path}/add", json_body={"args": ["bugs"], "kwargs": {"by": 3}})
    assert (add.status, add.json()) == (200, {"result": 3})
    totals = await fetch(node.url, "POST", f"{path}/totals")  # no body: no arguments
    assert (totals.status, totals.json()) == (200, {"result": {"bugs": 3}})
    echo = await fetch(
        node.url,
        "POST",
        f"/v1/objects/Probe/{unique}/echo",
        json_body={"args": [1, "two", [3], {"four": None}], "kwargs": {"k": True}},
    )
    assert echo.json() == {"result": {"args": [1, "two", [3], {"four": None}], "kwargs": {"k": True}}}


async def test_generic_call_in_cbor_replies_in_cbor(node: Node, unique: str) -> None:
    body = cbor2.dumps({"args": [b"\x01\x02", 1.5], "kwargs": {}})
    reply = await fetch(
        node.url,
        "POST",
        f"/v1/objects/Probe/{unique}/echo",
        body=body,
        headers={"Content-Type": "application/cbor"},
    )
    assert reply.status == 200
    assert reply.cbor() == {"result": {"args": [b"\x01\x02", 1.5], "kwargs": {}}}
    blob = await fetch(
        node.url, "POST", f"/v1/objects/Probe/{unique}/blob", headers={"Accept": "application/cbor"}
    )
    assert blob.cbor() == {"result": b"\x00\xffbytes"}


async def test_the_builtin_rooms_are_callable_through_the_generic_api(node: Node, unique: str) -> None:
    up = await fetch(node.url, "POST", f"/v1/objects/Counter/{unique}/increment", json_body={"args": [4]})
    assert up.json() == {"result": 4}
    down = await fetch(node.url, "POST", f"/v1/objects/Counter/{unique}/decrement")
    assert down.json() == {"result": 3}
    take = await fetch(node.url, "POST", f"/v1/objects/RateLimiter/{unique}/take", json_body={"args": [10]})
    assert take.json() == {"result": {"allowed": True, "remaining": 90}}


async def test_names_are_percent_decoded_per_segment(node: Node, unique: str) -> None:
    name = f"{unique}/a b?é"
    reply = await fetch(node.url, "POST", f"/counter/{quote(name, safe='')}/increment")
    assert reply.json() == {"value": 1}
    listing = await fetch(node.url, "GET", f"/v1/objects?class=Counter&prefix={quote(unique)}")
    assert [o["name"] for o in listing.json()["objects"]] == [name]


async def test_listing_pages_with_an_opaque_cursor(node: Node, unique: str) -> None:
    for suffix in ("a", "b", "c"):
        await fetch(node.url, "POST", f"/v1/objects/Tally/{unique}-{suffix}/add", json_body={"args": ["x"]})
    first = await fetch(node.url, "GET", f"/v1/objects?class=Tally&prefix={unique}&limit=2")
    assert first.status == 200
    page = first.json()
    assert [o["name"] for o in page["objects"]] == [f"{unique}-a", f"{unique}-b"]
    entry = page["objects"][0]
    assert set(entry) == {"class", "name", "id", "created", "alarm", "node"}
    assert entry["class"] == "Tally"
    assert len(entry["id"]) == 64
    assert entry["alarm"] is None
    assert isinstance(page["cursor"], str)
    second = await fetch(
        node.url, "GET", f"/v1/objects?class=Tally&prefix={unique}&limit=2&cursor={page['cursor']}"
    )
    assert second.json() == {"objects": [second.json()["objects"][0]], "cursor": None, "unavailable": []}
    assert second.json()["objects"][0]["name"] == f"{unique}-c"


async def test_metrics_count_calls_turns_commits_and_live_objects(node: Node, unique: str) -> None:
    await fetch(node.url, "POST", f"/counter/{unique}/increment")
    await fetch(node.url, "POST", f"/v1/objects/Probe/{unique}/alarm_now")
    for _ in range(100):  # the alarm runs on its own task; wait for it, boundedly
        alarms = await fetch(node.url, "POST", f"/v1/objects/Probe/{unique}/alarms")
        if alarms.json()["result"] == 1:
            break
    assert alarms.json() == {"result": 1}
    reply = await fetch(node.url, "GET", "/metrics")
    assert reply.status == 200
    assert reply.headers["content-type"].startswith("text/plain")
    text = reply.body.decode()
    ok = {"class_": "Counter", "method": "increment", "outcome": "ok"}
    assert (metric(text, "actors_calls_total", **ok) or 0) >= 1
    assert (
        metric(text, "actors_turn_duration_seconds_count", class_="Counter", method="increment") or 0
    ) >= 1
    assert (metric(text, "actors_call_duration_seconds_count", class_="Counter") or 0) >= 1
    assert (metric(text, "actors_commit_duration_seconds_count") or 0) >= 1
    assert (metric(text, "actors_commit_batch_turns_count") or 0) >= 1
    assert (metric(text, "actors_activations_total", class_="Counter") or 0) >= 1
    assert (metric(text, "actors_alarms_total", class_="Probe", outcome="ok") or 0) >= 1
    assert (metric(text, "actors_live_objects") or 0) >= 1
    assert (
        metric(text, "actors_http_requests_total", route="/counter/{name}/increment", status="200") or 0
    ) >= 1
    for name in (
        "actors_queued_calls",
        "actors_max_queue_depth",
        "actors_commits_in_flight",
        "actors_pending_alarms",
        "actors_open_object_files",
        "actors_object_files_rested",
        "actors_internal_errors_total",
    ):
        assert metric(text, name) is not None, name
    assert "# TYPE actors_evictions_total counter" in text
