"""``actors cluster nodes|leave|remove --etcd URL``: the membership in etcd, read and changed there.

    actors cluster nodes --etcd URL [--etcd-prefix P] [--json]
    actors cluster leave NODE --etcd URL [--etcd-prefix P] [--wait SECONDS]
    actors cluster remove NODE --etcd URL [--etcd-prefix P] --discard-data [--force]

``--etcd`` defaults to the variable ``ACTORS_ETCD`` and ``--etcd-prefix`` to ``ACTORS_ETCD_PREFIX``
(else ``/actors/``): the same settings as the nodes'. No node needs to be up.

- ``nodes``: one line per member, id, url, state (``active`` or ``leaving``) and ``alive`` (``yes``
  while its liveness key exists), tab-separated, then ``epoch<TAB>N``; ``--json``: one object,
  ``{"epoch", "nodes": [{"id", "url", "state", "alive"}]}``.
- ``leave``: marks NODE leaving (it owns nothing from that epoch on and hands its objects to the
  others), then waits until NODE has removed itself from the members, which it does once it holds no
  object; meanwhile it prints, at most once a second, how many slots NODE may still hold objects in
  and whether it is up. ``--wait 0`` does not wait; ``--wait S`` waits at most S seconds.
- ``remove``: drops NODE at once and gives its objects away *empty*: they live on its disk, which
  the cluster never reads again. Refused without ``--discard-data``, and while NODE is up (its
  liveness key exists: use ``leave``) unless ``--force``. The id may never join again.

Exit status
    0  done (``leave``: NODE is gone, or marked leaving with ``--wait 0``)
    2  usage, or the change is refused (why, on stderr)
    3  etcd refused a request, or holds a record this version cannot read
    4  etcd cannot be reached (the outcome of a change is then unknown: running it again is safe)
    5  ``leave --wait``: NODE is still a member when the time is up (what is left, on stderr)
"""

from __future__ import annotations

import argparse
import getpass
import json
import logging
import math
import os
import socket
import sys
from collections.abc import Awaitable, Callable, Mapping
from contextlib import aclosing
from typing import Final
from urllib.parse import urlsplit

import trio

from .admin_cli import EXIT_OK, EXIT_REMOTE, EXIT_UNREACHABLE, EXIT_USAGE
from .cluster.dial import failure_of
from .cluster.etcd import EtcdError, EtcdUnavailable, open_etcd
from .cluster.registry import MembershipRefused, Registry
from .config import LOG_FORMATS
from .logs import configure_logging

__all__ = ["DEFAULT_PREFIX", "EXIT_TIMEOUT", "etcd_requested", "run"]

log = logging.getLogger("server.cluster")

DEFAULT_PREFIX: Final = "/actors/"
EXIT_TIMEOUT: Final = 5
#: seconds between two progress lines of ``leave``, at least
PROGRESS_EVERY: Final = 1.0


class _Refused(Exception):
    """Usage or a refusal: exit 2."""


def etcd_requested(args: argparse.Namespace, environ: Mapping[str, str]) -> bool:
    """Whether ``nodes`` reads etcd: ``--etcd``, or ``ACTORS_ETCD`` without ``--url``."""
    return bool(args.etcd or (not args.url and environ.get("ACTORS_ETCD")))


def run(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    """Run the parsed verb against etcd; returns the exit status (see the module docstring)."""
    verbs: dict[str, Callable[[argparse.Namespace, Registry], Awaitable[int]]] = {
        "nodes": _nodes,
        "leave": _leave,
        "remove": _remove,
    }
    try:
        url = _etcd_url(args, environ)
        prefix = args.etcd_prefix or environ.get("ACTORS_ETCD_PREFIX") or DEFAULT_PREFIX
        if args.verb == "remove":
            _check_remove(args)
            fmt = environ.get("ACTORS_LOG_FORMAT", "text")
            configure_logging("warning", fmt if fmt in LOG_FORMATS else "text")  # not httpx's requests

        async def main() -> int:
            async with open_etcd(url, prefix=prefix, timeout=args.timeout) as etcd:
                return await verbs[args.verb](args, Registry(etcd))

        return trio.run(main)
    except BaseException as exc:
        failure = failure_of(exc)
        status = next((s for kind, s in _STATUS.items() if isinstance(failure, kind)), None)
        if status is None:
            raise
        print(f"actors cluster {args.verb}: {failure}", file=sys.stderr)
        return status


_STATUS: dict[type[BaseException], int] = {
    _Refused: EXIT_USAGE,
    MembershipRefused: EXIT_USAGE,
    EtcdUnavailable: EXIT_UNREACHABLE,
    EtcdError: EXIT_REMOTE,
}


def _etcd_url(args: argparse.Namespace, environ: Mapping[str, str]) -> str:
    url: str = args.etcd or environ.get("ACTORS_ETCD") or ""
    if not url:
        raise _Refused("--etcd URL (or ACTORS_ETCD) is required")
    if args.verb == "nodes" and args.etcd and args.url:
        raise _Refused("--url (a node) and --etcd: name one")
    parts = urlsplit(url)
    try:
        parts.port  # noqa: B018  # a bad port raises here
    except ValueError:
        parts = parts._replace(scheme="")
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.path not in ("", "/"):
        raise _Refused(f"--etcd must look like http://host:port, not {url!r}")
    return url


def _check_remove(args: argparse.Namespace) -> None:
    if not args.discard_data:
        raise _Refused(
            f"refusing to remove {args.node} without --discard-data: a member's objects live on its "
            f"disk, and remove gives them away empty; use `actors cluster leave {args.node}` to move "
            "them to the other members first"
        )


#### Verbs


async def _nodes(args: argparse.Namespace, registry: Registry) -> int:
    view = await registry.read()
    alive = await registry.alive()
    if args.json:
        nodes = [{"id": m.id, "url": m.url, "state": m.state, "alive": m.id in alive} for m in view.members]
        print(json.dumps({"epoch": view.epoch, "nodes": nodes}))
        return EXIT_OK
    for m in view.members:
        print(f"{m.id}\t{m.url}\t{m.state}\t{'yes' if m.id in alive else 'no'}")
    print(f"epoch\t{view.epoch}")
    return EXIT_OK


async def _leave(args: argparse.Namespace, registry: Registry) -> int:
    node: str = args.node
    view = await registry.set_leaving(node)
    active = ", ".join(m.id for m in view.active())
    print(f"{node}: leaving at epoch {view.epoch}; its objects move to {active}", flush=True)
    if args.wait == 0:
        print(f"{node}: not waiting; `actors cluster nodes --etcd ...` lists it until it is gone")
        return EXIT_OK
    left: list[int] = []  # the epoch at which it was gone, once it is
    gone = trio.Event()

    async def wait_gone() -> None:
        async with aclosing(registry.watch(view.epoch)) as views:
            async for current in views:
                if current.member(node) is None:
                    left.append(current.epoch)
                    gone.set()
                    return

    deadline = math.inf if args.wait is None else trio.current_time() + args.wait
    printed: list[str] = []  # the progress lines
    async with trio.open_nursery() as nursery:
        nursery.start_soon(wait_gone)
        with trio.move_on_at(deadline):
            await _report_progress(registry, node, gone, printed)
        nursery.cancel_scope.cancel()
    if left:
        print(f"{node}: left the cluster at epoch {left[0]}")
        return EXIT_OK
    left_over = printed[-1] if printed else "nothing known of its holds"
    print(
        f"actors cluster leave: {node} is still a member (leaving) after {args.wait:g} s; {left_over}. "
        "It goes on handing its objects off: run leave again to keep waiting",
        file=sys.stderr,
    )
    return EXIT_TIMEOUT


async def _report_progress(registry: Registry, node: str, gone: trio.Event, printed: list[str]) -> None:
    """Print what ``node`` may still hold whenever it changes, at most once a second, until
    ``gone`` (appending each line to ``printed``); a failed read is reported, and waiting goes on."""
    while not gone.is_set():
        try:
            holds = (await registry.read_holds()).get(node)
            up = node in await registry.alive()
        except (EtcdUnavailable, EtcdError) as error:
            line = f"cannot read its progress: {error}"
        else:
            line = "no holds published" if holds is None else _holding(len(holds.slots), holds.epoch)
            line += "" if up else "; it is down: nothing moves until it is back"
        if (not printed or line != printed[-1]) and not gone.is_set():
            print(f"{node}: {line}", flush=True)
            printed.append(line)
        with trio.move_on_after(PROGRESS_EVERY):
            await gone.wait()


def _holding(slots: int, epoch: int) -> str:
    return f"may still hold objects in {slots} slot{'' if slots == 1 else 's'} (published at epoch {epoch})"


async def _remove(args: argparse.Namespace, registry: Registry) -> int:
    node: str = args.node
    if not args.force and node in await registry.alive():
        raise _Refused(
            f"{node} is up (its liveness key exists): use `actors cluster leave {node}` to move its "
            "objects, or stop it first (--force removes it anyway, its objects given away empty)"
        )
    was_member = (await registry.read()).member(node) is not None
    by = _operator()
    view = await registry.remove(node, discard_data=True, by=by)
    if not was_member:
        print(f"{node} was already removed (epoch {view.epoch})")
        return EXIT_OK
    print(
        f"removed {node} at epoch {view.epoch}, its data discarded: its objects start empty on the "
        f"other members, and the id {node} may not join again"
    )
    log.warning(
        "member removed; its data is discarded",
        extra={"event": "member_removed", "node": node, "epoch": view.epoch, "by": by},
    )
    return EXIT_OK


def _operator() -> str:
    """``user@host``, for the tombstone."""
    try:
        user = getpass.getuser()
    except (OSError, KeyError):
        user = str(os.getuid())
    return f"{user}@{socket.gethostname()}"
