"""A bounded load of counter calls through every node (HTTP) and the SDK, recorded in a History.

Guarantees
- Bounded: each caller has at most one call in flight, and every call ends within ``timeout`` (plus
  ``GRACE_SECONDS``); after a call that did not succeed the caller pauses ``BACKOFF_SECONDS``, so a
  dead node costs a few calls a second, not a busy loop.
- Complete: every call is recorded, even one cancelled halfway (as UNKNOWN); ``run_load`` never
  raises for a call's failure. When ``stop`` is set each caller finishes its call in flight and
  returns.
- Deterministic choice: caller ``k`` picks counters and kinds from ``random.Random`` seeded with its
  id, so a failing run can be replayed with the same sequence of calls per caller.

Use (a whole end-to-end test is ``test_history.py``'s last test)::

    history, stop = History(), trio.Event()
    async with trio.open_nursery() as nursery:
        load = partial(run_load, history, http_urls=urls, sdk_url=urls[0], names=names, stop=stop)
        nursery.start_soon(load)
        ...  # change the membership, kill nodes (note time.time() just after each kill)
        stop.set()
    assert check_counters(history, await final_values(urls, names)) == []

Outcomes (``classify_reply``, ``classify_exception``): FAILED only when the call provably never ran
(refused before reaching the object: ``OwnerUnavailable``, ``Overloaded``, ``ShuttingDown``,
``CallTimeout`` — its writes are never applied —, a 4xx, a connection refused or not made, the
SDK's ``Unreachable``/``Rejected``); UNKNOWN otherwise (no answer in time, a dropped connection,
502 ``OwnerLost``, 500, ``ObjectReset`` — it may fall after a commit began).
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx
import trio

from actors.errors import ActorError, CallerError, CallTimeout, Overloaded, OwnerUnavailable, ShuttingDown
from client import Client, Rejected, Unreachable, connect

from .history import History, Kind, Op, Outcome

__all__ = [
    "BACKOFF_SECONDS",
    "GRACE_SECONDS",
    "classify_exception",
    "classify_reply",
    "final_values",
    "run_load",
]

#: a caller's pause after a call that was not OK (a dead node answers in microseconds)
BACKOFF_SECONDS = 0.05
#: past the call's own timeout, before the caller gives up on it (UNKNOWN)
GRACE_SECONDS = 2.0
#: error types of a 503 that the node raises only for calls that never reached the object
_NEVER_RAN = frozenset({"OwnerUnavailable", "Overloaded", "ShuttingDown"})
#: exceptions raised only for calls that never ran: no connection (so no request), or a refusal
#: before the object (the SDK has already retried Overloaded and ShuttingDown within the timeout)
_RAISED_NEVER_RAN = (
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.PoolTimeout,
    OwnerUnavailable,
    Overloaded,
    ShuttingDown,
    CallTimeout,
    CallerError,
    Unreachable,
    Rejected,
)


def classify_reply(status: int, body: bytes) -> tuple[Outcome, int | None, str]:
    """(outcome, value, detail) of an HTTP reply from a counter route."""
    try:
        document = json.loads(body)
    except ValueError:
        document = None
    if status == 200 and isinstance(document, dict) and type(document.get("value")) is int:
        return Outcome.OK, document["value"], ""
    error = document.get("error") if isinstance(document, dict) else None
    kind = error.get("type", "?") if isinstance(error, dict) else "?"
    detail = f"{status} {kind}"
    if (
        400 <= status < 500
        or (status == 503 and kind in _NEVER_RAN)
        or (status == 504 and kind == "CallTimeout")
    ):
        return Outcome.FAILED, None, detail
    return Outcome.UNKNOWN, None, detail


def classify_exception(exc: BaseException) -> tuple[Outcome, str]:
    """(outcome, detail) of an exception an HTTP or SDK call raised."""
    detail = type(exc).__name__
    if isinstance(exc, ActorError):
        detail = f"{exc.type}: {exc.message}"[:200]
    if isinstance(exc, _RAISED_NEVER_RAN):
        return Outcome.FAILED, detail
    return Outcome.UNKNOWN, detail


@dataclass(frozen=True)
class _Load:
    """What every caller of one ``run_load`` shares."""

    history: History
    names: Sequence[str]
    stop: trio.Event
    read_ratio: float
    timeout: float
    seed: int
    tally: dict[str, int]  # calls per outcome in this run


async def run_load(
    history: History,
    *,
    http_urls: Sequence[str],
    sdk_url: str | None,
    names: Sequence[str],
    stop: trio.Event,
    callers_per_url: int = 2,
    sdk_callers: int = 2,
    read_ratio: float = 0.2,
    timeout: float = 10.0,
    seed: int = 0,
) -> dict[str, int]:
    """Increment and read ``names`` until ``stop`` is set; return this run's calls per outcome.

    ``callers_per_url`` callers per URL of ``http_urls`` (``http-<i>-<k>``, each with its own
    keep-alive ``httpx.AsyncClient``), and ``sdk_callers`` callers (``sdk-<k>``) sharing one SDK
    client opened on ``sdk_url`` (it routes to owners and follows the cluster map the nodes
    announce; opened again until it connects, while ``stop`` is not set). Each call is an increment
    by 1, or a read with probability ``read_ratio``; ``seed`` varies every caller's sequence.
    """
    if not names:
        raise ValueError("names must not be empty")
    load = _Load(history, list(names), stop, read_ratio, timeout, seed, dict.fromkeys(map(str, Outcome), 0))
    async with trio.open_nursery() as nursery:
        for i, url in enumerate(http_urls):
            for k in range(callers_per_url):
                nursery.start_soon(_http_caller, load, f"http-{i}-{k}", url)
        if sdk_url is not None and sdk_callers > 0:
            nursery.start_soon(_sdk_callers, load, sdk_url, sdk_callers)
    return load.tally


Call = Callable[[str, Kind], Awaitable[tuple[Outcome, int | None, str]]]


async def _loop(load: _Load, caller: str, call: Call) -> None:
    rng = random.Random(f"{load.seed}/{caller}")
    while not load.stop.is_set():
        name = rng.choice(load.names)
        kind: Kind = "read" if rng.random() < load.read_ratio else "increment"
        invoked = time.time()
        outcome, value, detail = Outcome.UNKNOWN, None, "cancelled"
        try:
            with trio.move_on_after(load.timeout + GRACE_SECONDS) as scope:
                outcome, value, detail = await call(name, kind)
            if scope.cancelled_caught:
                detail = "no answer in time"
        finally:  # cancelled too: the call may have run, and the history must say so
            load.history.record(Op(caller, name, kind, invoked, time.time(), outcome, value, detail))
            load.tally[outcome] += 1
        if outcome is not Outcome.OK:
            await trio.sleep(BACKOFF_SECONDS)


async def _http_caller(load: _Load, caller: str, url: str) -> None:
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    async with httpx.AsyncClient(base_url=url, timeout=load.timeout, limits=limits) as http:

        async def call(name: str, kind: Kind) -> tuple[Outcome, int | None, str]:
            path = f"/counter/{quote(name, safe='')}"
            try:
                if kind == "read":
                    reply = await http.get(path)
                else:
                    reply = await http.post(path + "/increment")
            except Exception as exc:  # every failure is recorded, none ends the load
                outcome, detail = classify_exception(exc)
                return outcome, None, f"{detail} via {url}"
            outcome, value, detail = classify_reply(reply.status_code, reply.content)
            return outcome, value, f"{detail} via {url}" if detail else ""

        await _loop(load, caller, call)


async def _sdk_callers(load: _Load, url: str, count: int) -> None:
    async with AsyncExitStack() as stack:
        client = await _open_sdk(stack, url, load)
        if client is None:
            return

        async def call(name: str, kind: Kind) -> tuple[Outcome, int | None, str]:
            try:
                value: Any = await client.call("Counter", name, "get" if kind == "read" else "increment")
            except Exception as exc:  # every failure is recorded, none ends the load
                outcome, detail = classify_exception(exc)
                return outcome, None, f"{detail} via sdk"
            if type(value) is not int:
                return Outcome.UNKNOWN, None, f"result {value!r} via sdk"
            return Outcome.OK, value, ""

        async with trio.open_nursery() as nursery:
            for k in range(count):
                nursery.start_soon(_loop, load, f"sdk-{k}", call)


async def _open_sdk(stack: AsyncExitStack, url: str, load: _Load) -> Client | None:
    """An SDK client on ``url``, tried again until it connects; None if ``stop`` came first."""
    while not load.stop.is_set():
        try:
            return await stack.enter_async_context(connect(url, timeout=load.timeout))
        except (Unreachable, OSError):
            pass
        except Rejected as exc:
            if exc.status != 503:  # a wrong token or URL: no later attempt would do better
                raise
        await trio.sleep(BACKOFF_SECONDS)  # the node is down or draining (a restart under way)
    return None


async def final_values(
    urls: Sequence[str], names: Sequence[str], *, deadline: float = 30.0, timeout: float = 5.0
) -> dict[str, int]:
    """Each counter's value, read through the first of ``urls`` that answers 200.

    A node that refuses the connection or answers anything else (503 while an owner is down or
    moving) is skipped; the URLs are tried round and round, ``BACKOFF_SECONDS`` apart, for at most
    ``deadline`` seconds in all. Raises AssertionError naming the counters not read by then and
    the last answer for each.
    """
    values: dict[str, int] = {}
    last: dict[str, str] = {}
    async with httpx.AsyncClient(timeout=timeout) as http:
        with trio.move_on_after(deadline):
            for name in names:
                values[name] = await _read_until_answered(http, urls, name, last)
    missing = {n: last.get(n, "not tried") for n in names if n not in values}
    assert not missing, f"no node answered these reads within {deadline} s: {missing}"
    return values


async def _read_until_answered(
    http: httpx.AsyncClient, urls: Sequence[str], name: str, last: dict[str, str]
) -> int:
    attempt = 0
    while True:
        url = urls[attempt % len(urls)]
        attempt += 1
        try:
            reply = await http.get(f"{url}/counter/{quote(name, safe='')}")
        except httpx.HTTPError as exc:
            last[name] = f"{type(exc).__name__} via {url}"
        else:
            outcome, value, detail = classify_reply(reply.status_code, reply.content)
            if outcome is Outcome.OK and value is not None:
                return value
            last[name] = f"{detail} via {url}"
        if attempt % len(urls) == 0:
            await trio.sleep(BACKOFF_SECONDS)
