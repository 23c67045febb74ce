"""Membership from a file: which nodes form the cluster, where they are reached, and their secret.

    secret = "a long random string"     # shared by the nodes; ACTORS_CLUSTER_SECRET overrides it
    epoch = 1                           # optional; ``actors cluster apply`` raises it at each change
    [[nodes]]
    id = "n1"
    url = "http://127.0.0.1:8081"       # where the other nodes and the SDK reach this node
    [[nodes]]
    id = "n2"
    url = "http://127.0.0.1:8082"

Guarantees
- :func:`load_membership` returns a valid :class:`Membership` or raises :class:`ClusterFileError`
  with one line naming the problem (the file cannot be read, is not TOML, has an unknown key, a node
  without ``id`` or ``url``, duplicate ids or URLs, a URL that is not ``http(s)://host:port``, a
  missing or short secret, a ``--node-id`` the file does not list). ``actors serve`` prints that line
  and exits 2 before binding anything.
- Every node that reads the same file computes the same :attr:`Membership.digest` (of the sorted
  ``(id, url)`` pairs, not of the file's bytes: order, comments and the secret do not matter). Peer
  links refuse a node whose digest differs, so two nodes never disagree about who owns an object
  without noticing.
- The epoch of a file membership is the file's ``epoch`` (default ``FILE_EPOCH``, 1). A running
  file membership changes only by ``actors cluster apply`` (a signed document, ``applied.py``;
  ``file_member.py``); with etcd it changes by joins and leaves, the epoch being the membership
  record's revision (``etcd_member.py``). A higher epoch wins.

Prior art: Orleans' membership table and Akka's seed nodes list members with their addresses;
the liveness of each member is the peer links' business (``links.py``).
"""

from __future__ import annotations

import hashlib
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

from actors.placement import ClusterMap

__all__ = [
    "FILE_EPOCH",
    "MIN_SECRET_BYTES",
    "SECRET_VARIABLE",
    "ClusterFileError",
    "Member",
    "Membership",
    "load_membership",
    "members_digest",
    "parse_member",
    "parse_membership",
]

#: the epoch of a membership read from a file
FILE_EPOCH: Final = 1
#: the shortest secret accepted (an HMAC key shorter than this is guessable offline)
MIN_SECRET_BYTES: Final = 16
#: the environment variable that overrides the file's secret
SECRET_VARIABLE: Final = "ACTORS_CLUSTER_SECRET"
#: bytes a node id may have (the wire protocol's label limit)
MAX_NODE_ID_BYTES: Final = 256
#: nodes one cluster file may list (the wire protocol's Welcome carries at most 4,096)
MAX_NODES: Final = 1000


class ClusterFileError(ValueError):
    """The cluster file or the node id is wrong; the message is one line naming the problem."""


@dataclass(frozen=True, slots=True)
class Member:
    """One node of the cluster: its stable id and the base URL the others and the SDK reach it at."""

    id: str
    url: str


@dataclass(frozen=True, slots=True)
class Membership:
    """The cluster as this node knows it (see the module docstring for the guarantees)."""

    members: tuple[Member, ...]  # sorted by id
    secret: bytes
    self_id: str
    epoch: int = FILE_EPOCH
    #: members handing their objects off before they leave (etcd): reachable, but they own nothing
    leaving: frozenset[str] = frozenset()
    #: where a membership that changes at run time comes from (``"etcd <prefix>"``); None for
    #: a file, whose membership is fixed for the life of the process
    source: str | None = None

    @property
    def dynamic(self) -> bool:
        """Whether the membership can change while the node runs (etcd)."""
        return self.source is not None

    @property
    def link_digest(self) -> str:
        """What the link handshake compares: the membership's digest for a file (two nodes with
        different files never link), the source's for etcd (nodes link across epochs and agree on
        the newest through etcd; see ``links.py``)."""
        if self.source is None:
            return self.digest
        return hashlib.sha256(f"dynamic\0{self.source}".encode()).hexdigest()

    @property
    def link_epoch(self) -> int:
        """The epoch the link handshake compares (0 for etcd: epochs travel on the link instead)."""
        return 0 if self.source is not None else self.epoch

    @property
    def digest(self) -> str:
        """SHA-256 of the sorted ``id NUL url`` lines: equal for equal memberships."""
        return members_digest(self.members)

    @property
    def peers(self) -> tuple[Member, ...]:
        """Every member but this node."""
        return tuple(m for m in self.members if m.id != self.self_id)

    @property
    def me(self) -> Member:
        return next(m for m in self.members if m.id == self.self_id)

    def member(self, node_id: str) -> Member | None:
        return next((m for m in self.members if m.id == node_id), None)

    @property
    def owners(self) -> tuple[Member, ...]:
        """The members that own a share of the objects: every member but those leaving."""
        return tuple(m for m in self.members if m.id not in self.leaving)

    def cluster_map(self) -> ClusterMap:
        """The placement map: every member that owns a share, by id, with the membership's epoch."""
        return ClusterMap(tuple((m.id, m.url) for m in self.owners), self.epoch)


def members_digest(members: tuple[Member, ...]) -> str:
    """The digest of a membership with these ``members`` (sorted by id)."""
    text = "\n".join(f"{m.id}\0{m.url}" for m in members)
    return hashlib.sha256(text.encode()).hexdigest()


def load_membership(path: Path, node_id: str | None, environ: Mapping[str, str] = os.environ) -> Membership:
    """Read and check the cluster file at ``path`` for node ``node_id`` (ClusterFileError)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ClusterFileError(f"cluster file {path}: cannot read it: {exc}") from None
    return parse_membership(text, node_id, environ, source=str(path))


def parse_membership(
    text: str,
    node_id: str | None,
    environ: Mapping[str, str] = os.environ,
    *,
    source: str = "cluster file",
    need_node_id: bool = True,
) -> Membership:
    """Membership from the TOML ``text`` of a cluster file (ClusterFileError names the problem).
    Without ``need_node_id`` (a tool that reads the file, not a node), ``node_id`` may be None."""
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ClusterFileError(f"{source}: not valid TOML: {exc}") from None
    unknown = set(document) - {"secret", "epoch", "nodes"}
    if unknown:
        raise ClusterFileError(
            f"{source}: unknown key {sorted(unknown)[0]!r} (expected secret, epoch, [[nodes]])"
        )
    epoch = document.get("epoch", FILE_EPOCH)
    if type(epoch) is not int or not 1 <= epoch < 2**62:
        raise ClusterFileError(f"{source}: epoch must be a positive integer")
    secret = environ.get(SECRET_VARIABLE) or document.get("secret")
    if secret is None or secret == "":
        raise ClusterFileError(f'{source}: no secret (set secret = "..." or {SECRET_VARIABLE})')
    if type(secret) is not str:
        raise ClusterFileError(f"{source}: secret must be a string")
    if len(secret.encode()) < MIN_SECRET_BYTES:
        raise ClusterFileError(f"{source}: the secret is shorter than {MIN_SECRET_BYTES} bytes")
    nodes = document.get("nodes")
    if type(nodes) is not list or not nodes:
        raise ClusterFileError(f"{source}: no [[nodes]] tables")
    if len(nodes) > MAX_NODES:
        raise ClusterFileError(f"{source}: {len(nodes)} nodes; at most {MAX_NODES}")
    members = [parse_member(entry, f"{source}: nodes[{index}]") for index, entry in enumerate(nodes)]
    for attr in ("id", "url"):
        seen: set[str] = set()
        for member in members:
            value = getattr(member, attr)
            if value in seen:
                raise ClusterFileError(f"{source}: duplicate node {attr} {value!r}")
            seen.add(value)
    members.sort(key=lambda m: m.id)
    if node_id is None and not need_node_id:  # a tool reading the file: it is no node
        node_id = members[0].id
    if node_id is None or node_id == "":
        raise ClusterFileError(f"{source}: --node-id (ACTORS_NODE_ID) is required with --cluster")
    if node_id not in {m.id for m in members}:
        listed = ", ".join(m.id for m in members)
        raise ClusterFileError(f"{source}: node id {node_id!r} is not in the file (it lists {listed})")
    return Membership(tuple(members), secret.encode(), node_id, epoch=epoch)


def parse_member(entry: Any, where: str) -> Member:
    """One ``{id, url}`` table of a cluster file (or of an applied membership; ``applied.py``)."""
    if type(entry) is not dict:
        raise ClusterFileError(f"{where} must be a table with id and url")
    unknown = set(entry) - {"id", "url"}
    if unknown:
        raise ClusterFileError(f"{where}: unknown key {sorted(unknown)[0]!r}")
    node_id, url = entry.get("id"), entry.get("url")
    if type(node_id) is not str or not node_id:
        raise ClusterFileError(f"{where}: id must be a non-empty string")
    if len(node_id.encode()) > MAX_NODE_ID_BYTES or not node_id.isprintable() or node_id != node_id.strip():
        raise ClusterFileError(
            f"{where}: id {node_id!r} must be 1 to {MAX_NODE_ID_BYTES} bytes of printable text"
        )
    if type(url) is not str:
        raise ClusterFileError(f"{where} ({node_id}): url must be a string")
    return Member(node_id, _check_url(url, f"{where} ({node_id})"))


def _check_url(url: str, where: str) -> str:
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        parts, port = None, None
    if (
        parts is None
        or parts.scheme not in ("http", "https")
        or not parts.hostname
        or port is None
        or parts.path not in ("", "/")
        or parts.query
        or parts.fragment
        or parts.username is not None
    ):
        raise ClusterFileError(f"{where}: url must look like http(s)://host:port, not {url!r}")
    return f"{parts.scheme}://{parts.netloc}"
