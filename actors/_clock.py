"""Time, read only through trio.

The runtime never calls ``time.time()`` on a hot path: deadlines, idle eviction and alarm backoff use
``trio.current_time()``, so trio's ``MockClock`` drives them all in tests. Alarms are stored as epoch
seconds (they must survive restarts), so one :class:`EpochClock` maps between the two. Its offset is fixed
when the runtime opens; ``actors.testing`` keeps one offset across simulated restarts so virtual epoch time
never runs backwards.
"""

from __future__ import annotations

import time

import trio


class EpochClock:
    """Maps trio time to epoch seconds with a fixed offset."""

    __slots__ = ("offset",)

    def __init__(self, offset: float | None = None) -> None:
        #: epoch seconds minus trio seconds; fixed for the clock's life
        self.offset = time.time() - trio.current_time() if offset is None else offset

    def now(self) -> float:
        """Current epoch seconds."""
        return trio.current_time() + self.offset

    def to_trio(self, epoch: float) -> float:
        """The trio time at which ``epoch`` is reached."""
        return epoch - self.offset
