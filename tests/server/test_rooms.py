"""The built-in rooms in-process, in virtual time (``autojump_clock``): exact counts and waits."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from actors.errors import InvalidArgument
from actors.testing import open_test_runtime
from server.rooms import RateLimiter, rooms_app


async def test_counter_increments_decrements_and_reads(tmp_path: Path, autojump_clock: object) -> None:
    async with open_test_runtime(rooms_app(), tmp_path) as t:
        counter = t.get("Counter", "c")
        assert await counter.get() == 0
        assert await counter.increment() == 1
        assert await counter.increment(by=5) == 6
        assert await counter.decrement(2) == 4
        with pytest.raises(InvalidArgument, match=r"^by must be an int, not bool$"):
            await counter.increment(True)
        await t.restart()
        assert await counter.get() == 4


async def test_ratelimiter_allows_a_burst_of_100_then_one_per_600_ms(
    tmp_path: Path, autojump_clock: object
) -> None:
    async with open_test_runtime(rooms_app(), tmp_path) as t:
        limiter = t.get("RateLimiter", "k")
        start = trio.current_time()
        taken = [await limiter.take() for _ in range(100)]
        assert taken == [{"allowed": True, "remaining": n} for n in range(99, -1, -1)]
        assert await limiter.take() == {"allowed": False, "retry_after_ms": 600}
        await t.advance(0.3)
        assert await limiter.take() == {"allowed": False, "retry_after_ms": 300}
        await t.advance(0.3)
        assert await limiter.take() == {"allowed": True, "remaining": 0}
        assert await limiter.take() == {"allowed": False, "retry_after_ms": 600}
        assert trio.current_time() - start == pytest.approx(0.6)


async def test_a_refused_take_costs_nothing_and_the_bucket_survives_a_restart(
    tmp_path: Path, autojump_clock: object
) -> None:
    async with open_test_runtime(rooms_app(), tmp_path) as t:
        limiter = t.get("RateLimiter", "k")
        assert await limiter.take(100) == {"allowed": True, "remaining": 0}
        for _ in range(3):
            assert await limiter.take() == {"allowed": False, "retry_after_ms": 600}
        await t.restart(crash=True)  # the allowed take was committed before its reply
        assert await limiter.take() == {"allowed": False, "retry_after_ms": 600}
        await t.advance(60)
        assert await limiter.peek() == {"remaining": 100, "limit": 100}


async def test_ratelimiter_refuses_costs_outside_1_to_limit(tmp_path: Path, autojump_clock: object) -> None:
    async with open_test_runtime(rooms_app(), tmp_path) as t:
        limiter = t.get("RateLimiter", "k")
        for cost in (0, 101, 1.5, "1"):
            with pytest.raises(InvalidArgument, match=r"^cost must be an int in 1\.\.100, not "):
                await limiter.take(cost)


async def test_a_configured_policy_keeps_the_class_name(tmp_path: Path, autojump_clock: object) -> None:
    app = rooms_app(ratelimit_limit=2, ratelimit_period=10.0)
    assert issubclass(app.classes["RateLimiter"], RateLimiter)
    async with open_test_runtime(app, tmp_path) as t:
        limiter = t.get("RateLimiter", "k")
        assert [await limiter.take() for _ in range(3)] == [
            {"allowed": True, "remaining": 1},
            {"allowed": True, "remaining": 0},
            {"allowed": False, "retry_after_ms": 5000},
        ]
