"""A node's life in a membership from a file, changed at run time by ``actors cluster apply``.

A file membership starts from the cluster file. It changes only through an applied membership
(``applied.py``): a document signed with the cluster secret, which ``actors cluster apply`` sends to
every node and which nodes pass on to each other (a newer epoch is announced on the node links, and
a node that sees one reads the document from its peers: the ``membership`` operation).

Guarantees
- **Start-up.** A node that adopted an applied membership starts from it (saved in its data folder,
  ``cluster.json``), else from its cluster file. A file at the same epoch as the saved membership but
  with other members is refused (``ClusterFileError``): two memberships never share an epoch. A file
  at a newer epoch is only logged: only a signed change is adopted, and the node reads it from its
  peers. A node whose saved membership no longer lists it (it left, or was given away) refuses to
  start.
- **Adopting.** An applied membership is adopted only if it is signed and newer than the current one,
  and only after it is saved durably (written, fsynced, renamed), so a node never goes back to an
  older epoch across a restart.
- **Whom a new owner asks.** ``apply`` changes the membership only once every node had handed off
  all it held for others (settled), so during an epoch an object is stored by its owner or by its
  owner under the previous epoch only. The gate (``settle.py``) therefore asks, before creating an
  object it does not store, the node that owned its slot under the previous epoch, until that node
  says it has settled (``settled``, saved by the hearer). Under a membership that was never applied
  (the cluster file as written) no previous epoch is known: the node asks every peer that has not
  said it settled. A peer's link comes up only if its file agrees (same epoch, same members), so a
  node started with an edited file creates nothing until the change is applied.
- **Leaving** is the etcd membership's: a member marked leaving owns nothing, hands every object
  off, then reports settled; ``actors cluster leave --wait`` then applies the membership without
  it, and the node stops (exit 0). A node dropped while not leaving (``--discard-data``) stops too.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Container
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import trio

from actors.errors import ActorError, InvalidArgument
from actors.placement import SLOTS

from ..errors import Conflict, Forbidden
from .applied import Applied, NotSigned, verify
from .membership import ClusterFileError, Membership

if TYPE_CHECKING:
    from .handoff import Mover
    from .router import Cluster
    from .settle import ClusterGate

__all__ = ["MEMBERSHIP_OPERATION", "SETTLED_OPERATION", "STATE_FILE", "FileMember"]

log = logging.getLogger("server.cluster")

#: the applied membership and the settled peers, in the node's data folder
STATE_FILE: Final = "cluster.json"
#: the node operation that returns this node's applied membership (signed) or None
MEMBERSHIP_OPERATION: Final = "membership"
#: the node operation by which a peer says it holds nothing of others' under an epoch
SETTLED_OPERATION: Final = "settled"
#: how often a settled node tells the peers that have not heard it yet
SETTLED_EVERY_SECONDS: Final = 0.5
#: bound on asking one peer (its membership, or telling it settled)
PEER_TIMEOUT_SECONDS: Final = 5.0

_EVERY_SLOT: Final = range(SLOTS)


class FileMember:
    """This node as a member of a file membership (see the module docstring)."""

    def __init__(self, file_membership: Membership, data_dir: Path) -> None:
        self._file = file_membership
        self.secret = file_membership.secret
        self.self_id = file_membership.self_id
        self._path = data_dir / STATE_FILE
        #: the newest applied membership this node adopted, and its signature
        self.applied: Applied | None = None
        self._mac = ""
        #: peer id -> the newest epoch under which it said it had settled
        self.settled: dict[str, int] = {}
        #: set when this node has left (or was dropped): the node stops
        self.done = trio.Event()
        self.outcome = ""
        self._router: Cluster | None = None
        self._gate: ClusterGate | None = None
        self._saving = trio.Lock()

    #### Start-up

    def start(self) -> Membership:
        """The membership to start with (reads ``cluster.json``; ``ClusterFileError``)."""
        file = self._file
        try:
            state = json.loads(self._path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return file
        except (OSError, ValueError) as exc:
            raise ClusterFileError(f"{self._path}: cannot read the saved membership: {exc}") from None
        if type(state) is not dict:
            raise ClusterFileError(f"{self._path}: not a saved membership")
        settled = state.get("settled", {})
        if type(settled) is dict:
            self.settled = {str(k): v for k, v in settled.items() if type(v) is int}
        if state.get("membership") is None:  # only what peers said: the file was never changed
            return file
        try:
            applied = verify(self.secret, state.get("membership"), state.get("mac"))
        except ClusterFileError as exc:
            raise ClusterFileError(
                f"{self._path}: {exc} (was the cluster secret changed? the nodes must keep it)"
            ) from None
        if applied.epoch == file.epoch and applied.digest != file.digest:
            raise ClusterFileError(
                f"the cluster file and the membership this node adopted (saved in {self._path}) are both "
                f"epoch {applied.epoch} but list other nodes: change a running cluster with "
                "`actors cluster apply FILE`, which gives each change a new epoch"
            )
        if applied.epoch < file.epoch:  # it missed a change: its peers give it the signed one
            log.warning(
                "the cluster file is newer than the membership this node adopted; it starts with the "
                "one it adopted and takes the newer one from its peers",
                extra={"event": "file_ahead", "file_epoch": file.epoch, "epoch": applied.epoch},
            )
        if applied.membership(self.secret, self.self_id).member(self.self_id) is None:
            raise ClusterFileError(
                f"node {self.self_id} left the cluster at epoch {applied.epoch} (saved in {self._path}); "
                "to join again, start it with an empty data folder and apply a file that lists it"
            )
        self.applied, self._mac = applied, str(state["mac"])
        return applied.membership(self.secret, self.self_id)

    @property
    def changed(self) -> bool:
        """Whether a membership was ever applied to this node (else: the cluster file, unchanged)."""
        return self.applied is not None

    #### Following changes

    async def run(self, router: Cluster, gate: ClusterGate, mover: Mover) -> None:
        """Keep the gate's view of whom to ask true, and tell peers once settled (until cancelled)."""
        self._router, self._gate = router, gate
        router.listen(self._membership_changed)
        gate.set_others(self.others())
        sent: dict[str, int] = {}
        while True:
            epoch = router.epoch
            if mover.done:
                for peer, link in list(router.links.items()):
                    if sent.get(peer) == epoch or not link.up:
                        continue
                    try:
                        with trio.fail_after(PEER_TIMEOUT_SECONDS):
                            await link.call(
                                "", "", SETTLED_OPERATION, (), {"epoch": epoch, "node": self.self_id}
                            )
                        sent[peer] = epoch
                    except (ActorError, trio.TooSlowError):
                        pass  # told again on the next round
            await trio.sleep(SETTLED_EVERY_SECONDS)

    def others(self) -> dict[str, Container[int]]:
        """For each peer that may still store objects of slots this node owns: those slots."""
        router = self._router
        assert router is not None
        membership, applied = router.membership, self.applied
        if applied is not None and applied.epoch != membership.epoch:
            applied = None
        peers = {m.id for m in membership.peers}
        previous = None
        if applied is not None:
            previous = applied.previous_map()
            peers |= {m.id for m in applied.previous_members if m.id != self.self_id}
        result: dict[str, Container[int]] = {}
        for peer in peers:
            if self.settled.get(peer, 0) >= membership.epoch:
                continue
            if applied is None:
                # The file as written (no previous epoch known): a peer may hold anything until it
                # says otherwise over a link, which only comes up if its file agrees with ours.
                result[peer] = _EVERY_SLOT
            elif peer not in applied.discarded:
                slots = previous.slots_of(peer) if previous is not None else ()
                if slots:
                    result[peer] = frozenset(slots)
        return result

    def _membership_changed(self, old: Membership, new: Membership) -> None:
        if self._gate is not None:
            self._gate.set_others(self.others())
        if new.member(self.self_id) is None:
            self.outcome = "left" if self.self_id in old.leaving else "removed"
            log.log(
                logging.INFO if self.outcome == "left" else logging.ERROR,
                "this node left the cluster: every object was handed off"
                if self.outcome == "left"
                else "this node was dropped from the cluster; stopping",
                extra={"event": self.outcome, "epoch": new.epoch},
            )
            self.done.set()

    #### What peers and the operator ask

    def document(self) -> dict[str, Any] | None:
        """This node's applied membership, signed (the ``membership`` operation), or None."""
        if self.applied is None:
            return None
        return {"membership": self.applied.document(), "mac": self._mac}

    async def heard_settled(self, kwargs: dict[str, Any]) -> bool:
        """A peer says it holds nothing of others' under ``epoch`` (the ``settled`` operation)."""
        peer, epoch = kwargs.get("node"), kwargs.get("epoch")
        if type(peer) is not str or type(epoch) is not int:
            raise InvalidArgument('settled takes {"node": str, "epoch": int}')
        if epoch > self.settled.get(peer, 0):
            self.settled[peer] = epoch
            await self._save()
            if self._gate is not None:
                self._gate.set_others(self.others())
        return True

    async def apply(self, body: Any) -> dict[str, Any]:
        """Adopt the signed membership in ``body`` (``PUT /v1/cluster/membership``)."""
        router = self._router
        if type(body) is not dict or set(body) != {"membership", "mac"}:
            raise InvalidArgument('the body must be {"membership": {...}, "mac": "<hex>"}')
        try:
            applied = verify(self.secret, body["membership"], body["mac"])
        except NotSigned as exc:
            raise Forbidden(str(exc)) from None
        except ClusterFileError as exc:
            raise InvalidArgument(str(exc)) from None
        assert router is not None
        if applied.epoch < router.epoch:
            raise Conflict(f"this node runs epoch {router.epoch}, newer than {applied.epoch}")
        if applied.epoch == router.epoch:
            if router.membership.digest != applied.digest or router.membership.leaving != applied.leaving:
                raise Conflict(f"this node runs another membership under epoch {applied.epoch}")
            return {"epoch": router.epoch, "adopted": False}
        await self._take(applied, body["mac"])
        return {"epoch": router.epoch, "adopted": True}

    async def read(self) -> Membership:
        """The newest membership this node or a peer has (``router.refresh``)."""
        router = self._router
        assert router is not None
        found: list[tuple[Applied, str]] = []

        async def ask(link: Any) -> None:
            try:
                with trio.fail_after(PEER_TIMEOUT_SECONDS):
                    reply = await link.call("", "", MEMBERSHIP_OPERATION, (), {})
                if reply is not None:
                    found.append(
                        (verify(self.secret, reply.get("membership"), reply.get("mac")), reply["mac"])
                    )
            except (ActorError, trio.TooSlowError, ClusterFileError, AttributeError) as exc:
                log.debug("a peer's membership could not be read", extra={"error": repr(exc)})

        async with trio.open_nursery() as nursery:
            for link in list(router.links.values()):
                if link.up:
                    nursery.start_soon(ask, link)
        newest = max(found, key=lambda pair: pair[0].epoch, default=None)
        if newest is not None and newest[0].epoch > router.epoch:
            applied, mac = newest
            await self._take(applied, mac, adopt=False)
            return applied.membership(self.secret, self.self_id)
        return router.membership

    async def _take(self, applied: Applied, mac: str, *, adopt: bool = True) -> None:
        """Save ``applied`` durably, then make it this node's (and adopt it, unless the router will)."""
        async with self._saving:
            router = self._router
            assert router is not None
            if applied.epoch <= router.epoch or (self.applied and applied.epoch <= self.applied.epoch):
                return
            self.applied, self._mac = applied, mac
            await self._save_locked()
        if adopt:
            router.adopt(applied.membership(self.secret, self.self_id))

    async def _save(self) -> None:
        async with self._saving:
            await self._save_locked()

    async def _save_locked(self) -> None:
        state: dict[str, Any] = {"membership": None, "mac": None, "settled": dict(self.settled)}
        if self.applied is not None:
            state.update(membership=self.applied.document(), mac=self._mac)
        await trio.to_thread.run_sync(_write_durably, self._path, json.dumps(state, indent=1))


def _write_durably(path: Path, text: str) -> None:
    temporary = path.with_name(path.name + ".new")
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(temporary, "w", encoding="utf-8") as file:
        file.write(text)
        file.flush()
        os.fsync(file.fileno())
    os.rename(temporary, path)
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
