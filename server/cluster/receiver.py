"""The new owner's side of a handoff: the ``adopt`` and ``adopt_chunk`` node operations.

Guarantees (the old owner's side, and the whole protocol, are ``handoff.py``'s)
- An arriving object is stored here only if this node owns it under its epoch (after adopting the
  sender's epoch if newer); otherwise it is answered ``not_owner`` with this node's epoch and owner.
- It is held only once ``runtime.adopt`` stored it (checksummed, written, made durable, catalogued), which
  is when the answer says ``stored``; a copy this node already holds is kept (``already_held``),
  except one this node sent without learning the outcome: the arriving copy is the newer one and
  replaces it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import trio

from actors import Arrival
from actors.errors import InvalidArgument

from .handoff import HandoffMetrics
from .handoff_wire import TRANSFER_TIMEOUT_SECONDS, object_ref

if TYPE_CHECKING:
    from actors import Runtime

    from .handoff import Mover
    from .router import Cluster

__all__ = ["Receiver"]


class Receiver:
    """The new owner's side of a handoff (``adopt`` and ``adopt_chunk`` node operations)."""

    def __init__(self, router: Cluster, runtime: Runtime, metrics: HandoffMetrics, mover: Mover) -> None:
        self._router = router
        self._runtime = runtime
        self._metrics = metrics
        self._mover = mover
        #: told the hex ids of the objects each adopt stored (the gate's ``arrived``)
        self.on_stored: Callable[[list[str]], None] | None = None

    async def chunk(self, kwargs: dict[str, Any]) -> None:
        router, runtime = self._router, self._runtime
        epoch, object_id = object_ref(runtime, kwargs)
        await router.reach(epoch, trio.current_time() + TRANSFER_TIMEOUT_SECONDS)
        offset, data = kwargs.get("offset"), kwargs.get("data")
        if type(offset) is not int or offset < 0 or type(data) is not bytes:
            raise InvalidArgument("adopt_chunk needs an offset and bytes")
        path = runtime.staging_path(object_id)

        def write() -> None:
            with open(path, "r+b" if offset else "wb") as file:
                file.seek(offset)
                file.write(data)

        await trio.to_thread.run_sync(write)

    async def adopt(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        router, runtime = self._router, self._runtime
        epoch = kwargs.get("epoch")
        objects = kwargs.get("objects")
        if type(epoch) is not int or type(objects) is not list:
            raise InvalidArgument("adopt needs an epoch and a list of objects")
        await router.reach(epoch, trio.current_time() + TRANSFER_TIMEOUT_SECONDS)
        outcomes: list[dict[str, Any]] = []
        arrivals = []
        for entry in objects:
            _, object_id = object_ref(runtime, {**entry, "epoch": epoch})
            if not router.owns(object_id):
                outcomes.append({"id": object_id.hex, "outcome": "not_owner", "epoch": router.epoch,
                                 "owner": router.owner(object_id)})  # fmt: skip
                continue
            data, sha, alarm = entry.get("data"), entry.get("sha256"), entry.get("alarm")
            if type(sha) is not str or (alarm is not None and type(alarm) not in (int, float)):
                raise InvalidArgument("adopt: sha256 must be a string and alarm a number or null")
            if data is not None and type(data) is not bytes:
                raise InvalidArgument("adopt: data must be bytes")
            # A small file comes with its bytes: runtime.adopt writes it in its worker thread, under
            # its name; a big one was staged by adopt_chunk messages before this one.
            arrivals.append(Arrival(object_id, sha, None if alarm is None else float(alarm), data))
        stale = [a.object_id for a in arrivals if self._mover.replaced(a.object_id.hex)]
        if stale:  # this node sent them without learning the outcome: the arriving copies are newer
            await runtime.discard(stale)
            await self._mover.outcome_known(object_id.hex for object_id in stale)
        if arrivals:
            stored: list[str] = []
            for outcome in await runtime.adopt(arrivals):
                row: dict[str, Any] = {"id": outcome.object_id.hex, "outcome": outcome.status}
                if outcome.error is not None:
                    row["error"] = outcome.error.message
                elif outcome.status == "stored":
                    stored.append(outcome.object_id.hex)
                outcomes.append(row)
            self._metrics.received(len(arrivals))
            if stored and self.on_stored is not None:
                self.on_stored(stored)
        return {"outcomes": outcomes, "epoch": router.epoch}
