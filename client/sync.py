"""A blocking facade over the SDK, for scripts and programs that do not run trio.

    from client.sync import connect

    with connect("http://127.0.0.1:8080") as c:
        print(c.get("Counter", "home").increment(by=2))
        print(c.call("Counter", "home", "get"))

One background thread runs a trio loop holding one :class:`client.Client`; each call blocks the
calling thread until its reply (``trio.from_thread.run``). Any thread may call. Errors, timeouts and
the retry policy are the async client's. Each call adds a thread handoff (about 0.2 ms on a small VM)
and each calling thread has one call in flight: for throughput, use the async client
(``client.connect``).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from typing import Any, Final, final

import trio

from actors import DurableObject

from ._client import DEFAULT_TIMEOUT, Client, ClientStatistics, _check_timeout, open_client

__all__ = ["SyncClient", "SyncStub", "connect"]

#: seconds ``close`` waits for the background thread to close its connections and exit
_THREAD_EXIT_TIMEOUT: Final = 10.0


@final
class SyncStub:
    """A remote object, blocking: ``stub.increment(by=2)`` returns the result (or raises)."""

    def __init__(self, client: SyncClient, cls: str, name: str, timeout: float | None) -> None:
        self._client = client
        self._cls = cls
        self._name = name
        self._timeout = timeout

    def __getattr__(self, method: str) -> Any:
        if method.startswith("_"):
            raise AttributeError(method)
        return partial(self._client._call_with_timeout, self._cls, self._name, method, self._timeout)

    def __repr__(self) -> str:
        return f"<sync stub {self._cls}/{self._name}>"


@final
class SyncClient:
    """A :class:`client.Client` driven from other threads (made by :func:`connect`)."""

    def __init__(self, client: Client, token: trio.lowlevel.TrioToken) -> None:
        self._client = client
        self._token = token

    @property
    def url(self) -> str:
        return self._client.url

    def get(self, cls: type[DurableObject] | str, name: str, *, timeout: float | None = None) -> SyncStub:
        """A blocking stub (``Client.get``; its methods are untyped here)."""
        class_name = cls if isinstance(cls, str) else cls.__name__
        self._client.get(class_name, name)  # checks the names now, as the async client does
        return SyncStub(self, class_name, name, _check_timeout(timeout))

    def call(
        self,
        cls: type[DurableObject] | str,
        name: str,
        method: str,
        /,
        *args: Any,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> Any:
        """``Client.call``, blocking until the reply."""
        return self._call_with_timeout(cls, name, method, timeout, *args, **kwargs)

    def _call_with_timeout(
        self, cls: type[DurableObject] | str, name: str, method: str, timeout: float | None, /, *args: Any,
        **kwargs: Any,
    ) -> Any:  # fmt: skip
        fn = partial(self._client.call, cls, name, method, *args, timeout=timeout, **kwargs)
        return trio.from_thread.run(fn, trio_token=self._token)

    def statistics(self) -> ClientStatistics:
        return trio.from_thread.run_sync(self._client.statistics, trio_token=self._token)


@contextmanager
def connect(
    url: str,
    *,
    token: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    max_in_flight: int | None = None,
    connections: int = 1,
) -> Iterator[SyncClient]:
    """:func:`client.connect` for the ``with`` block, in a background thread (same options, same
    errors: Unreachable, Rejected, ValueError)."""
    ready = threading.Event()
    state: dict[str, Any] = {}

    async def main() -> None:
        try:
            async with open_client(
                url, token=token, timeout=timeout, max_in_flight=max_in_flight, connections=connections
            ) as client:
                state["stop"] = stop = trio.Event()
                state["client"] = SyncClient(client, trio.lowlevel.current_trio_token())
                ready.set()
                await stop.wait()
        except BaseException as exc:
            state["error"] = exc
        finally:
            ready.set()

    thread = threading.Thread(target=trio.run, args=(main,), name="actors-client", daemon=True)
    thread.start()
    ready.wait()
    if "client" not in state:
        thread.join()
        raise state["error"]
    sync_client: SyncClient = state["client"]
    try:
        yield sync_client
    finally:
        trio.from_thread.run_sync(state["stop"].set, trio_token=sync_client._token)
        thread.join(_THREAD_EXIT_TIMEOUT)
    if "error" in state:
        raise state["error"]
