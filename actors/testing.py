"""Unit-test your objects in-process, in virtual time: no server, no sockets.

    from actors.testing import open_test_runtime

    async def test_counter(tmp_path, autojump_clock):
        async with open_test_runtime(App([Counter]), tmp_path) as t:
            assert await t.get("Counter", "a").increment() == 1
            await t.advance(11)                 # idle eviction happens in virtual time
            assert not t.is_live("Counter", "a")
            await t.restart()                   # a new runtime on the same data folder
            assert await t.get("Counter", "a").increment() == 2

Guarantees
- Everything the runtime times (deadlines, idle eviction, alarm times and backoff) follows trio's clock,
  so under ``MockClock`` (pytest-trio's ``autojump_clock``) a test of hours runs in milliseconds and
  asserts exact durations.
- Commits run inline on the trio thread (never in a worker thread), so an autojumping clock cannot skip
  ahead while a commit is in flight. Storage is still a real SQLite file per object.
- ``restart()`` keeps the epoch mapping, so virtual epoch time never runs backwards across restarts;
  ``restart(crash=True)`` drops everything uncommitted, as a SIGKILL would.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import trio
import trio.testing

from ._app import App
from ._hooks import Hooks, RuntimeStatistics
from ._ids import ObjectId
from ._lifetime import open_runtime
from ._object import DurableObject, Stub
from ._runtime import Runtime
from ._settings import Settings

__all__ = ["TestRuntime", "open_test_runtime"]


class TestRuntime:
    """A runtime you can restart, evict from and move through time (see the module docstring)."""

    __test__ = False  # not a pytest test class

    def __init__(self, app: App, data_dir: Path, settings: Settings, hooks: Hooks) -> None:
        self.app = app
        self.data_dir = data_dir
        self.settings = settings
        self.hooks = hooks
        self._offset: float | None = None  # fixed by the first start, kept across restarts
        self._runtime: Runtime | None = None
        self._stopped: trio.Event | None = None
        self._stop: trio.Event | None = None
        self._nursery: trio.Nursery | None = None

    @property
    def runtime(self) -> Runtime:
        """The runtime now running (a new one after each restart)."""
        assert self._runtime is not None, "the test runtime is not running"
        return self._runtime

    def id(self, cls: str | type[DurableObject], name: str) -> ObjectId:
        return self.app.id_from_name(cls, name)

    def get(self, cls: str | type[DurableObject], name: str) -> Stub:
        """A stub that stays valid across restarts (it always calls the current runtime)."""
        return Stub(self, self.app.id_from_name(cls, name))

    async def call(
        self,
        object_id: ObjectId,
        method: str,
        args: tuple[Any, ...] | list[Any] = (),
        kwargs: dict[str, Any] | None = None,
        *,
        timeout: float | None = None,
    ) -> Any:
        return await self.runtime.call(object_id, method, args, kwargs, timeout=timeout)

    async def advance(self, seconds: float) -> None:
        """Let ``seconds`` of virtual time pass, running everything that comes due."""
        clock = trio.lowlevel.current_clock()
        if isinstance(clock, trio.testing.MockClock) and clock.autojump_threshold == float("inf"):
            await trio.testing.wait_all_tasks_blocked()
            clock.jump(seconds)
            await trio.testing.wait_all_tasks_blocked()
        else:
            await trio.sleep(seconds)
            await trio.testing.wait_all_tasks_blocked()  # what fell due at that instant runs too

    async def fire_alarms(self) -> None:
        """Run every pending alarm now, whatever its time; returns when they have run once."""
        await self.runtime.alarms.fire_all_now()

    def pending_alarms(self) -> dict[str, float]:
        """hex id -> epoch seconds of every alarm the scheduler holds."""
        return self.runtime.alarms.pending()

    def now(self) -> float:
        """Virtual epoch seconds (what ``set_alarm`` compares against)."""
        return self.runtime.clock.now()

    def is_live(self, cls: str | type[DurableObject], name: str) -> bool:
        """Whether the object is in memory now (tests of eviction and hibernation)."""
        return self.runtime.is_live(self.id(cls, name))

    async def evict(self, cls: str | type[DurableObject], name: str) -> None:
        """Evict the object now (after its queued work); the next call re-activates it."""
        await self.runtime.evict(self.id(cls, name))

    def statistics(self) -> RuntimeStatistics:
        return self.runtime.statistics()

    async def restart(self, *, crash: bool = False) -> None:
        """Stop the runtime (drained, or abruptly with ``crash=True``) and start a new one on the same
        data folder."""
        await self._stop_runtime(crash=crash)
        await self._start()

    async def _start(self) -> None:
        assert self._nursery is not None
        await self._nursery.start(self._run)

    async def _run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        stop, stopped = trio.Event(), trio.Event()
        self._stop, self._stopped = stop, stopped
        try:
            async with open_runtime(
                self.app,
                self.data_dir,
                settings=self.settings,
                hooks=self.hooks,
                epoch_offset=self._offset,
                io_in_threads=False,
            ) as runtime:
                self._offset = runtime.clock.offset
                self._runtime = runtime
                task_status.started()
                await stop.wait()
        finally:
            self._runtime = None
            stopped.set()

    async def _stop_runtime(self, *, crash: bool) -> None:
        runtime, stop, stopped = self._runtime, self._stop, self._stopped
        if runtime is None or stop is None or stopped is None:
            return
        if crash:
            runtime.crash()
        stop.set()
        await stopped.wait()


@asynccontextmanager
async def open_test_runtime(
    app: App,
    data_dir: str | Path,
    *,
    settings: Settings | None = None,
    hooks: Hooks | None = None,
) -> AsyncIterator[TestRuntime]:
    """A :class:`TestRuntime` on ``data_dir`` (use pytest's ``tmp_path``); closed (drained) on exit."""
    test_runtime = TestRuntime(app, Path(data_dir), settings or Settings(), hooks or Hooks())
    async with trio.open_nursery() as nursery:
        test_runtime._nursery = nursery
        await test_runtime._start()
        try:
            yield test_runtime
        finally:
            await test_runtime._stop_runtime(crash=False)
