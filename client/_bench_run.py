"""The clock and the shared state of one ``actors bench`` run (see ``bench.py``).

Phases move only forward: WARMUP (calls run, not recorded) → MEASURE (recorded) → STOP (no new call
starts; calls in flight finish). The clock task moves them on time; with ``--count`` the callers
move to STOP themselves when the measured calls are used up. Callers read ``Run.phase``, an
attribute, so the per-call cost of a phase check is one load and one comparison.
"""

from __future__ import annotations

import enum
import time
from typing import TYPE_CHECKING, Final, TextIO

import trio

from ._bench_stats import Recorder

if TYPE_CHECKING:
    from .bench import BenchOptions

#: seconds between two progress lines
PROGRESS_INTERVAL: Final = 1.0


class Phase(enum.Enum):
    WARMUP = "warmup"  # calls run but are not recorded
    MEASURE = "measure"  # calls are recorded
    STOP = "stop"  # no new call starts; calls in flight finish


class Run:
    """The state every caller of one run shares: the phase, the calls left, what was recorded."""

    def __init__(self, options: BenchOptions, recorder: Recorder) -> None:
        self.options = options
        self.recorder = recorder
        self.phase = Phase.WARMUP if options.warmup > 0 else Phase.MEASURE
        self.tickets = options.count  # measured calls left to start (None: bounded by duration)
        self.measure_start: float | None = None  # trio time the measured phase began
        self.cpu_start = 0.0
        self.elapsed = 0.0  # seconds the measured phase lasted, set by ``finish``
        self.cpu_seconds = 0.0  # CPU time of this process over the measured phase

    def next_call(self) -> Phase:
        """The phase a call starting now belongs to; STOP once the duration or the count is used up."""
        phase = self.phase
        if phase is Phase.MEASURE and self.tickets is not None:
            if self.tickets <= 0:
                self.phase = Phase.STOP
                return Phase.STOP
            self.tickets -= 1
        return phase

    def failed(self, phase: Phase, kind: str) -> None:
        if phase is Phase.MEASURE:
            self.recorder.errors[kind] += 1
        else:
            self.recorder.warmup_errors += 1

    def start_measuring(self) -> None:
        self.measure_start = trio.current_time()
        self.cpu_start = time.process_time()
        if self.phase is Phase.WARMUP:
            self.phase = Phase.MEASURE

    def finish(self) -> None:
        """The last call returned: close the measured phase (empty if it never began)."""
        self.phase = Phase.STOP
        if self.measure_start is None:
            self.start_measuring()
        assert self.measure_start is not None
        self.elapsed = max(trio.current_time() - self.measure_start, 1e-9)
        self.cpu_seconds = time.process_time() - self.cpu_start

    async def serve_clock(self, progress: TextIO | None) -> None:
        """Move through the phases on time and draw the progress line; cancelled when callers finish."""
        options = self.options
        start = trio.current_time()
        warm_end = start + options.warmup
        end = warm_end + options.duration if options.count is None and options.duration else None
        next_line = start + PROGRESS_INTERVAL
        while True:
            now = trio.current_time()
            if self.phase is Phase.WARMUP and now >= warm_end:
                self.start_measuring()
            if end is not None and now >= end:
                self.phase = Phase.STOP
                return
            if progress is not None and now >= next_line:
                self._draw(progress, now)
                next_line += PROGRESS_INTERVAL
            wake = [next_line] if progress is not None else []
            wake.append(warm_end if self.phase is Phase.WARMUP else end or now + 3600)
            await trio.sleep_until(min(wake))

    def _draw(self, out: TextIO, now: float) -> None:
        rec = self.recorder
        if self.measure_start is None:
            text = f"warm-up  {rec.warmup_ok:,} ok"
        else:
            elapsed = max(now - self.measure_start, 1e-9)
            errors = sum(rec.errors.values())
            text = f"{elapsed:5.1f} s  {rec.ok:,} ok  {rec.ok / elapsed:,.0f}/s  errors {errors:,}"
        out.write(f"\r\x1b[2K{self.options.workload}  {text}")
        out.flush()
