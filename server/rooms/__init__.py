"""Ready-made object classes every node serves: :class:`Counter`, :class:`RateLimiter`,
:class:`ChatRoom` and :class:`Presence`.

They back the benchmark routes (``/counter/{name}``, ``/ratelimit/{key}``, WebSocket
``/chat/{room}``) and the WebSocket routes ``/presence/{room}`` and ``/counter/{name}/ws``, and are
callable through the generic API like any user class. A user ``--app`` is served beside them
(``App.merged``); a user class with the same name as a room is refused at startup rather than
silently shadowing it.
"""

from __future__ import annotations

from actors import App

from ._chat import ChatRoom as ChatRoom
from ._counter import Counter as Counter
from ._presence import Presence as Presence
from ._ratelimit import RateLimiter as RateLimiter

__all__ = ["ChatRoom", "Counter", "Presence", "RateLimiter", "rooms_app"]


def rooms_app(
    *, ratelimit_limit: int = RateLimiter.LIMIT, ratelimit_period: float = RateLimiter.PERIOD
) -> App:
    """A fresh App holding the built-in rooms (a new one each call: Apps are mutable).

    A rate-limit policy other than the default is served by a subclass still named ``RateLimiter``,
    so URLs, ids and stored buckets do not change with the policy.
    """
    limiter: type[RateLimiter] = RateLimiter
    if (ratelimit_limit, ratelimit_period) != (RateLimiter.LIMIT, RateLimiter.PERIOD):
        limiter = type(
            "RateLimiter",
            (RateLimiter,),
            {"LIMIT": ratelimit_limit, "PERIOD": ratelimit_period, "__module__": __name__},
        )
    return App([Counter, limiter, ChatRoom, Presence])
