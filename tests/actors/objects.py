"""Object classes shared by the runtime tests."""

from __future__ import annotations

from typing import Any

import trio

from actors import DurableObject


class Counter(DurableObject):
    async def increment(self, by: int = 1) -> int:
        value = self.storage.get("value", 0) + by
        self.storage.put("value", value)
        return value

    async def get(self) -> int:
        return self.storage.get("value", 0)  # type: ignore[no-any-return]

    async def increment_then_fail(self) -> None:
        self.storage.put("value", self.storage.get("value", 0) + 1000)
        raise ValueError("refused after writing")

    async def slow_increment(self, seconds: float) -> int:
        value = self.storage.get("value", 0) + 1
        self.storage.put("value", value)
        await trio.sleep(seconds)
        return value

    async def mirror(self, other: str) -> int:
        return await self.env.get("Counter", other).increment()  # type: ignore[no-any-return]

    def sync_method(self) -> int:
        return 1

    async def _private(self) -> int:
        return 1


class Recorder(DurableObject):
    """Records the order in which turns start and end (in memory, class-wide)."""

    log: list[str] = []

    async def record(self, label: str, seconds: float = 0.0) -> str:
        Recorder.log.append(f"start {label}")
        await trio.sleep(seconds)
        Recorder.log.append(f"end {label}")
        return label


class PingPong(DurableObject):
    """A calls B calls A: the chain re-enters A."""

    async def ping(self, other: str, depth: int) -> list[str]:
        if depth == 0:
            return [self.id.name or ""]
        rest = await self.env.get("PingPong", other).ping(self.id.name, depth - 1)
        return [self.id.name or "", *rest]

    async def wait_then_call(self, other: str, seconds: float) -> str:
        await trio.sleep(seconds)
        return await self.env.get("PingPong", other).hello()  # type: ignore[no-any-return]

    async def hello(self) -> str:
        return f"hello from {self.id.name}"


class Values(DurableObject):
    async def echo(self, value: Any) -> Any:
        return value

    async def bad_result(self) -> Any:
        return [1, 2, {3}]

    async def store(self, key: str, value: Any) -> None:
        self.storage.put(key, value)
