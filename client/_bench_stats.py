"""What ``actors bench`` records while it runs, and how it reports it.

Latency is kept in a log-linear histogram of nanoseconds (the HdrHistogram layout): values below 256 ns
have one bucket each; above, every power of two is split into 128 equal buckets. So memory is fixed
(``_BUCKETS`` = 4,352 counters, however long the run), recording is a few integer operations (no
allocation, no sort at the end), and every reported percentile is within 1/128 (0.8%) of the true
value; ``max`` is exact. An array of every latency would be exact too, but costs 8 bytes a call and a
sort of millions of floats at the end of a long run; the histogram's error is far below the run-to-run
noise of any benchmark on a shared machine.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Final

#: sub-buckets per power of two (7 bits: relative error at most 1/128)
_SUB_BITS: Final = 7
#: values that get one bucket each: [0, 2 ** (_SUB_BITS + 1))
_LINEAR: Final = 1 << (_SUB_BITS + 1)
#: latencies are clamped to 2**40 ns (18 minutes), far beyond any call deadline
_MAX_NS: Final = (1 << 40) - 1
_BUCKETS: Final = ((40 - _SUB_BITS - 1) << _SUB_BITS) + _LINEAR


def _bucket_high(index: int) -> int:
    """The largest value that falls in bucket ``index``."""
    if index < _LINEAR:
        return index
    shift = (index >> _SUB_BITS) - 1
    return ((index - (shift << _SUB_BITS) + 1) << shift) - 1


class Histogram:
    """Counts of latencies in nanoseconds; percentiles within 0.8%, exact count, sum and max."""

    __slots__ = ("_counts", "count", "max_ns", "sum_ns")

    def __init__(self) -> None:
        self._counts = [0] * _BUCKETS
        self.count = 0
        self.sum_ns = 0
        self.max_ns = 0

    def record(self, ns: int) -> None:
        """Count one latency of ``ns`` >= 0 nanoseconds (clamped to 2**40)."""
        if ns > _MAX_NS:
            ns = _MAX_NS
        if ns < _LINEAR:  # the bucket's index; inline, as this runs once per call of the benchmark
            index = ns
        else:
            shift = ns.bit_length() - _SUB_BITS - 1
            index = (shift << _SUB_BITS) + (ns >> shift)
        self._counts[index] += 1
        self.count += 1
        self.sum_ns += ns
        if ns > self.max_ns:
            self.max_ns = ns

    def percentile(self, q: float) -> int:
        """The ``q``-th percentile (0 < q <= 100) in ns: the top of the bucket holding it (0 if empty)."""
        if self.count == 0:
            return 0
        rank = max(1, round(self.count * q / 100))
        seen = 0
        for index, n in enumerate(self._counts):
            seen += n
            if seen >= rank:
                return min(_bucket_high(index), self.max_ns)
        return self.max_ns  # not reached: the counts sum to ``count``


@dataclass(slots=True)
class Recorder:
    """Everything one run counts. The measured phase and the warm-up are kept apart."""

    latency: Histogram = field(default_factory=Histogram)
    #: measured calls that returned (for ratelimit: allowed and denied both count)
    ok: int = 0
    #: calls that returned during the warm-up (not in ``ok``; counter-hot's check needs them)
    warmup_ok: int = 0
    #: ``--prepare``: calls of the pass over every object that returned
    prepared: int = 0
    #: measured calls that failed, by error type
    errors: Counter[str] = field(default_factory=Counter)
    warmup_errors: int = 0
    #: ratelimit: ``take`` answered allowed / denied (the HTTP route's 429)
    allowed: int = 0
    denied: int = 0
    #: chat-fanout: frames received by all members while measuring, and the delivery checks
    delivered: int = 0
    violations: Counter[str] = field(default_factory=Counter)


@dataclass(frozen=True, slots=True)
class Latency:
    """Milliseconds, over the measured calls that returned."""

    p50: float
    p90: float
    p99: float
    max: float
    mean: float

    @classmethod
    def of(cls, histogram: Histogram) -> Latency:
        def ms(ns: float) -> float:
            return round(ns / 1e6, 3)

        mean = histogram.sum_ns / histogram.count if histogram.count else 0.0
        return cls(
            p50=ms(histogram.percentile(50)),
            p90=ms(histogram.percentile(90)),
            p99=ms(histogram.percentile(99)),
            max=ms(histogram.max_ns),
            mean=ms(mean),
        )


@dataclass(frozen=True, slots=True)
class BenchResult:
    """The outcome of one run; ``to_json()`` is what ``--json FILE`` holds."""

    workload: str
    url: str
    prefix: str  # every object name of the run starts with it
    options: dict[str, Any]
    elapsed: float  # seconds of the measured phase
    ok: int
    ops_per_sec: float  # ``ok`` / ``elapsed``
    latency: Latency
    errors: dict[str, int]
    warmup_ok: int
    prepared: int
    warmup_errors: int
    allowed: int
    denied: int
    delivered: int
    delivered_per_sec: float
    violations: dict[str, int]
    cpu_seconds: float  # CPU time of the bench process (all its threads) during the measured phase
    cpu_us_per_op: float  # chat-fanout: per delivered message
    cpu_percent: float  # of one core
    pinned_cpu: int | None
    objects: list[
        dict[str, str]
    ]  # the objects whose final state tells the outcome (counter-hot: its counter)

    @property
    def failed(self) -> bool:
        """No op completed, or some call failed (warm-up included), or a chat check found a violation."""
        return not self.ok or bool(
            sum(self.errors.values()) or self.warmup_errors or sum(self.violations.values())
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "workload": self.workload,
            "url": self.url,
            "prefix": self.prefix,
            "options": self.options,
            "elapsed_s": round(self.elapsed, 6),
            "ok": self.ok,
            "ops_per_sec": round(self.ops_per_sec, 1),
            "latency_ms": {
                "p50": self.latency.p50,
                "p90": self.latency.p90,
                "p99": self.latency.p99,
                "max": self.latency.max,
                "mean": self.latency.mean,
            },
            "errors": self.errors,
            "warmup_ok": self.warmup_ok,
            "prepared": self.prepared,
            "warmup_errors": self.warmup_errors,
            "ratelimit": {"allowed": self.allowed, "denied": self.denied},
            "chat": {
                "delivered": self.delivered,
                "delivered_per_sec": round(self.delivered_per_sec, 1),
                "violations": self.violations,
            },
            "bench_cpu": {
                "seconds": round(self.cpu_seconds, 6),
                "us_per_op": round(self.cpu_us_per_op, 2),
                "percent_of_one_core": round(self.cpu_percent, 1),
                "pinned_cpu": self.pinned_cpu,
            },
            "objects": self.objects,
        }


#: above this share of one core, the load generator itself may be what limits the rate
SATURATED_PERCENT: Final = 90.0


def summary(result: BenchResult) -> str:
    """The human summary table printed at the end of a run."""
    rows: list[tuple[str, str]] = []
    if result.workload == "chat-fanout":
        rows.append(("delivered msgs/s", f"{result.delivered_per_sec:,.0f}"))
        rows.append(("delivered msgs", f"{result.delivered:,}"))
        rows.append(("sent msgs/s", f"{result.ops_per_sec:,.0f}"))
        rows.append(("sent msgs", f"{result.ok:,}"))
    else:
        rows.append(("ops/s", f"{result.ops_per_sec:,.0f}"))
        rows.append(("ok calls", f"{result.ok:,}"))
    if result.workload == "ratelimit":
        rows.append(("allowed", f"{result.allowed:,}"))
        rows.append(("denied (429)", f"{result.denied:,}"))
    lat = result.latency
    rows.append(("latency ms", f"p50 {lat.p50:.2f}  p90 {lat.p90:.2f}  p99 {lat.p99:.2f}  max {lat.max:.2f}"))
    errors = sum(result.errors.values())
    detail = ", ".join(f"{name} {n:,}" for name, n in sorted(result.errors.items()))
    rows.append(("errors", f"{errors:,}" + (f"  ({detail})" if detail else "")))
    if result.prepared:
        rows.append(("prepared", f"{result.prepared:,} objects called once before the warm-up"))
    if result.warmup_errors:
        rows.append(("warm-up errors", f"{result.warmup_errors:,}"))
    if result.workload == "chat-fanout":
        bad = sum(result.violations.values())
        detail = ", ".join(f"{name} {n:,}" for name, n in sorted(result.violations.items()))
        rows.append(("violations", f"{bad:,}" + (f"  ({detail})" if detail else "")))
    rows.append(("elapsed", f"{result.elapsed:.2f} s"))
    pinned = "not pinned" if result.pinned_cpu is None else f"pinned to CPU {result.pinned_cpu}"
    unit = "delivered msg" if result.workload == "chat-fanout" else "op"
    cost = f"{result.cpu_us_per_op:.1f} µs CPU per {unit}, {result.cpu_percent:.0f}% of one core ({pinned})"
    rows.append(("bench cost", cost))
    width = max(len(name) for name, _ in rows)
    lines = [f"  {name:<{width}}  {value}" for name, value in rows]
    if not result.ok:
        lines.append("  failed: no op completed in the measured phase")
    if result.cpu_percent >= SATURATED_PERCENT:
        lines.append(
            "  warning: the bench used most of its core; it may be the bottleneck (read the rate as a"
            " lower bound, or add --connections / run it on a free core)"
        )
    return "\n".join(lines)
