"""Epoch seconds for rooms, read through trio's clock.

Objects must not call ``time.time()`` in a turn (house style rule 12: time comes from trio, so
trio's ``MockClock`` drives everything in tests). But a rate limiter's state outlives the process,
and trio's clock has an arbitrary origin per run, so stored times must be epoch seconds.

The mapping is the one :class:`actors` uses for alarms (``_clock.EpochClock``, private): an offset
of epoch minus trio time, read once per trio run and kept in a :class:`trio.lowlevel.RunVar`. Every
later reading is ``trio.current_time() + offset``: monotonic within a run, virtual under
``MockClock``.

XX: actors has no public accessor for its runtime's epoch clock (``Runtime.clock`` is reachable only
through the runtime, which objects do not hold). With one (e.g. ``self.env.now()``), rooms would
share the runtime's offset exactly instead of computing their own one at most a few microseconds
apart.
"""

from __future__ import annotations

import time

import trio

__all__ = ["epoch_now"]

_OFFSET: trio.lowlevel.RunVar[float] = trio.lowlevel.RunVar("rooms_epoch_offset")


def epoch_now() -> float:
    """Current epoch seconds, following trio's clock (must run inside ``trio.run``)."""
    try:
        offset = _OFFSET.get()
    except LookupError:
        offset = time.time() - trio.current_time()
        _OFFSET.set(offset)
    return trio.current_time() + offset
