"""``actors bench``: the node's load generator, through the SDK (what redis-benchmark is to Redis).

What a run measures
    ``--concurrency C`` callers each keep exactly one call in flight (a closed loop: the next call
    leaves when the previous reply came back) over ``--connections K`` SDK connections. After
    ``--warmup S`` seconds that are run but not recorded, the run is measured for ``--duration S``
    seconds or ``--count N`` calls; ``ops/s`` is the calls that returned during the measured phase
    divided by its length (from the end of the warm-up until the last measured reply). Failed calls
    are counted by error type and are not ops; for ``ratelimit``, a denied ``take`` (the HTTP route's
    429) is a correct answer, counted apart from allowed ones and never as an error. Latency is the
    time from sending a call to its reply, percentiles within 0.8% (see ``_bench_stats.py``).

    With ``--prepare`` (counter-spread, ratelimit) every object is called once, ``--concurrency`` at a
    time, before the warm-up, and not recorded: the run then measures objects that exist rather than
    their creation (random picks reach all of N names only after about N·ln N calls).

    Every object name of a run starts with a fresh prefix (``bench-<8 hex>-``), so a run never sees
    the state of an earlier one on a long-running node, and its result names the objects to check
    afterwards (counter-hot: after a clean run the counter's value equals ``warmup_ok + ok``).

Workloads
    ``counter-hot``     ``Counter.increment()`` on one object: the single-object write ceiling
    ``counter-spread``  ``Counter.increment()`` on a random one of ``--objects N`` (10,000)
    ``ratelimit``       ``RateLimiter.take()`` on a random one of ``--objects N`` keys
    ``chat-fanout``     ``--rooms R`` x ``--members M`` WebSockets on ``/chat/{room}``, see
                        ``_bench_chat.py``: every member sends its next message once its previous one
                        came back; delivered msgs/s = frames received by all members / time, and every
                        member must receive every message of its room once, in seq order.

Its own cost
    The generator must not be what it measures. It reports the CPU time of its own process (every
    thread, ``time.process_time``) over the measured phase, per op and as a share of one core; a share
    near 100% means the generator, not the node, set the rate, and the summary says so. ``actors
    bench`` pins itself to the last CPU by default (``--cpu``, in ``cli.py``), so a node pinned to CPU 0
    does not share its core. Per call the bench itself does a phase check, a random pick (spread
    workloads), one call of a stub method made before the run (no id hashing per call), one
    ``perf_counter_ns`` pair and one histogram increment: about 5 µs with a client whose call does
    nothing. The rest is the SDK's call path (45 to 55 µs on counter-hot on a 2-vCPU VM, see
    ``BENCHMARKS.md``); chat-fanout costs about 110 µs per delivered message, mostly trio-websocket's.

XX: a closed loop under-reports latency when the node stalls (coordinated omission: callers that
wait send nothing, so the stall is one slow call each instead of many). An open-loop mode at a
fixed rate would show it.
"""

from __future__ import annotations

import random
import secrets
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import partial
from typing import Final, TextIO

import trio

from actors.errors import ActorError

from . import Client, RemoteMethod, connect
from ._bench_chat import run_chat
from ._bench_run import Phase, Run
from ._bench_stats import BenchResult, Latency, Recorder
from .errors import ClientError, ReplyTimeout

__all__ = ["WORKLOADS", "BenchOptions", "run"]

WORKLOADS: Final = ("counter-hot", "counter-spread", "ratelimit", "chat-fanout")


@dataclass(frozen=True, slots=True)
class BenchOptions:
    """One run. Exactly one of ``duration`` and ``count`` bounds the measured phase.

    Raises ValueError naming the option that is out of range.
    """

    url: str
    workload: str = "counter-hot"
    token: str | None = None
    concurrency: int = 64  # callers, each with one call in flight (not chat-fanout)
    connections: int = 1  # SDK connections the callers share (not chat-fanout)
    duration: float | None = 10.0
    count: int | None = None  # calls (chat-fanout: messages sent) to measure; wins over duration
    warmup: float = 1.0
    objects: int = 10_000  # counter-spread and ratelimit: names to pick from
    prepare: bool = False  # counter-spread and ratelimit: call every object once before the warm-up
    rooms: int = 8  # chat-fanout
    members: int = 8  # chat-fanout: members per room
    timeout: float = 30.0  # seconds one call (one chat echo) may take before it fails

    def __post_init__(self) -> None:
        if self.workload not in WORKLOADS:
            raise ValueError(f"workload must be one of {', '.join(WORKLOADS)}, not {self.workload!r}")
        for name in ("concurrency", "connections", "objects", "rooms", "members"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        if self.count is not None and self.count < 1:
            raise ValueError("count must be at least 1")
        if self.count is None and (self.duration is None or not self.duration > 0):
            raise ValueError("duration must be positive (or give a count)")
        if self.prepare and self.workload not in ("counter-spread", "ratelimit"):
            raise ValueError("prepare applies to counter-spread and ratelimit only")
        if not self.warmup >= 0 or not self.timeout > 0:
            raise ValueError("warmup must be >= 0 and timeout > 0")


#### Call workloads (counter-hot, counter-spread, ratelimit)


def _targets(
    options: BenchOptions, prefix: str, client: Client
) -> tuple[Callable[[], RemoteMethod], list[RemoteMethod], list[dict[str, str]]]:
    """A function picking the next call, every method it picks from, and the objects to name in the result.

    The remote methods are made once, before the run (one stub per name, as a user holding stubs
    would), so a call costs the SDK's send and nothing of the bench's (no id hashing per call).
    """
    if options.workload == "counter-hot":
        name = f"{prefix}hot"
        hot = client.get("Counter", name).increment
        return (lambda: hot), [hot], [{"class": "Counter", "name": name}]
    if options.workload == "counter-spread":
        methods = [client.get("Counter", f"{prefix}{i}").increment for i in range(options.objects)]
    else:
        methods = [client.get("RateLimiter", f"{prefix}{i}").take for i in range(options.objects)]
    return partial(random.choice, methods), methods, []


async def _prepare(run: Run, methods: list[RemoteMethod]) -> None:
    """Call every method once, ``concurrency`` at a time, before the clock starts (``--prepare``).

    So a spread run measures objects that exist (stored, and live if the node keeps them) rather than
    their creation: reaching every one of N names by random picks takes about N·ln N calls.
    """
    pending = iter(methods)

    async def serve() -> None:
        for method in pending:
            try:
                await method()
            except (ActorError, ClientError, ReplyTimeout):
                run.recorder.warmup_errors += 1
            else:
                run.recorder.prepared += 1

    async with trio.open_nursery() as nursery:
        for _ in range(min(run.options.concurrency, len(methods))):
            nursery.start_soon(serve)


async def _serve_caller(run: Run, pick: Callable[[], RemoteMethod], *, ratelimit: bool) -> None:
    """One caller: one call in flight until the run stops (or the connection is lost)."""
    rec, clock = run.recorder, time.perf_counter_ns
    while True:
        phase = run.next_call()
        if phase is Phase.STOP:
            return
        method = pick()
        start = clock()
        try:
            value = await method()
        except ActorError as exc:
            run.failed(phase, exc.type)
            continue
        except ReplyTimeout:
            run.failed(phase, "ReplyTimeout")
            continue
        except ClientError as exc:  # ConnectionLost, Unreachable
            run.failed(phase, type(exc).__name__)
            return  # every later call of this caller would fail the same way at once
        if phase is Phase.MEASURE:
            rec.latency.record(clock() - start)
            rec.ok += 1
            if ratelimit:
                if value.get("allowed") is True:
                    rec.allowed += 1
                else:
                    rec.denied += 1
        else:
            rec.warmup_ok += 1


async def _run_calls(run: Run, progress: TextIO | None, prefix: str) -> list[dict[str, str]]:
    options = run.options
    ratelimit = options.workload == "ratelimit"
    async with (
        connect(
            options.url, token=options.token, timeout=options.timeout, connections=options.connections
        ) as client,
        trio.open_nursery() as outer,
    ):
        pick, methods, objects = _targets(options, prefix, client)
        if options.prepare:
            await _prepare(run, methods)
        outer.start_soon(run.serve_clock, progress)
        if run.phase is Phase.MEASURE:
            run.start_measuring()
        async with trio.open_nursery() as callers:
            for _ in range(options.concurrency):
                callers.start_soon(partial(_serve_caller, run, pick, ratelimit=ratelimit))
        run.finish()
        outer.cancel_scope.cancel()
    return objects


#### Entry point


async def run(
    options: BenchOptions, *, progress: TextIO | None = None, pinned_cpu: int | None = None
) -> BenchResult:
    """Run one benchmark against the node at ``options.url`` and return what it measured.

    ``progress``: where to draw a live progress line (a terminal), or None. Raises the SDK's
    ``Unreachable`` if the node cannot be reached at all, and its errors if it refuses the
    connection (a wrong token); failures of single calls are counted, never raised.
    """
    prefix = f"bench-{secrets.token_hex(4)}-"
    recorder = Recorder()
    state = Run(options, recorder)
    if options.workload == "chat-fanout":
        objects = await run_chat(state, progress, prefix)
    else:
        objects = await _run_calls(state, progress, prefix)
    if progress is not None:
        progress.write("\r\x1b[2K")
        progress.flush()
    elapsed, cpu, ops = state.elapsed, state.cpu_seconds, recorder.ok
    # chat-fanout's work is per message received, a multiple of the messages sent
    work = recorder.delivered if options.workload == "chat-fanout" else ops
    return BenchResult(
        workload=options.workload,
        url=options.url,
        prefix=prefix,
        options={k: v for k, v in asdict(options).items() if k != "token"},
        elapsed=elapsed,
        ok=ops,
        ops_per_sec=ops / elapsed,
        latency=Latency.of(recorder.latency),
        errors=dict(recorder.errors),
        warmup_ok=recorder.warmup_ok,
        prepared=recorder.prepared,
        warmup_errors=recorder.warmup_errors,
        allowed=recorder.allowed,
        denied=recorder.denied,
        delivered=recorder.delivered,
        delivered_per_sec=recorder.delivered / elapsed,
        violations=dict(recorder.violations),
        cpu_seconds=cpu,
        cpu_us_per_op=cpu / work * 1e6 if work else 0.0,
        cpu_percent=cpu / elapsed * 100,
        pinned_cpu=pinned_cpu,
        objects=objects,
    )
