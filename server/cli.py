"""``actors serve``: run one node from the command line (and ``actors objects``, in ``admin_cli.py``;
``actors call`` and ``actors bench``, the SDK's verbs, in ``client/cli.py``).

Every :class:`Config` field has a flag and an ``ACTORS_<FIELD>`` environment variable; a flag wins
over the variable, the variable over the default. ``actors serve`` with neither serves the built-in
rooms on http://127.0.0.1:8080 with ``./data``.

Guarantees
- Bad flags or variables exit with status 2 and a message naming them, before anything is bound.
- Once serving, the bound URL is printed to stdout as one line ``actors: listening on <url>``
  (flushed), so a parent process can start the node on port 0 and read the port back.
- SIGTERM or SIGINT shuts down gracefully (see :func:`server.serve`) and exits 0. A second signal
  during the drain is ignored: killing the process (SIGKILL) is always safe for committed data.
- Failures to start (port in use, an ``--app`` that does not load) are logged and exit 1.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from functools import partial
from pathlib import Path
from typing import Any

import prometheus_client
import trio

from actors import DataFolderInUse, Durability
from client import cli as client_cli

from . import admin_cli, cluster_cli, serve
from .cluster import ClusterFileError, Membership, load_membership, local
from .cluster.dial import failure_of
from .cluster.etcd import EtcdUnavailable
from .cluster.membership import MIN_SECRET_BYTES, SECRET_VARIABLE
from .cluster.registry import MembershipRefused
from .config import LOG_FORMATS, LOG_LEVELS, Config, parse_origins
from .logs import configure_logging
from .tuning import tune_process

__all__ = ["config_from_args", "main"]

log = logging.getLogger("server")

_DEFAULTS = Config()


def _bool(text: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"not a boolean: {text!r}")


def _durability(text: str) -> Durability:
    return Durability(text)


def _optional_str(text: str) -> str | None:
    return text or None


def _optional_int(text: str) -> int | None:
    return int(text) if text else None


def _optional_path(text: str) -> Path | None:
    return Path(text) if text else None


@dataclass(frozen=True, slots=True)
class _Option:
    field: str  # the Config field; the flag is --field-with-dashes, the variable ACTORS_FIELD
    parse: Callable[[str], Any]
    help: str
    choices: Sequence[str] | None = None
    metavar: str | None = None

    @property
    def flag(self) -> str:
        return "--" + self.field.replace("_", "-")

    @property
    def aliases(self) -> tuple[str, ...]:
        """Shorter spellings: ``--advertise`` (``ACTORS_ADVERTISE``) for ``--advertise-url``."""
        return ("--advertise",) if self.field == "advertise_url" else ()

    @property
    def env(self) -> str:
        return "ACTORS_" + self.field.upper()


_OPTIONS = (
    _Option("host", str, "interface to bind"),
    _Option("port", int, "TCP port; 0 picks a free one (the URL is printed)"),
    _Option("data_dir", Path, "folder for the catalog and the objects' SQLite files"),
    _Option(
        "app",
        _optional_str,
        "your App as module:attr, served beside the built-in rooms",
        metavar="MODULE:ATTR",
    ),
    _Option(
        "durability",
        _durability,
        "fsync: survive power loss; power-loss-unsafe: no fsync",
        choices=[d.value for d in Durability],
    ),
    _Option("idle_timeout", float, "seconds an idle object stays in memory"),
    _Option("max_live_objects", int, "objects in memory at once"),
    _Option("max_open_files", int, "live objects keeping their SQLite file open (~80 KiB each)"),
    _Option("max_queue_depth", int, "calls queued per object before 503 Overloaded"),
    _Option("call_timeout", float, "seconds a call may take, queueing included, before 504"),
    _Option("commit_hold", float, "seconds a batch may wait for more calls on a busy node (0: never)"),
    _Option(
        "sync_volume",
        _bool,
        "one syncfs of the data volume per durability round instead of an fsync per object"
        " (Linux; only on a volume of the node's own: it flushes every file there)",
    ),
    _Option("max_body_bytes", int, "largest request body before 413"),
    _Option("max_frame_bytes", int, "largest WebSocket message before close 1009"),
    _Option("max_send_queue_bytes", int, "bytes waiting for a slow WebSocket reader before close 1013"),
    _Option("max_websockets", int, "WebSockets the node holds at once; past it 503 Overloaded"),
    _Option("max_connections", int, "connections the node holds at once; past it 503 and closed"),
    _Option("keep_alive_timeout", float, "seconds a connection may go without a request's headers"),
    _Option("max_header_bytes", int, "largest HTTP/1.1 request line and headers before 431"),
    _Option("send_timeout", float, "seconds a client may leave sent data unacknowledged, then cut off"),
    _Option("ratelimit_limit", int, "burst of each /ratelimit/{key} token bucket"),
    _Option("ratelimit_period", float, "seconds to refill a whole /ratelimit/{key} bucket"),
    _Option(
        "auth_token",
        _optional_str,
        "require Authorization: Bearer TOKEN (prefer the variable: flags show in ps)",
        metavar="TOKEN",
    ),
    _Option(
        "admin_token",
        _optional_str,
        "the admin routes (objects list/export/delete, cluster nodes) need this token instead of"
        " --auth-token; it opens the other routes too (prefer the variable)",
        metavar="TOKEN",
    ),
    _Option(
        "allowed_origins",
        parse_origins,
        "browser origins that may open WebSockets: comma-separated scheme://host[:port] or *"
        " (empty: any origin on a loopback host, else only the node's own)",
        metavar="ORIGINS",
    ),
    _Option("log_level", str, "log level", choices=LOG_LEVELS),
    _Option("log_format", str, "one line per event as key=value text or JSON", choices=LOG_FORMATS),
    _Option("debug", _bool, "send user tracebacks in error replies (never on a public node)"),
    _Option("log_objects", _bool, "log each object's file opening and closing, with the epoch"),
    _Option(
        "node_name",
        _optional_str,
        "this node's name in the cluster map, kept stable across restarts (None: host:port of the URL)",
        metavar="NAME",
    ),
    _Option("cluster", _optional_path, "cluster file: TOML with secret and [[nodes]]", metavar="FILE"),
    _Option("node_id", _optional_str, "this node's id in the cluster file", metavar="ID"),
    _Option("etcd", _optional_str, "etcd client URL: membership and liveness from etcd", metavar="URL"),
    _Option("etcd_prefix", str, "prefix of this cluster's keys in etcd", metavar="PREFIX"),
    _Option("lease_ttl", int, "seconds of the liveness lease in etcd"),
    _Option("lease_margin", float, "seconds before the lease could lapse that turns stop (fencing)"),
    _Option("handoff_rate", float, "objects a second handed to new owners at most"),
    _Option("workers", int, "node processes on this machine sharing the port (a local cluster)"),
    _Option("shared_port", _optional_int, "also accept on this port with SO_REUSEPORT (set by --workers)"),
    _Option(
        "advertise_url",
        _optional_str,
        "the base URL clients reach this node at (None: the bound http(s)://host:port)",
        metavar="URL",
    ),
    _Option(
        "tls_cert",
        _optional_path,
        "PEM certificate chain: serve HTTPS and WSS (with --tls-key)",
        metavar="PEM",
    ),
    _Option("tls_key", _optional_path, "PEM private key of --tls-cert", metavar="PEM"),
    _Option(
        "tls_ca",
        _optional_path,
        "PEM CA certificates to verify peer nodes' https URLs with, instead of the system's",
        metavar="FILE",
    ),
)


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="actors", description="Durable Objects-style actor server.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    serve_parser = commands.add_parser(
        "serve",
        help="run one node",
        description="Run one node. Every flag can also be set with the variable shown.",
    )
    for option in _OPTIONS:
        default = getattr(_DEFAULTS, option.field)
        shown = default.value if isinstance(default, Durability) else default
        help_text = f"{option.help} (env {option.env}; default {shown})"
        if option.parse is _bool:
            serve_parser.add_argument(
                option.flag, action=argparse.BooleanOptionalAction, default=None, help=help_text
            )
        else:
            serve_parser.add_argument(
                option.flag,
                *option.aliases,
                # With choices, argparse checks the raw text; config_from_args converts it.
                type=str if option.choices else option.parse,
                default=None,
                choices=option.choices,
                metavar=option.metavar or (None if option.choices else option.field.upper()),
                help=help_text,
            )
    _add_demo_parser(commands)
    admin_cli.add_objects_parser(commands)
    cluster_cli.add_cluster_parser(commands)
    client_cli.add_parsers(commands)
    return parser


def _add_demo_parser(commands: Any) -> None:
    demo = commands.add_parser(
        "demo",
        help="run a local cluster of several nodes (the demo page on each)",
        description="Start a cluster on this machine: node i on port PORT+i-1, data in DATA_DIR/n<i>, a "
        "fresh secret. Ctrl-C or SIGTERM stops every node.",
    )
    demo.add_argument("--nodes", type=int, default=3, help="nodes to start (default 3, at most 16)")
    demo.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1)")
    demo.add_argument("--port", type=int, default=8080, help="port of the first node (default 8080)")
    demo.add_argument("--data-dir", type=Path, default=Path("data"), help="parent folder of the nodes' data")
    demo.add_argument("--app", default=None, metavar="MODULE:ATTR", help="your App, beside the rooms")


#: nodes ``actors demo`` starts at most
MAX_DEMO_NODES = 16


def _demo(args: argparse.Namespace) -> int:
    if not 1 <= args.nodes <= MAX_DEMO_NODES or not 1 <= args.port <= 65535 - args.nodes:
        print(f"actors demo: --nodes must be in 1..{MAX_DEMO_NODES} and the ports must fit", file=sys.stderr)
        return 2
    configure_logging("warning", "text")
    nodes = local.demo_nodes(args.nodes, args.host, args.port, args.data_dir)
    serve_args = ["--log-level", "warning"] + (["--app", args.app] if args.app else [])
    urls = [node.url for node in nodes]
    print(f"actors demo: starting {len(nodes)} nodes; Ctrl-C stops them", file=sys.stderr, flush=True)
    return trio.run(
        partial(
            local.run_local_cluster,
            nodes,
            serve_args,
            args.data_dir / "cluster.toml",
            restart=False,
            announce=urls,
            note=f"actors demo: open {urls[0]}/ and {urls[-1]}/ in two browsers: one room, wherever it lives."
            f" The cluster file is {args.data_dir / 'cluster.toml'}; Ctrl-C stops every node.",
        )
    )


def config_from_args(args: argparse.Namespace, environ: Mapping[str, str]) -> Config:
    """The Config for parsed ``serve`` flags and an environment: flag, else variable, else default.

    Raises ValueError naming the variable or field that is wrong.
    """
    values: dict[str, Any] = {}
    for option in _OPTIONS:
        value = getattr(args, option.field)
        if value is not None and option.choices is not None:
            value = option.parse(value)
        env = option.env
        if value is None and env not in environ and option.aliases:
            env = "ACTORS_" + option.aliases[0][2:].upper()
        if value is None and env in environ:
            raw = environ[env]
            if option.choices is not None and raw not in option.choices:
                raise ValueError(f"{env} must be one of {', '.join(option.choices)}, not {raw!r}")
            try:
                value = option.parse(raw)
            except ValueError as exc:
                raise ValueError(f"{env}={raw!r}: {exc}") from None
            if value is None:
                continue
        if value is not None:
            values[option.field] = value
    assert set(values) <= {f.name for f in fields(Config)}
    return Config(**values)


async def _serve_until_signalled(config: Config, membership: Membership | None, secret: bytes | None) -> None:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:

        async def first_signal() -> None:
            async for signum in signals:
                name = signal.Signals(signum).name
                log.info("signal received", extra={"event": "signal", "signal": name})
                return

        async with trio.open_nursery() as nursery:
            urls = await nursery.start(
                partial(
                    serve, config, membership=membership, cluster_secret=secret, shutdown_trigger=first_signal
                )
            )
            for url in urls:
                print(f"actors: listening on {url}", flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``actors`` console script; returns the exit status."""
    parser = _build_parser()
    args = parser.parse_args(argv)
    if args.command == "objects":
        return admin_cli.run(args, os.environ)
    if args.command == "demo":
        return _demo(args)
    if args.command == "cluster":
        return cluster_cli.run(args, os.environ)
    if args.command in client_cli.COMMANDS:
        return client_cli.run(args, os.environ)
    if args.command != "serve":
        parser.print_help(sys.stderr)
        return 2
    try:
        config = config_from_args(args, os.environ)
    except ValueError as exc:
        parser.error(str(exc))  # exits 2
    membership = None
    if config.cluster is not None:
        try:
            membership = load_membership(config.cluster, config.node_id)
        except ClusterFileError as exc:
            print(f"actors serve: {exc}", file=sys.stderr)  # one line naming the problem
            return 2
    secret = None
    if config.etcd is not None:
        text = os.environ.get(SECRET_VARIABLE, "")
        if len(text.encode()) < MIN_SECRET_BYTES:
            print(
                f"actors serve: --etcd needs the cluster secret in {SECRET_VARIABLE} "
                f"(at least {MIN_SECRET_BYTES} bytes, the same on every node)",
                file=sys.stderr,
            )
            return 2
        secret = text.encode()
    configure_logging(config.log_level, config.log_format)
    if config.workers > 1:
        serve_args = list(argv if argv is not None else sys.argv[1:])[1:]  # the flags after "serve"
        nodes = local.worker_nodes(config.workers, config.host, config.port, config.data_dir)
        public = f"http://{config.bind.rsplit(':', 1)[0]}:{nodes[0].shared_port}"
        cluster_file = config.data_dir / "cluster.toml"
        return trio.run(
            partial(local.run_local_cluster, nodes, serve_args, cluster_file, restart=True, announce=[public])
        )
    prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]  # *_created: noise
    tune_process()
    try:
        trio.run(_serve_until_signalled, config, membership, secret)
    except Exception as exc:
        mismatch = failure_of(exc)
        if isinstance(mismatch, (ClusterFileError, MembershipRefused)):  # a membership that cannot be
            print(f"actors serve: {mismatch}", file=sys.stderr)
            return 2
        if isinstance(mismatch, DataFolderInUse):  # another node runs on this data folder
            print(f"actors serve: {mismatch}", file=sys.stderr)
            return 1
        if isinstance(mismatch, EtcdUnavailable):  # at start: nothing was served; a restart may work
            print(f"actors serve: cannot join through etcd at {config.etcd}: {mismatch}", file=sys.stderr)
            return 1
        # startup failures (port in use, bad --app) and bugs: log, exit 1
        log.exception("could not serve", extra={"event": "failed", "error": repr(exc)})
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
