"""``actors call`` and ``actors bench``: the SDK from a shell (the node's ``server/cli.py`` adds them).

    actors call CLASS NAME METHOD [--args JSON] [--kwargs JSON] [--timeout S] [--json-errors] [--ca FILE]
    actors bench [--workload W] [--concurrency C] [--connections K] [--duration S | --count N] ...

Both talk to ``--url`` (variable ``ACTORS_URL``, default ``http://127.0.0.1:8080``, where ``actors
serve`` listens by default) with the bearer token ``--token`` (variable ``ACTORS_TOKEN``; prefer the
variable, flags show in ``ps``). ``call`` verifies an ``https`` node against ``--ca`` (variable
``ACTORS_CA``: PEM CA certificates, for a private CA) instead of the system's trust store.

``call`` makes one call through the SDK and prints its result as one line of JSON on stdout. A value
JSON cannot hold, bytes, is printed as ``{"$bytes": "<base64>"}`` wherever it sits in the result; the
same form in ``--args``/``--kwargs`` sends bytes. Nothing is retried.

Exit status of ``call``
    0  the call returned; its result is on stdout
    1  a local failure: stdout was closed early (``| head``)
    2  usage: unknown flags, ``--args``/``--kwargs`` that are not a JSON list/object, a bad ``--url``
    3  remote error: the node or the object refused or failed the call (unknown class or method, bad
       arguments, the method raised, overloaded, a wrong token); ``type: message`` goes to stderr
    4  unreachable: no connection could be made, or it was lost before the reply (the call may or
       may not have run)
    5  timeout: no reply within ``--timeout``. When the node says so (``CallTimeout``) the call's
       writes were not applied; when the reply never came, the outcome is unknown.

With ``--json-errors`` the error goes to stderr as ``{"error": {"type": ..., "message": ...}}``.

``bench`` is described in ``bench.py``. Its exit status: 0 the run completed with no failed call and
no chat violation; 1 it completed, but calls failed (in the warm-up too), no call completed, or
checks found violations (the summary says which); 2 usage; 3 the node refused the run (a wrong
token); 4 the node cannot be reached; 5 chat members could not all join within ``--timeout``.
"""

from __future__ import annotations

import argparse
import base64
import json
import math
import os
import sys
from collections.abc import Mapping
from functools import partial
from typing import Any, Final
from urllib.parse import urlsplit

import trio

from actors import ObjectId
from actors.errors import ActorError, CallTimeout

from . import bench, connect
from ._bench_stats import summary
from .errors import ClientError, Rejected, ReplyTimeout

__all__ = ["COMMANDS", "DEFAULT_URL", "add_parsers", "run"]

DEFAULT_URL: Final = "http://127.0.0.1:8080"
#: seconds ``actors call`` waits for a connection and then for the reply, each
DEFAULT_TIMEOUT: Final = 30.0
COMMANDS: Final = ("call", "bench")

EXIT_OK, EXIT_LOCAL, EXIT_USAGE, EXIT_REMOTE, EXIT_UNREACHABLE, EXIT_TIMEOUT = 0, 1, 2, 3, 4, 5


#### Command line


def add_parsers(commands: Any) -> None:
    """Add ``call`` and ``bench`` to the ``actors`` sub-command parsers ``commands``."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", type=_url, help=f"the node (env ACTORS_URL; default {DEFAULT_URL})")
    common.add_argument(
        "--token", metavar="TOKEN", help="bearer token (env ACTORS_TOKEN; prefer it: flags show in ps)"
    )
    call = commands.add_parser(
        "call",
        parents=[common],
        help="call one method of one object and print the result as JSON",
        description="Call CLASS NAME METHOD through the SDK; the result is printed as one line of JSON "
        '(bytes as {"$bytes": base64}). Exit status: 0 ok, 1 local failure, 2 usage, 3 remote error, '
        "4 unreachable, 5 timeout.",
    )
    call.add_argument("cls", metavar="CLASS")
    call.add_argument("name", metavar="NAME")
    call.add_argument("method", metavar="METHOD")
    call.add_argument("--args", type=_json_of(list), default=[], metavar="JSON", help="a JSON list")
    call.add_argument("--kwargs", type=_json_of(dict), default={}, metavar="JSON", help="a JSON object")
    call.add_argument(
        "--timeout",
        type=_positive(float),
        default=DEFAULT_TIMEOUT,
        metavar="SECONDS",
        help=f"bound on connecting and on the call, each (default {DEFAULT_TIMEOUT:g})",
    )
    call.add_argument(
        "--json-errors", action="store_true", help='errors on stderr as {"error": {"type", "message"}}'
    )
    call.add_argument(
        "--ca",
        metavar="FILE",
        help="PEM CA certificates to verify an https node with, instead of the system's (env ACTORS_CA)",
    )
    _add_bench_parser(commands, common)


def _add_bench_parser(commands: Any, common: argparse.ArgumentParser) -> None:
    defaults = bench.BenchOptions(url=DEFAULT_URL)
    parser = commands.add_parser(
        "bench",
        parents=[common],
        help="load a node through the SDK and report ops/s and latency",
        description="Load a running node through the SDK (closed loop) and print a summary: ops/s, "
        "latency percentiles, errors by type and the bench's own CPU cost per op. Exit status: 0 clean "
        "run, 1 calls failed or checks found violations, 2 usage, 3 refused, 4 unreachable, "
        "5 chat members could not join in time.",
    )
    parser.add_argument(
        "--workload",
        choices=bench.WORKLOADS,
        default=defaults.workload,
        metavar="WORKLOAD",
        help=f"{', '.join(bench.WORKLOADS)} (default {defaults.workload})",
    )
    for flag, kind, help_text in (
        ("--concurrency", int, "callers, each with one call in flight"),
        ("--connections", int, "SDK connections the callers share"),
        ("--objects", int, "counter-spread/ratelimit: names to pick from at random"),
        ("--rooms", int, "chat-fanout: rooms"),
        ("--members", int, "chat-fanout: members (WebSockets) per room"),
    ):
        default = getattr(defaults, flag[2:])
        parser.add_argument(
            flag, type=_positive(kind), default=default, metavar="N", help=f"{help_text} (default {default})"
        )
    bound = parser.add_mutually_exclusive_group()
    bound.add_argument(
        "--duration",
        type=_positive(float),
        default=defaults.duration,
        metavar="SECONDS",
        help=f"measure for this long (default {defaults.duration:g})",
    )
    bound.add_argument("--count", type=_positive(int), metavar="N", help="measure N calls (chat: N messages)")
    parser.add_argument(
        "--warmup",
        type=_positive(float, zero=True),
        default=defaults.warmup,
        metavar="SECONDS",
        help=f"run unrecorded first (default {defaults.warmup:g})",
    )
    parser.add_argument(
        "--prepare",
        action="store_true",
        help="counter-spread/ratelimit: call every object once before the warm-up, so the run measures "
        "existing objects, not their creation",
    )
    parser.add_argument(
        "--timeout",
        type=_positive(float),
        default=defaults.timeout,
        metavar="SECONDS",
        help=f"bound on connecting and on each call or echo (default {defaults.timeout:g})",
    )
    parser.add_argument(
        "--json", metavar="FILE", help="also write the results as JSON to FILE (- for stdout)"
    )
    parser.add_argument(
        "--cpu",
        type=_cpu,
        default="auto",
        metavar="N|none",
        help="pin the bench to CPU N; default: the last CPU on a machine with two or more (the node is "
        "meant to run on CPU 0), none: do not pin",
    )


def _url(text: str) -> str:
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https", "ws", "wss") or not parts.hostname:
        raise argparse.ArgumentTypeError(f"not an http(s)://host[:port] URL: {text!r}")
    try:
        parts.port  # noqa: B018  # raises on a port that is not a number
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad port in {text!r}") from None
    return text


def _json_of(kind: type) -> Any:
    label = "list" if kind is list else "object"

    def parse(text: str) -> Any:
        try:
            value = json.loads(text, object_hook=_decode_bytes)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"not JSON ({exc}): {text!r}") from None
        if not isinstance(value, kind):
            raise argparse.ArgumentTypeError(f"must be a JSON {label}, not {text!r}")
        return value

    return parse


def _positive(kind: type, *, zero: bool = False) -> Any:
    """A parser of finite ``kind`` numbers above 0 (or at least 0 with ``zero``)."""

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if not (value >= 0 if zero else value > 0) or not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be finite and {'>= 0' if zero else '> 0'}, not {text!r}")
        return value

    return parse


def _cpu(text: str) -> int | str | None:
    if text in ("auto", "none"):
        return None if text == "none" else text
    try:
        cpu = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a CPU number or 'none': {text!r}") from None
    if cpu not in os.sched_getaffinity(0):
        raise argparse.ArgumentTypeError(
            f"CPU {cpu} is not available (have {sorted(os.sched_getaffinity(0))})"
        )
    return cpu


#### JSON for values that JSON cannot hold


def _decode_bytes(obj: dict[str, Any]) -> Any:
    if obj.keys() == {"$bytes"} and isinstance(obj["$bytes"], str):
        return base64.b64decode(obj["$bytes"], validate=True)
    return obj


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes | bytearray | memoryview):
        return {"$bytes": base64.b64encode(bytes(value)).decode("ascii")}
    if isinstance(value, dict):
        return {key: _jsonable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(item) for item in value]
    return value


#### Running


def run(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    """Run ``call`` or ``bench`` for parsed ``args``; return the exit status."""
    url = args.url or environ.get("ACTORS_URL") or DEFAULT_URL
    if args.url is None:
        try:
            url = _url(url)
        except argparse.ArgumentTypeError as exc:
            return _usage(f"ACTORS_URL: {exc}")
    token = args.token if args.token is not None else environ.get("ACTORS_TOKEN") or None
    if args.command == "call":
        return _run_call(args, url, token, environ)
    return _run_bench(args, url, token)


def _usage(message: str) -> int:
    print(f"actors: error: {message}", file=sys.stderr)
    return EXIT_USAGE


def _run_call(args: argparse.Namespace, url: str, token: str | None, environ: Mapping[str, str]) -> int:
    ca = args.ca or environ.get("ACTORS_CA") or None
    if ca is not None and not os.path.isfile(ca):
        return _usage(f"--ca/ACTORS_CA: no such file: {ca}")

    async def call() -> Any:
        async with connect(url, token=token, timeout=args.timeout, ca=ca) as client:
            # send_call, not call(): a method argument named ``timeout`` is the method's, not the SDK's
            object_id = ObjectId.from_name(args.cls, args.name)
            return await client.send_call(
                args.cls, args.name, object_id.hex, args.method, tuple(args.args), args.kwargs, None
            )

    try:
        value = trio.run(call)
    except BaseException as exc:  # every failure becomes an exit status
        return _report_failure(_leaf(exc), json_errors=args.json_errors)
    try:
        print(json.dumps(_jsonable(value), ensure_ascii=False), flush=True)
    except BrokenPipeError:
        return EXIT_LOCAL
    return EXIT_OK


def _leaf(exc: BaseException) -> BaseException:
    """The first leaf of a (nested) exception group, or ``exc`` itself."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


def _classify(exc: BaseException) -> tuple[int, str, str]:
    """(exit status, type, message) for a failure of ``call`` or ``bench``."""
    if isinstance(exc, CallTimeout):
        return EXIT_TIMEOUT, exc.type, exc.message
    if isinstance(exc, ReplyTimeout):
        return EXIT_TIMEOUT, "ReplyTimeout", str(exc)
    if isinstance(exc, trio.TooSlowError):
        return EXIT_TIMEOUT, "Timeout", "no answer within --timeout"
    if isinstance(exc, ActorError):
        return EXIT_REMOTE, exc.type, exc.message
    if isinstance(exc, Rejected):
        return EXIT_REMOTE, exc.type, exc.message
    if isinstance(exc, ClientError | OSError):  # Unreachable, ConnectionLost, SocketClosed
        return EXIT_UNREACHABLE, type(exc).__name__, str(exc)
    if isinstance(exc, KeyboardInterrupt):
        return 130, "Interrupted", "interrupted"
    return EXIT_LOCAL, type(exc).__name__, str(exc)


def _report_failure(exc: BaseException, *, json_errors: bool = False) -> int:
    status, kind, message = _classify(exc)
    if status == EXIT_LOCAL:
        raise exc  # a bug or SystemExit: the traceback (and Python's exit status 1) says more
    if json_errors:
        print(json.dumps({"error": {"type": kind, "message": message}}), file=sys.stderr)
    else:
        print(f"{kind}: {message}", file=sys.stderr)
    return status


def _pin(choice: int | str | None) -> int | None:
    """Pin this process to a CPU (before any thread starts, so every thread inherits it)."""
    if choice is None:
        return None
    if choice == "auto":
        cpus = sorted(os.sched_getaffinity(0))
        if len(cpus) < 2:
            return None
        choice = cpus[-1]
        print(
            f"actors bench: pinned to CPU {choice}"
            " (the node is meant to run on CPU 0; --cpu none to not pin)",
            file=sys.stderr,
        )
    assert isinstance(choice, int)
    os.sched_setaffinity(0, {choice})
    return choice


def _run_bench(args: argparse.Namespace, url: str, token: str | None) -> int:
    try:
        options = bench.BenchOptions(
            url=url,
            workload=args.workload,
            token=token,
            concurrency=args.concurrency,
            connections=args.connections,
            duration=None if args.count else args.duration,
            count=args.count,
            warmup=args.warmup,
            objects=args.objects,
            prepare=args.prepare,
            rooms=args.rooms,
            members=args.members,
            timeout=args.timeout,
        )
    except ValueError as exc:
        return _usage(str(exc))
    pinned = _pin(args.cpu)
    print(_header(options), flush=True)
    progress = sys.stderr if sys.stderr.isatty() else None
    try:
        result = trio.run(partial(bench.run, options, progress=progress, pinned_cpu=pinned))
    except BaseException as exc:  # every failure becomes an exit status
        return _report_failure(_leaf(exc))
    print(summary(result), flush=True)
    if args.json:
        try:
            _write_json(args.json, {"command": ["actors", *sys.argv[1:]], **result.to_json()})
        except OSError as exc:
            print(f"actors bench: cannot write {args.json}: {exc}", file=sys.stderr)
            return EXIT_LOCAL
    return EXIT_LOCAL if result.failed else EXIT_OK


def _header(options: bench.BenchOptions) -> str:
    unit = "messages" if options.workload == "chat-fanout" else "calls"
    bound = f"{options.count:,} {unit}" if options.count else f"{options.duration:g} s"
    if options.workload == "chat-fanout":
        load = f"{options.rooms} rooms x {options.members} members"
    else:
        plural = "s" if options.connections > 1 else ""
        load = f"{options.concurrency} callers over {options.connections} connection{plural}"
        if options.workload != "counter-hot":
            load += f", {options.objects:,} objects"
    warmup = f"{options.warmup:g} s warm-up"
    if options.prepare:
        warmup = f"one call per object, then {warmup}"
    return f"actors bench: {options.workload} on {options.url}: {load}, {bound} after {warmup}"


def _write_json(path: str, data: dict[str, Any]) -> None:
    text = json.dumps(data, indent=2) + "\n"
    if path == "-":
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    with open(path, "w", encoding="utf-8") as file:
        file.write(text)
