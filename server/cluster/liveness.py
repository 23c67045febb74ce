"""This node's liveness in etcd, and the fence that keeps a cut-off node from writing.

Membership (who owns a share of the ring) and liveness (who is up) are kept apart: liveness is one
key, ``alive/<node id>``, put under a lease with a TTL that this node keeps alive. Others see the
node as down once the key goes; it stays a member (its objects answer ``OwnerUnavailable``).

Guarantees
- **Fencing.** ``writable`` is true only before ``renewed_sent + ttl - margin``, where
  ``renewed_sent`` is when (on this node's monotonic clock) the last keep-alive that *succeeded* was
  *sent*. etcd expires a lease no sooner than ``ttl`` after the last keep-alive it *received*
  (often later: a new leader gives every lease its full TTL again), and a keep-alive is received
  after it is sent, so this node stops writing at least ``margin`` before any other node can see its
  lease lapse. ``margin`` covers the two clocks' rate difference and the turn (and commit) in
  progress when the fence falls. After the fence falls, ``writable`` turns true again only after a
  keep-alive succeeds (or, if the lease was lost, a new lease is granted and the key put again).
- **Renewals** are sent every ``(ttl - margin) / 3`` seconds, so two can fail without the fence
  falling; a failed one is retried at that pace, each bounded by the etcd client's timeout.
- ``wait_writable`` returns at once while writable, else when the fence lifts.

The node runs it with etcd membership (``etcd_member.py``); ``settle.ClusterGate.may_write`` puts
the fence in front of every turn.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Final

import trio

from .etcd import Etcd, EtcdError, EtcdUnavailable

__all__ = ["DEFAULT_MARGIN_SECONDS", "DEFAULT_TTL_SECONDS", "LeaseSettings", "Liveness"]

log = logging.getLogger("server.cluster")

#: the liveness lease's TTL and the fencing margin (``actors serve --lease-ttl/--lease-margin``)
DEFAULT_TTL_SECONDS: Final = 10
DEFAULT_MARGIN_SECONDS: Final = 3.0
#: etcd's smallest TTL with its default election timeout (it raises smaller ones to this)
MIN_TTL_SECONDS: Final = 2


@dataclass(frozen=True, slots=True)
class LeaseSettings:
    ttl: int = DEFAULT_TTL_SECONDS
    margin: float = DEFAULT_MARGIN_SECONDS

    def __post_init__(self) -> None:
        if self.ttl < MIN_TTL_SECONDS:
            raise ValueError(
                f"the lease TTL must be at least {MIN_TTL_SECONDS} s (etcd's minimum), not {self.ttl}"
            )
        if not 0 < self.margin < self.ttl:
            raise ValueError(f"the fencing margin must be in (0, ttl), not {self.margin}")

    @property
    def fence_after(self) -> float:
        """Seconds after the last successful keep-alive was sent that writes stop."""
        return self.ttl - self.margin

    @property
    def renew_every(self) -> float:
        return self.fence_after / 3


class Liveness:
    """Keeps ``alive/<node_id>`` under a lease and says whether this node may write (see above)."""

    def __init__(self, etcd: Etcd, node_id: str, settings: LeaseSettings = LeaseSettings()) -> None:
        self._etcd = etcd
        self.key = f"alive/{node_id}"
        self.settings = settings
        self.lease: int | None = None
        #: monotonic time the last successful keep-alive (or grant) was sent; -inf before the first
        self._renewed_sent = float("-inf")
        self._lifted = trio.Event()

    @property
    def fence_at(self) -> float:
        """When (trio time) the fence falls unless a keep-alive succeeds first."""
        return self._renewed_sent + self.settings.fence_after

    @property
    def writable(self) -> bool:
        return trio.current_time() < self.fence_at

    async def wait_writable(self) -> None:
        while not self.writable:
            await self._lifted.wait()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Register, then renew until cancelled; ``started`` once the node is writable the first time.
        Revokes the lease when cancelled (a clean stop shows the node down at once)."""
        started = False
        try:
            while True:
                sent = trio.current_time()
                try:
                    await self._renew()
                except (EtcdUnavailable, EtcdError) as exc:
                    fenced = "" if self.writable else "; fenced: no turns until a renewal succeeds"
                    log.warning(
                        f"liveness renewal failed{fenced}", extra={"event": "lease_failed", "error": str(exc)}
                    )
                else:
                    self._renewed(sent)
                    if not started:
                        started = True
                        task_status.started()
                # fenced: try again sooner, so writes resume soon after etcd answers again
                pace = self.settings.renew_every if self.writable else min(self.settings.renew_every, 0.25)
                await trio.sleep_until(sent + pace)
        finally:
            if self.lease is not None:
                with trio.CancelScope(shield=True), trio.move_on_after(1.0):
                    try:
                        await self._etcd.revoke_lease(self.lease)
                    except (EtcdUnavailable, EtcdError):
                        pass  # it expires by itself

    async def _renew(self) -> None:
        if self.lease is not None and await self._etcd.keep_alive_once(self.lease) > 0:
            return
        if self.lease is not None:
            log.warning("liveness lease lost; registering again", extra={"event": "lease_lost"})
        self.lease = None
        lease = await self._etcd.grant_lease(self.settings.ttl)
        await self._etcd.put(self.key, b"", lease=lease)
        self.lease = lease

    def _renewed(self, sent: float) -> None:
        was_writable = self.writable
        self._renewed_sent = max(self._renewed_sent, sent)
        if not was_writable:
            log.info("liveness renewed: writing again", extra={"event": "fence_lifted"})
            lifted, self._lifted = self._lifted, trio.Event()
            lifted.set()
