"""``actors cluster nodes``: the members of the cluster a node belongs to, as that node sees them.

    actors cluster nodes [--url URL] [--json]

One line per member: id, URL, ``up`` or ``down`` (the asking node's link to it), objects with storage
and objects in memory, tab-separated, then a last line with the epoch; ``--json`` prints the node's
``GET /v1/cluster/nodes`` reply as it is. A member that could not answer shows ``?`` for its counts
and its error on stderr. Exit status as ``actors objects``: 0, 2 usage, 3 the node answered with an
error, 4 unreachable.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping
from typing import Any

from .admin_cli import EXIT_OK, Failure, RemoteError, connection_options, node_from_args

__all__ = ["add_cluster_parser", "run"]


def add_cluster_parser(commands: Any) -> None:
    cluster = commands.add_parser(
        "cluster",
        help="inspect the cluster a node belongs to",
        description="Inspect the cluster through one of its nodes (any node: each sees every member).",
    )
    verbs = cluster.add_subparsers(dest="verb", metavar="VERB", required=True)
    nodes = verbs.add_parser(
        "nodes",
        parents=[connection_options()],
        help="list the members, their liveness and objects",
        description=__doc__.split("\n\n")[1] if __doc__ else None,
    )
    nodes.add_argument("--json", action="store_true", help="the node's JSON reply as it is")


def run(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
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
            print("\t".join([str(member.get("node")), str(member.get("url")), up, *counts]))
            if "error" in member:
                print(f"actors cluster nodes: {member['node']}: {member['error']}", file=sys.stderr)
        print(f"epoch\t{reply.get('epoch')}")
    except Failure as failure:
        print(f"actors cluster {args.verb}: {failure}", file=sys.stderr)
        return failure.exit_status
    return EXIT_OK
