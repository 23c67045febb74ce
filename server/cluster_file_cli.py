"""``actors cluster apply`` and ``actors cluster leave --cluster``: change a file membership live.

    actors cluster apply FILE [--discard-data NODE ...]
    actors cluster leave NODE --cluster FILE [--wait SECONDS]

``apply`` gives the running nodes the membership FILE lists, as one change with a new epoch. It asks
every node of the current membership and of FILE (by the URLs they list) for its state and refuses
(exit 2) unless every one answers, they all run the same epoch, and each has handed off everything
it held for others (settled): changes go one at a time, so that a node creating an object knows
whom to ask for it (``cluster/file_member.py``). A node FILE drops must have left first
(``leave``), or be named with ``--discard-data`` (its objects start empty elsewhere; it may be down).
It then signs the change with the cluster secret, sends it to every node, and writes the new epoch
into FILE (``epoch = N``), so that a node restarted with FILE agrees. New nodes are started first,
with FILE (they serve nothing they do not store until the change reaches them).

``leave`` marks NODE leaving (it owns nothing from the new epoch on and hands its objects to their
new owners), waits until it has handed off everything, then applies FILE without NODE (its
``[[nodes]]`` table is removed from FILE) and NODE stops (exit 0).

Each line printed says what happened; the exit status is 0 done, 2 refused, 3 a node answered with
an error, 4 a node unreachable, 5 NODE still had objects when ``--wait`` ran out.
"""

from __future__ import annotations

import argparse
import collections
import re
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .admin_cli import EXIT_OK, EXIT_USAGE, Failure, Node
from .cluster.applied import Applied, sign
from .cluster.membership import ClusterFileError, Member, Membership, members_digest, parse_membership

__all__ = ["EXIT_WAITED", "apply_file", "leave_node", "run"]

EXIT_WAITED = 5
#: seconds between looks at a leaving node's progress
POLL_SECONDS = 0.5


class Refused(Failure):
    exit_status = EXIT_USAGE


@dataclass(frozen=True, slots=True)
class _State:
    """One node's own row of ``GET /v1/cluster/nodes`` and the membership it runs."""

    node: str
    epoch: int
    settled: bool
    to_move: int
    members: tuple[Member, ...]
    leaving: frozenset[str]

    @property
    def digest(self) -> str:
        return members_digest(self.members)


def run(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    connect = {"token": args.token or environ.get("ACTORS_TOKEN") or None, "timeout": args.timeout}
    connect["ca"] = args.ca or environ.get("ACTORS_CA") or None
    try:
        if args.verb == "apply":
            apply_file(Path(args.file), connect, discard=frozenset(args.discard_data or ()), environ=environ)
        else:
            wait = float("inf") if args.wait is None else args.wait
            if not leave_node(Path(args.cluster), args.node, connect, wait=wait, environ=environ):
                return EXIT_WAITED
    except (Failure, ClusterFileError) as failure:
        print(f"actors cluster {args.verb}: {failure}", file=sys.stderr)
        return failure.exit_status if isinstance(failure, Failure) else EXIT_USAGE
    return EXIT_OK


def apply_file(
    path: Path,
    connect: dict[str, Any],
    *,
    discard: frozenset[str] = frozenset(),
    leaving: frozenset[str] = frozenset(),
    environ: Mapping[str, str],
) -> int:
    """Apply the membership in ``path`` (with ``leaving`` marked); the new epoch (or the current one
    if nothing changes). Raises Failure or ClusterFileError."""
    text = _read(path)
    wanted = parse_membership(text, None, environ, source=str(path), need_node_id=False)
    states = _states(wanted.members, connect)
    current = _current(states, wanted)
    states.update(_states([m for m in current.members if m.id not in states], connect, discard))
    _check(wanted, current, states, discard, leaving)
    new_ids = {m.id for m in wanted.members}
    if wanted.digest == current.digest and leaving == current.leaving:
        print(f"nothing to change: the cluster runs this membership (epoch {current.epoch})")
        _write_epoch(path, text, current.epoch)
        return current.epoch
    applied = Applied(
        current.epoch + 1,
        wanted.members,
        leaving,
        current.members,
        current.leaving,
        frozenset(discard & ({m.id for m in current.members} - new_ids)),
    )
    body = {"membership": applied.document(), "mac": sign(wanted.secret, applied)}
    urls = {m.id: m.url for m in (*current.members, *wanted.members)}
    failed: list[str] = []
    for node_id in sorted(urls):
        if node_id in discard:
            continue
        try:
            _node(urls[node_id], connect).json("PUT", "/v1/cluster/membership", body)
            print(f"{node_id}\tepoch {applied.epoch}")
        except Failure as failure:
            failed.append(node_id)
            print(f"{node_id}\tnot reached: {failure} (it reads the change from its peers)", file=sys.stderr)
    _write_epoch(path, text, applied.epoch)
    if len(failed) == len(urls):
        raise Failure("no node took the change")
    return applied.epoch


def leave_node(
    path: Path, node_id: str, connect: dict[str, Any], *, wait: float, environ: Mapping[str, str]
) -> bool:
    """Hand every object of ``node_id`` off, then drop it from ``path`` and the cluster. False if
    ``wait`` seconds passed first (the node stays, leaving)."""
    wanted = parse_membership(_read(path), None, environ, source=str(path), need_node_id=False)
    member = wanted.member(node_id)
    if member is None:
        raise Refused(f"{path} does not list {node_id}")
    current = _current(_states(wanted.members, connect), wanted)
    epoch = current.epoch
    if node_id not in current.leaving:
        epoch = apply_file(path, connect, leaving=current.leaving | {node_id}, environ=environ)
    give_up = time.monotonic() + wait
    printed = None
    while True:
        state = _states([member], connect)[node_id]
        line = f"{node_id}\tto_move={state.to_move}"
        if line != printed:
            print(line)
            printed = line
        if state.epoch >= epoch and state.settled:
            break
        if time.monotonic() >= give_up:
            return False
        time.sleep(POLL_SECONDS)
    _write_without(path, node_id)
    apply_file(path, connect, leaving=current.leaving - {node_id}, environ=environ)
    print(f"{node_id}\tleft")
    return True


#### Asking the nodes


def _node(url: str, connect: dict[str, Any]) -> Node:
    return Node.from_url(url, token=connect["token"], timeout=connect["timeout"], ca=connect["ca"])


def _states(members: Any, connect: dict[str, Any], skip: frozenset[str] = frozenset()) -> dict[str, _State]:
    states = {}
    for member in members:
        if member.id in skip:
            continue
        reply = _node(member.url, connect).json("GET", "/v1/cluster/nodes")
        try:
            me = next(row for row in reply["nodes"] if row["node"] == reply["self"])
            rows = reply["nodes"]
            states[member.id] = _State(
                node=reply["self"],
                epoch=int(reply["epoch"]),
                settled=bool(me.get("settled", False)),
                to_move=int(me.get("to_move", 0)),
                members=tuple(sorted((Member(r["node"], r["url"]) for r in rows), key=lambda m: m.id)),
                leaving=frozenset(r["node"] for r in rows if r.get("state") == "leaving"),
            )
        except (KeyError, TypeError, ValueError, StopIteration):
            raise Failure(f"{member.url}: not the reply of a node in a cluster") from None
        if states[member.id].node != member.id:
            raise Refused(f"{member.url} is node {states[member.id].node}, not {member.id}")
    return states


def _current(states: dict[str, _State], wanted: Membership) -> _State:
    """The membership the cluster runs: the newest epoch; at equal epochs, not the file's (a node
    just started with the new file reports it before it was applied), then the most nodes'."""
    votes = collections.Counter((s.epoch, s.digest) for s in states.values())
    return max(states.values(), key=lambda s: (s.epoch, s.digest != wanted.digest, votes[s.epoch, s.digest]))


def _check(
    wanted: Membership,
    current: _State,
    states: dict[str, _State],
    discard: frozenset[str],
    leaving: frozenset[str],
) -> None:
    running = {m.id for m in current.members}
    behind = sorted(node for node, s in states.items() if node in running and s.epoch != current.epoch)
    if behind:
        raise Refused(f"{', '.join(behind)} not at epoch {current.epoch} yet; try again in a moment")
    moving = sorted(node for node, s in states.items() if not s.settled)
    if moving:
        counts = ", ".join(f"{node} ({states[node].to_move} to move)" for node in moving)
        raise Refused(f"the last change is still moving objects: {counts}; try again when it is done")
    wanted_ids = {m.id for m in wanted.members}
    for member in current.members:
        if member.id in wanted_ids or member.id in discard:
            continue
        if member.id not in current.leaving:
            raise Refused(
                f"{member.id} is not in the file but still owns objects: run `actors cluster leave "
                f"{member.id} --cluster FILE` first (or --discard-data {member.id} to give them away)"
            )
    if not wanted_ids - leaving:
        raise Refused("every node would be leaving: one must own the objects")


#### The file


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise Refused(f"cannot read {path}: {exc}") from None


_EPOCH_LINE = re.compile(r"^\s*epoch\s*=.*$", re.MULTILINE)


def _write_epoch(path: Path, text: str, epoch: int) -> None:
    """Set FILE's top-level ``epoch`` (comments and everything else kept)."""
    head, table, rest = text.partition("\n[")
    if _EPOCH_LINE.search(head):
        head = _EPOCH_LINE.sub(f"epoch = {epoch}", head, count=1)
    else:
        head = f"epoch = {epoch}\n" + head
    _replace(path, head + table + rest)


def _write_without(path: Path, node_id: str) -> None:
    """Remove the ``[[nodes]]`` table whose id is ``node_id`` from FILE."""
    text = _read(path)
    blocks = re.split(r"(?m)^(?=\s*\[\[nodes\]\])", text)
    pattern = re.compile(r'(?m)^\s*id\s*=\s*["\']' + re.escape(node_id) + r'["\']\s*(#.*)?$')
    kept = [b for b in blocks if not (b.lstrip().startswith("[[nodes]]") and pattern.search(b))]
    if len(kept) != len(blocks) - 1:
        raise Refused(f"cannot find exactly one [[nodes]] table with id {node_id!r} in {path}")
    _replace(path, "".join(kept))


def _replace(path: Path, text: str) -> None:
    temporary = path.with_name(path.name + ".new")
    temporary.write_text(text, encoding="utf-8")
    temporary.replace(path)
