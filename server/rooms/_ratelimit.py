"""RateLimiter: a strongly consistent token bucket per key (default 100 requests per 60 s).

Guarantees
- One object per key, one turn at a time: two concurrent requests can never both take the last
  token.
- An allowed ``take`` is durable before its reply: the bucket is written in the turn and committed
  with it, so a restart (even SIGKILL after the reply) never hands out the same tokens again.
- A refused ``take`` writes nothing and costs nothing.

Algorithm (the token bucket of the benchmark's workerd and hypercorn peers, so results compare): the
bucket holds at most ``LIMIT`` tokens and refills continuously at ``LIMIT / PERIOD`` tokens per
second. It starts full. ``take(cost)`` first refills by the time elapsed since the last allowed
take, ``tokens = min(LIMIT, tokens + elapsed * LIMIT / PERIOD)``; then, if ``tokens >= cost``, it
removes ``cost`` tokens and answers ``{"allowed": True, "remaining": floor(tokens)}``; otherwise it
answers ``{"allowed": False, "retry_after_ms": ceil((cost - tokens) / rate * 1000)}``, the wait
until enough tokens will be back. So a burst of ``LIMIT`` requests passes, then one request per
``PERIOD / LIMIT``.

Tokens and waits are rounded to 1e-6 before comparing, so float error in epoch seconds never turns
an exact refill into a refusal (or a 300 ms wait into 301).

State: one storage key, ``bucket = [tokens, updated_at]`` with ``updated_at`` in epoch seconds from
``self.env.now()`` (the runtime's epoch clock, virtual under trio's MockClock). If the wall clock went
backwards across a restart, the elapsed time counts as 0: the bucket never refills from a negative interval.

Policy: subclass and set ``LIMIT`` / ``PERIOD`` (``class ApiLimiter(RateLimiter): LIMIT = 10``).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

from actors import DurableObject
from actors.errors import InvalidArgument

_KEY = "bucket"
#: tokens and waits are rounded to 1e-6: epoch seconds near 1.8e9 carry only ~0.2 µs of precision, so
#: without it exactly 0.6 s of refill could read as 0.99999995 tokens and refuse a request it allows
_DIGITS = 6


class RateLimiter(DurableObject):
    """A token bucket of ``LIMIT`` tokens refilled at ``LIMIT`` per ``PERIOD`` seconds."""

    LIMIT: ClassVar[int] = 100
    PERIOD: ClassVar[float] = 60.0

    async def take(self, cost: int = 1) -> dict[str, Any]:
        """Take ``cost`` tokens if the bucket holds them.

        Returns ``{"allowed": True, "remaining": n}`` or ``{"allowed": False, "retry_after_ms":
        m}``. Raises InvalidArgument unless ``cost`` is an int in ``1..LIMIT``.
        """
        if type(cost) is not int or not 1 <= cost <= self.LIMIT:
            raise InvalidArgument(f"cost must be an int in 1..{self.LIMIT}, not {cost!r}")
        now = self.env.now()
        tokens = self._tokens(now)
        if tokens < cost:
            wait_ms = round((cost - tokens) * self.PERIOD * 1000 / self.LIMIT, _DIGITS)
            return {"allowed": False, "retry_after_ms": math.ceil(wait_ms)}
        tokens -= cost
        self.storage.put(_KEY, [tokens, now])
        return {"allowed": True, "remaining": math.floor(tokens)}

    async def peek(self) -> dict[str, Any]:
        """The tokens available now, without taking any: ``{"remaining": n, "limit": LIMIT}``."""
        tokens = self._tokens(self.env.now())
        return {"remaining": math.floor(tokens), "limit": self.LIMIT}

    def _tokens(self, now: float) -> float:
        stored = self.storage.get(_KEY)
        if stored is None:
            return float(self.LIMIT)
        tokens, updated_at = float(stored[0]), float(stored[1])
        elapsed = max(0.0, now - updated_at)
        return min(float(self.LIMIT), round(tokens + elapsed * self.LIMIT / self.PERIOD, _DIGITS))
