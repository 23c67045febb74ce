"""``actors cluster``: the members of a cluster, through one of its nodes or from etcd directly.

    actors cluster nodes [--url URL] [--json]
    actors cluster nodes --etcd URL [--etcd-prefix P] [--json]
    actors cluster leave NODE --etcd URL [--wait SECONDS]
    actors cluster remove NODE --etcd URL --discard-data [--force]
    actors cluster apply FILE [--discard-data NODE ...]
    actors cluster leave NODE --cluster FILE [--wait SECONDS]

``nodes --url`` (the default when neither ``--etcd`` nor ``ACTORS_ETCD`` is given) asks a node: one
line per member: id, URL, ``up`` or ``down`` (the asking node's link to it), objects with storage
and objects in memory (and ``epoch=E``, ``to_move=N`` objects it still has to
hand off, and ``leaving``), tab-separated, then a last line with the epoch; ``--json`` prints the node's
``GET /v1/cluster/nodes`` reply as it is. A member that could not answer shows ``?`` for its counts
and its error on stderr. Exit status as ``actors objects``: 0, 2 usage, 3 the node answered with an
error, 4 unreachable.

The ``--etcd`` forms read and change the membership in etcd: ``cluster_etcd_cli.py`` says what they
print and their exit statuses. ``apply`` and ``leave --cluster`` change a membership that comes from a
cluster file, through the nodes: ``cluster_file_cli.py``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping
from typing import Any

from . import cluster_etcd_cli, cluster_file_cli
from .admin_cli import EXIT_OK, Failure, RemoteError, connection_options, node_from_args

__all__ = ["add_cluster_parser", "run"]


def add_cluster_parser(commands: Any) -> None:
    cluster = commands.add_parser(
        "cluster",
        help="inspect and change the members of a cluster",
        description="Inspect the cluster through one of its nodes (any node: each sees every member), "
        "or read and change its membership in etcd (--etcd).",
    )
    verbs = cluster.add_subparsers(dest="verb", metavar="VERB", required=True)
    etcd = _etcd_options()
    nodes = verbs.add_parser(
        "nodes",
        parents=[connection_options(), etcd],
        help="list the members, their liveness (and objects, from a node)",
        description=__doc__.split("\n\n")[2] if __doc__ else None,
    )
    nodes.add_argument("--json", action="store_true", help="JSON: the node's reply as it is, or etcd's view")

    leave = verbs.add_parser(
        "leave",
        parents=[etcd],
        help="move a member's objects to the others, then drop it (etcd, or --cluster FILE)",
        description="Mark NODE leaving: it owns nothing from the new epoch on and hands its objects to "
        "the other members, then it is dropped (with --cluster: from FILE too) and stops. Waits until "
        "it is gone, printing progress. Exit: 0 gone, 2 refused, 4 etcd or a node unreachable, 5 still "
        "there after --wait.",
    )
    leave.add_argument("node", metavar="NODE")
    leave.add_argument("--cluster", metavar="FILE", help="the cluster file (a file membership)")
    _node_access(leave)

    apply = verbs.add_parser(
        "apply",
        help="give the running nodes the membership a cluster file lists (a new epoch)",
        description=(cluster_file_cli.__doc__ or "").split("\n\n")[1],
    )
    apply.add_argument("file", metavar="FILE")
    apply.add_argument(
        "--discard-data",
        action="append",
        metavar="NODE",
        help="NODE is dropped with its objects (they start empty elsewhere); it may be down",
    )
    apply.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_ETCD_TIMEOUT,
        metavar="SECONDS",
        help=f"bound on each request to a node (default {DEFAULT_ETCD_TIMEOUT:g})",
    )
    _node_access(apply)
    leave.add_argument(
        "--wait",
        type=_seconds,
        metavar="SECONDS",
        help="wait at most this long (0: do not wait; default: until it is gone)",
    )

    remove = verbs.add_parser(
        "remove",
        parents=[etcd],
        help="drop a member now, giving its objects away empty (etcd)",
        description="Drop NODE from the members at once. Its objects live on its disk and are given "
        "away: they start empty on the other members, and the id may never join again. Use leave to "
        "move them instead. Exit: 0 removed, 2 refused, 4 etcd unreachable.",
    )
    remove.add_argument("node", metavar="NODE")
    remove.add_argument(
        "--discard-data", action="store_true", help="required: say that NODE's objects are given away empty"
    )
    remove.add_argument("--force", action="store_true", help="remove NODE even while it is up")
    for verb in (leave, remove):
        verb.add_argument(
            "--timeout",
            type=float,
            default=DEFAULT_ETCD_TIMEOUT,
            metavar="SECONDS",
            help=f"bound on each etcd request (default {DEFAULT_ETCD_TIMEOUT:g})",
        )


def _node_access(verb: argparse.ArgumentParser) -> None:
    """``--token`` and ``--ca`` for the verbs that ask the nodes of a file membership."""
    verb.add_argument("--token", metavar="TOKEN", help="the nodes' admin token (env ACTORS_TOKEN)")
    verb.add_argument("--ca", metavar="FILE", help="PEM CA certificates for https nodes (env ACTORS_CA)")


#: seconds one etcd request may take (``leave``, ``remove``; ``nodes`` has the node's ``--timeout``)
DEFAULT_ETCD_TIMEOUT = 5.0


def _etcd_options() -> argparse.ArgumentParser:
    options = argparse.ArgumentParser(add_help=False)
    options.add_argument(
        "--etcd", metavar="URL", help="etcd's client URL, http://host:2379 (env ACTORS_ETCD)"
    )
    options.add_argument(
        "--etcd-prefix",
        metavar="PREFIX",
        help="the cluster's keys in etcd (env ACTORS_ETCD_PREFIX; default /actors/)",
    )
    return options


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be 0 or more seconds, not {text}")
    return value


def run(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    if args.verb == "apply" or (args.verb == "leave" and args.cluster is not None):
        return cluster_file_cli.run(args, environ)
    if args.verb != "nodes" or cluster_etcd_cli.etcd_requested(args, environ):
        return cluster_etcd_cli.run(args, environ)
    try:
        reply = node_from_args(args, environ).json("GET", "/v1/cluster/nodes")
        if args.json:
            print(json.dumps(reply))
            return EXIT_OK
        members = reply.get("nodes") if isinstance(reply, dict) else None
        if not isinstance(members, list):
            raise RemoteError('the reply has no "nodes" list')
        for member in members:
            up = "up" if member.get("up") else "down"
            counts = [str(member.get(key, "?")) for key in ("objects", "live_objects")]
            if "to_move" in member or "epoch" in member:  # a member of a cluster
                counts += [f"epoch={member.get('epoch', '?')}", f"to_move={member.get('to_move', '?')}"]
            if member.get("state") == "leaving":
                counts.append("leaving")
            print("\t".join([str(member.get("node")), str(member.get("url")), up, *counts]))
            if "error" in member:
                print(f"actors cluster nodes: {member['node']}: {member['error']}", file=sys.stderr)
        print(f"epoch\t{reply.get('epoch')}")
    except Failure as failure:
        print(f"actors cluster {args.verb}: {failure}", file=sys.stderr)
        return failure.exit_status
    return EXIT_OK
