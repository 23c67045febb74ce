"""A membership change made by ``actors cluster apply``: one signed document that every node adopts.

A file membership changes only through this document. ``actors cluster apply`` (``cluster_file_cli.py``)
builds it from the new cluster file and the membership the nodes run, signs it with the cluster
secret, and sends it to every node; a node that missed it reads it from a peer that has it (a
newer epoch travels on the node links). The document says:

    {"epoch": 3,                                       # one more than the epoch it replaces
     "members": [{"id": "n1", "url": "http://..."}, ...],
     "leaving": ["n3"],                                # members handing their objects off
     "previous": {"members": [...], "leaving": [...]}, # the membership of epoch 2, which had settled
     "discarded": ["n5"]}                              # dropped with --discard-data: nothing to ask

Guarantees
- :func:`verify` accepts a document only with a valid HMAC-SHA256 under the cluster secret (compared
  in constant time) over its canonical JSON, so nodes adopt only what a holder of the secret made;
  the peer a document came from does not matter.
- A document is well formed or refused with ``ClusterFileError`` naming the problem (ids and URLs as
  in a cluster file, no duplicates, ``leaving`` and ``discarded`` naming members of the right set).
- ``previous`` is the membership the change started from. ``apply`` makes a change only once every
  node of that membership had handed off everything it held for other nodes (settled), so during the
  new epoch an object can only be stored by its new owner or by its owner under ``previous``: that
  is what lets the new owner know whom to ask (``file_member.py``).
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass
from typing import Any, Final

from actors.placement import ClusterMap

from .membership import MAX_NODES, ClusterFileError, Member, Membership, members_digest, parse_member

__all__ = ["Applied", "NotSigned", "canonical", "sign", "verify"]

#: separates these signatures from every other use of the cluster secret (the link handshake's)
_DOMAIN: Final = b"actors membership v1\0"


class NotSigned(ClusterFileError):
    """A well-formed document whose signature is not the cluster secret's."""


@dataclass(frozen=True, slots=True)
class Applied:
    """One applied membership (see the module docstring)."""

    epoch: int
    members: tuple[Member, ...]  # sorted by id
    leaving: frozenset[str]
    previous_members: tuple[Member, ...]
    previous_leaving: frozenset[str]
    discarded: frozenset[str] = frozenset()

    def membership(self, secret: bytes, self_id: str) -> Membership:
        return Membership(self.members, secret, self_id, epoch=self.epoch, leaving=self.leaving)

    def previous_map(self) -> ClusterMap:
        """Who owned each slot under the previous epoch."""
        owners = tuple((m.id, m.url) for m in self.previous_members if m.id not in self.previous_leaving)
        return ClusterMap(owners, self.epoch - 1)

    @property
    def digest(self) -> str:
        return members_digest(self.members)

    def document(self) -> dict[str, Any]:
        def listed(members: tuple[Member, ...]) -> list[dict[str, str]]:
            return [{"id": m.id, "url": m.url} for m in members]

        return {
            "epoch": self.epoch,
            "members": listed(self.members),
            "leaving": sorted(self.leaving),
            "previous": {"members": listed(self.previous_members), "leaving": sorted(self.previous_leaving)},
            "discarded": sorted(self.discarded),
        }


def canonical(document: dict[str, Any]) -> bytes:
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def sign(secret: bytes, applied: Applied) -> str:
    """The hex HMAC of ``applied``'s canonical document under the cluster secret."""
    return hmac.new(secret, _DOMAIN + canonical(applied.document()), hashlib.sha256).hexdigest()


def verify(secret: bytes, document: Any, mac: Any) -> Applied:
    """The applied membership in ``document`` if ``mac`` signs it (else ``ClusterFileError``)."""
    if type(document) is not dict or type(mac) is not str:
        raise ClusterFileError('an applied membership is {"membership": {...}, "mac": "<hex>"}')
    applied = _parse(document)
    if not hmac.compare_digest(sign(secret, applied), mac):
        raise NotSigned("the membership is not signed with this cluster's secret")
    return applied


def _parse(document: dict[str, Any]) -> Applied:
    unknown = set(document) - {"epoch", "members", "leaving", "previous", "discarded"}
    if unknown:
        raise ClusterFileError(f"applied membership: unknown key {sorted(unknown)[0]!r}")
    epoch = document.get("epoch")
    if type(epoch) is not int or not 2 <= epoch < 2**62:
        raise ClusterFileError("applied membership: epoch must be an integer of at least 2")
    members = _members(document.get("members"), "members")
    previous = document.get("previous")
    if type(previous) is not dict or set(previous) != {"members", "leaving"}:
        raise ClusterFileError('applied membership: previous must be {"members": [...], "leaving": [...]}')
    previous_members = _members(previous["members"], "previous.members")
    ids, previous_ids = {m.id for m in members}, {m.id for m in previous_members}
    leaving = _names(document.get("leaving"), "leaving", ids)
    if leaving == ids:
        raise ClusterFileError("applied membership: every member is leaving; one must own the objects")
    previous_leaving = _names(previous["leaving"], "previous.leaving", previous_ids)
    discarded = _names(document.get("discarded"), "discarded", previous_ids - ids)
    return Applied(epoch, members, leaving, previous_members, previous_leaving, discarded)


def _members(entries: Any, where: str) -> tuple[Member, ...]:
    if type(entries) is not list or not entries or len(entries) > MAX_NODES:
        raise ClusterFileError(f"applied membership: {where} must list 1 to {MAX_NODES} nodes")
    members = [parse_member(entry, f"applied membership: {where}[{i}]") for i, entry in enumerate(entries)]
    for attr in ("id", "url"):
        values = [getattr(m, attr) for m in members]
        if len(set(values)) != len(values):
            raise ClusterFileError(f"applied membership: {where} lists a node {attr} twice")
    return tuple(sorted(members, key=lambda m: m.id))


def _names(names: Any, where: str, allowed: set[str]) -> frozenset[str]:
    if type(names) is not list or not all(type(n) is str and n in allowed for n in names):
        raise ClusterFileError(f"applied membership: {where} must list node ids among {sorted(allowed)}")
    return frozenset(names)
