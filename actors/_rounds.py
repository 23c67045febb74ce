"""Group commit for work that ends in a disk flush: one flush for everything submitted meanwhile.

Guarantees (of :meth:`Rounds.submit`)
- It returns only once a round that included the caller's items ran to its end, and raises that
  round's error if it failed (every caller of a failed round gets it: none of them may assume its
  items were done).
- At most one round runs at a time. Items submitted while one runs wait for it and go together into
  the next; so with N callers at once there are about two rounds, not N.
- A round, once started, is seen through even if its callers are cancelled (it is shielded): work
  that writes files and a catalog is never left half done by a cancelled caller.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

import trio

__all__ = ["Rounds"]

T = TypeVar("T")


class _Round(Generic[T]):
    def __init__(self) -> None:
        self.items: list[T] = []
        self.done = trio.Event()
        self.error: BaseException | None = None
        self.led = False


class Rounds(Generic[T]):
    """Runs ``run(items)`` for batches of items submitted concurrently (see the module docstring)."""

    def __init__(self, run: Callable[[list[T]], Awaitable[None]]) -> None:
        self._run = run
        self._next: _Round[T] | None = None
        self._running: _Round[T] | None = None

    async def submit(self, items: list[T]) -> None:
        gathering = self._next
        if gathering is None:
            gathering = self._next = _Round()
        gathering.items.extend(items)
        if gathering.led:  # another caller runs this round: wait for it
            await gathering.done.wait()
        else:
            gathering.led = True
            with trio.CancelScope(shield=True):
                while self._running is not None:  # one round at a time; ours gathers meanwhile
                    await self._running.done.wait()
                self._next, self._running = None, gathering
                try:
                    await self._run(gathering.items)
                except BaseException as exc:
                    gathering.error = exc
                finally:
                    self._running = None
                    gathering.done.set()
        if gathering.error is not None:
            raise gathering.error
