"""An activation: one live object, its queue, its turns, and its group commit.

Guarantees (the input gate and the output gate, in our words)
- **One turn at a time, in arrival order.** A turn is a whole method call, awaits included: while a turn
  awaits anything (another object, a sleep), no other call of this object starts. This is stricter than
  Cloudflare (which interleaves at non-storage awaits) and matches Orleans' non-reentrant default, so a
  method never has to re-check its state after an await.
- **Reentrancy by call chain.** A call that comes back into this object from its own running turn's call
  chain (A calls B, B calls A) runs at once, nested in the running turn, instead of deadlocking. A call
  that would close a cycle of *different* chains waiting on each other fails at once with Deadlock.
- **Atomic turns.** Each turn is a savepoint: if it raises (or misses its deadline) exactly its writes are
  rolled back and its caller gets the error.
- **Reply after durable commit.** Turns that run back to back (the queue was not empty) share one SQLite
  transaction and one fsync, up to ``max_batch_turns``. No reply of a batch, success or error, leaves
  before the batch's COMMIT returned. If the COMMIT fails, every turn of the batch fails with ObjectReset,
  the instance is discarded (its memory may reflect writes that never happened) and queued calls fail
  with ObjectReset without having reached the object.
- **Eviction only at rest.** The worker evicts its object only when no call is queued or running and no
  write is uncommitted; the decision and the state change happen without a checkpoint in between, so no
  call can slip into an evicting activation.

Mechanism: one worker task per activation (``serve``) pops calls from a deque and runs each as a turn,
then commits the batch: the COMMIT inline (WAL frames, no fsync), the fsync in a durability round
(``_durability.py``, shared with every object that committed meanwhile) while the next batch runs
(pipelined group commit, see below; ``_hold`` and the split in ``_run_batch`` decide where batches
end). Callers park until their work is finished (no event object per call), and so does the worker
between batches. Idle eviction is woken by the table's idle watch; capacity eviction is requested by
the table.

XX: calls to other objects are not held by the output gate (as in Orleans, unlike Cloudflare): a callee
may act on arguments derived from writes that later roll back. Holding them would need the turn to
commit before every outgoing call, which would break turn atomicity.
"""

from __future__ import annotations

import collections
import functools
import math
import traceback
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import trio
import trio.testing

from . import _codec
from ._file import ObjectFile
from ._hooks import ActivationStatistics
from ._ids import ObjectId
from ._lifecycle import ActivationState, check_transition
from ._object import DurableObject, Env
from ._storage import Storage
from ._turn import TurnContext, current_turn
from ._work import Work, WorkState
from .errors import (
    ActivationFailed,
    ActorError,
    CallTimeout,
    ObjectReset,
    ResultNotSerializable,
    ShuttingDown,
    UserError,
)

if TYPE_CHECKING:
    from ._runtime import Runtime

_SCALARS = (type(None), bool, int, float, str, bytes)

#: weight of the newest batch in ``_recent_batch_turns``: an object that stops getting calls together
#: stops being held within a few batches (about log2 of how many turns its batches had)
_RECENT_WEIGHT = 0.5

#: calls queued at the start of a batch, with the disk idle, from which the batch commits half of
#: them early so the rest overlaps its fsync (pipelined group commit)
SPLIT_AT_LEAST = 8


class Activation:
    """The live state of one object (see the module docstring)."""

    def __init__(self, runtime: Runtime, object_id: ObjectId, cls: type[DurableObject]) -> None:
        self.runtime = runtime
        self.id = object_id
        self.cls = cls
        self.file = ObjectFile(
            runtime.object_path(object_id),
            object_id,
            synchronous=runtime.object_synchronous,
            defer_sync=runtime.pipelined_sync,
            legacy_path=runtime.legacy_object_path(object_id),
        )
        self.file.before_open = self._before_open
        self.state = ActivationState.ACTIVATING
        self.instance: DurableObject | None = None
        self.queue: collections.deque[Work] = collections.deque()
        #: chain of the running turn (None between turns)
        self.current_chain: object | None = None
        #: activations the running turn is waiting on (edges of the waits-for graph)
        self.awaiting: list[Activation] = []
        #: the alarm as last committed (keeps the catalog and scheduler in step)
        self.committed_alarm: float | None = None
        self.evicted = trio.Event()
        self.last_active = trio.current_time()
        self.turn_seconds = 0.0005  # moving average, for Overloaded's retry_after
        self._evict_reason: str | None = None
        #: the worker's task while it waits for work (``_park``); None while it runs
        self._parked: trio.lowlevel.Task | None = None
        #: the table's idle watch holds an entry for this activation (``Table.arm_idle``)
        self.idle_armed = False
        self._running = False
        #: the work whose turn is running (innermost, for reentrant turns)
        self._running_work: Work | None = None
        #: the worker's cancel scope for the turns of the current batch
        self._batch_scope: trio.CancelScope | None = None
        #: the work the deadline watch cancelled
        self._timed_out: Work | None = None
        self._batches = 0
        self._turns_committed = 0
        #: turns per committed batch, a moving average over the last few batches (``_hold``)
        self._recent_batch_turns = 0.0
        #: committed batches waiting for the next fsync (pipelined group commit), oldest first
        self._unsynced: list[list[Work]] = []
        #: batches the running fsync covers
        self._in_flight: list[list[Work]] = []
        #: a durability round was asked for and has not started yet (``DurabilityRounds``)
        self.round_requested = False
        self._synced: trio.Event | None = None

    #### Submitting work (called by the runtime on behalf of callers)

    def enqueue(self, work: Work) -> None:
        self.queue.append(work)
        if self._parked is not None:
            self.wake()

    def request_eviction(self, reason: str) -> None:
        """Ask the worker to evict this object once it is at rest (idempotent)."""
        if self._evict_reason is None:
            self._evict_reason = reason
        if self._parked is not None:
            self.wake()

    def wake(self) -> None:
        """Wake the worker if it waits for work (a call, a request to leave, the idle deadline)."""
        task, self._parked = self._parked, None
        if task is not None:
            trio.lowlevel.reschedule(task)

    def _park(self) -> Awaitable[None]:
        """Wait for ``wake`` (cheaper than a trio.Event and a cancel scope per wait)."""
        self._parked = trio.lowlevel.current_task()
        return trio.lowlevel.wait_task_rescheduled(self._unpark)  # noqa: ASYNC105 (the worker awaits it)

    def _unpark(self, _: Any) -> trio.lowlevel.Abort:
        self._parked = None
        return trio.lowlevel.Abort.SUCCEEDED

    @property
    def is_parked(self) -> bool:
        return self._parked is not None

    @property
    def idle_since(self) -> float | None:
        """When the worker last finished work, if it waits for more with nothing pending; else None."""
        if self._parked is None or self.queue or self._syncer_running or self._evict_reason is not None:
            return None
        return self.last_active

    def _before_open(self) -> None:
        """The file opens now, on the trio thread: no fold round may delete its WAL any more, and it
        counts among the runtime's open files."""
        self.runtime.folds.settle(self.id.hex)
        self.runtime.open_files.opening(self)

    @property
    def eviction_requested(self) -> bool:
        return self._evict_reason is not None

    @property
    def is_idle(self) -> bool:
        return not self.queue and not self._running and self.state is ActivationState.ACTIVE

    @property
    def resting(self) -> bool:
        """The worker waits for work with nothing queued, running, uncommitted or being fsynced: its
        file may be closed (``ObjectFile.release``) until the next turn opens it again."""
        return (
            self._parked is not None
            and self.state is ActivationState.ACTIVE
            and not self.queue
            and not self._running
            and not self._syncer_running
            and not self.file.has_writes()
        )

    def statistics(self) -> ActivationStatistics:
        return ActivationStatistics(
            queued=len(self.queue),
            running=self._running,
            batches=self._batches,
            turns_committed=self._turns_committed,
        )

    #### The worker

    async def serve(self) -> None:
        """Activate, serve turns until evicted, then release everything."""
        reason = "shutdown"
        try:
            if await self._activate():
                reason = await self._serve_turns()
            else:
                reason = "reset"
        finally:
            await self._close(reason)

    def _set_state(self, new: ActivationState) -> None:
        check_transition(self.state, new)
        self.state = new

    async def _activate(self) -> bool:
        runtime, started = self.runtime, trio.current_time()
        # First of all, so that ``_close`` (which always follows) pairs it with ``object_closed``.
        runtime.hooks.object_opened(self.id)
        try:
            self.file.open_if_exists()
            self.committed_alarm = self.file.stored_alarm()
            instance = self.cls.__new__(self.cls)
            instance.id = self.id
            instance.env = Env(runtime, runtime.app, runtime.clock.now)
            instance.storage = Storage(self.file, runtime.clock.now)
            instance._hub = runtime.sockets
            instance.__init__()  # type: ignore[misc]
        except Exception as exc:
            error = runtime.internal_error(exc, f"activating {self.id}")
            self._fail_queue(lambda: error)
            return False
        self.instance = instance
        if self.cls.on_start is DurableObject.on_start:
            # Nothing to run (the default does nothing): no turn, savepoint or cancel scope, which
            # would cost a new object about as much as its call's own turn.
            self._set_state(ActivationState.ACTIVE)
            runtime.hooks.activated(self.id.cls, trio.current_time() - started)
            return True
        work = Work(_call_on_start, "on_start", started + runtime.settings.call_timeout, object(), False)
        await self.run_reentrant(work)
        if work.error is not None:
            self.file.rollback()
            cause = work.error
            message = f"on_start raised {getattr(cause, 'type', type(cause).__name__)}: {cause}"
            tb = getattr(cause, "traceback", "")
            self._fail_queue(lambda: ActivationFailed(message, traceback=tb))
            return False
        self._set_state(ActivationState.ACTIVE)
        runtime.hooks.activated(self.id.cls, trio.current_time() - started)
        return True

    async def _serve_turns(self) -> str:
        idle_timeout = self.runtime.settings.idle_timeout
        while True:
            if self.queue or self.file.has_writes():
                if not await self._run_batch():
                    return "reset"
                continue
            syncing = self._syncer_running
            if self._evict_reason is None and self.runtime.table.room_waiters:
                self._evict_reason = "capacity"  # callers wait for room and nothing else was idle
            if self._evict_reason is not None and not syncing:
                return self._evict_reason
            # A new call wakes the worker, or a request to leave, or the table's idle watch once it
            # has been idle for idle_timeout; the end of a round does only if the worker then has to
            # leave (``synced``). So waiting costs no cancel scope, and a round no wake-up per object.
            if not self.idle_armed:
                self.runtime.table.arm_idle(self)
            await self._park()
            idle = not self.queue and self._evict_reason is None and not self._syncer_running
            if idle and trio.current_time() >= self.last_active + idle_timeout:
                return "idle"

    async def _run_batch(self) -> bool:
        """Run queued calls back to back, commit them together, then reply. False if reset."""
        runtime = self.runtime
        batch: list[Work] = []
        limit = runtime.settings.max_batch_turns
        # Pipelined, with the disk idle and many calls queued: commit half of them and start its
        # fsync, so the other half runs meanwhile (two groups alternate in steady state). With an
        # fsync running, run all that is queued: this batch cannot be synced before that fsync ends
        # anyway, and one batch costs less than several (a COMMIT, a cancel scope, the bookkeeping).
        # With few queued, run them all too (and maybe hold, see ``_hold``): splitting them would
        # double the fsyncs for little overlap. Only this worker starts fsyncs of this file, so the
        # disk stays idle until this batch commits.
        gate = runtime.gate
        if gate is not None:
            refused = gate.may_write()
            if refused is not None:
                return self._refuse_batch(refused)
        queued = len(self.queue)
        split = limit
        if runtime.pipelined_sync and not self._syncer_running and queued >= SPLIT_AT_LEAST:
            split = (queued + 1) // 2
        started = trio.current_time()
        hold_until = started + runtime.settings.commit_hold
        wrote = False
        try:
            while await self._run_turns(batch, split, limit) and await self._hold(batch, limit, hold_until):
                pass  # calls arrived while the batch was held: run them in it too
            outcome = "durable"
            # (``created`` without writes: the object's first writes were rolled back with the
            # batch; the commit then removes the file they made, so it never existed.)
            wrote = self.file.has_writes() or self.file.created
            if wrote:
                outcome = await runtime.commit(self, len(batch))
            committed = outcome != "failed"
        except BaseException:
            # Stopped abruptly (crash, cancellation): nothing of this batch was committed.
            for work in batch:
                if work.state is not WorkState.FINISHED:
                    work.result = None
                    work.error = ShuttingDown("the runtime stopped before this call's turn committed")
                    work.finish()
            raise
        if wrote and committed:
            self._batches += 1
            self._turns_committed += len(batch)
            self._recent_batch_turns += (len(batch) - self._recent_batch_turns) * _RECENT_WEIGHT
        if not committed:
            for work in batch:
                if work.error is None:
                    work.result = None
                    work.error = ObjectReset(
                        f"{self.id}: the commit of this turn's batch failed; nothing was applied"
                    )
        if outcome == "needs_fsync" and batch:
            self._hand_to_syncer(batch)  # replies leave once the WAL is fsynced
        elif committed and batch and self._syncer_running:
            # Nothing to write, but these turns may have read state whose fsync is still pending:
            # their replies wait for it too (the output gate holds for reads).
            (self._unsynced or self._in_flight).append(batch)
        else:
            for work in batch:
                work.finish()
        now = trio.current_time()
        if batch:
            self.turn_seconds = 0.8 * self.turn_seconds + 0.2 * (now - started) / len(batch)
        self.last_active = now
        runtime.table.touch(self)
        runtime.open_files.touch(self.id.hex)
        return committed

    def _refuse_batch(self, error: ActorError) -> bool:
        """The node is fenced (``Gate.may_write``): fail every queued call with ``error``; none ran.

        Writes still uncommitted (``on_start``'s, committed with the first batch) are rolled back and
        the instance discarded (False: its memory may hold them), as after a failed commit.
        """
        self._fail_queue(lambda: error)
        if self.file.has_writes():
            self.file.rollback()
            self.file.reset_batch_flags()
            return False
        return True

    async def _run_turns(self, batch: list[Work], split: int, limit: int) -> bool:
        """Run queued calls as turns, appending them to ``batch``, until the queue is empty.

        Returns False if the batch must commit now: it reached ``split`` (with writes) or ``limit``,
        a solo turn ran or is next, or the fence went up (``Gate.may_write``: no turn starts after it;
        the next batch refuses what is queued).
        """
        runtime = self.runtime
        queue, pipelined, gate, rounds = self.queue, runtime.pipelined_sync, runtime.gate, runtime.rounds
        while queue and len(batch) < limit:
            # One cancel scope for many turns (a scope per turn would cost more than the turn);
            # the deadline watch cancels it only for a turn that overruns; a fresh one serves the rest.
            with trio.CancelScope() as scope:
                self._batch_scope = scope
                while queue and len(batch) < limit:
                    work = queue.popleft()
                    if work.state is not WorkState.QUEUED:
                        continue  # abandoned by its caller or timed out while queued
                    if work.solo and (batch or self.file.has_writes()):
                        queue.appendleft(work)  # commit what came before it first
                        break
                    if gate is not None and batch and gate.may_write() is not None:
                        queue.appendleft(work)
                        return False
                    batch.append(work)
                    await self._run_turn(work)
                    if work.solo:
                        break
                    if pipelined:
                        rounds.poll()  # release replies the last round made durable
                    if len(batch) >= split and self.file.has_writes():
                        break
            self._batch_scope = None
            if (len(batch) >= split and self.file.has_writes()) or (batch and batch[-1].solo):
                return False
            if queue and queue[0].solo:
                return False
        return len(batch) < limit

    async def _hold(self, batch: list[Work], limit: int, hold_until: float) -> bool:
        """Group commit under load: wait for more calls to join ``batch``; True if some did.

        Only with pipelined sync, writes to commit, no fsync of this file running (else the batch
        commits at once and waits for that fsync), until ``hold_until`` (``commit_hold`` after the
        batch began), and only for a hot object: this batch already has more than one turn, or its
        recent committed batches averaged two turns or more (``_RECENT_WEIGHT``). An object that
        gets one call at a time (a spread workload, where most calls create their object) would
        otherwise hold each call the whole ``commit_hold`` on a busy loop, for calls that never
        come. The wait ends as soon as the event loop has nothing else to run
        (``wait_all_tasks_blocked``), so a lightly loaded process commits at once and a busy one
        keeps collecting turns. Why: every batch costs a COMMIT, an fsync, and its thread's wake-up
        and GIL hand-offs, which on a core shared with the event loop cost more than several turns.
        At ~900 requests/s on one core (``counter-hot``), batches of 5 made the node spend a fifth
        more CPU per request than the batches of ~16 that a 20 ms hold collects.
        """
        if (
            not self.runtime.pipelined_sync
            or len(batch) >= limit
            or self._syncer_running
            or not self.file.has_writes()
            or (len(batch) < 2 and self._recent_batch_turns < 2)
            or trio.current_time() >= hold_until
        ):
            return False
        # Not shielded: a crash or shutdown cancels it like any other wait of the batch.
        with trio.move_on_at(hold_until):
            await trio.testing.wait_all_tasks_blocked()
        return bool(self.queue)

    #### Pipelined group commit: the fsync off the trio thread while the next batch runs
    #
    # Committed batches wait in ``_unsynced`` for a durability round (``_durability.py``), which
    # syncs the files of every object that committed since the last round began, in the sync pool,
    # and hands them back with ``synced``. The round starts synchronously when none is in flight
    # (not from a task: a task could only start once the worker yields, and the worker runs turns
    # back to back without yielding), and the worker notices a finished round between turns.

    @property
    def _syncer_running(self) -> bool:
        return bool(self._in_flight or self._unsynced)

    def _hand_to_syncer(self, batch: list[Work]) -> None:
        self._unsynced.append(batch)
        self.runtime.rounds.request(self)

    def hand_to_round(self) -> list[list[Work]]:
        """A round starts with this object: its committed batches are the round's now."""
        self._in_flight, self._unsynced = self._unsynced, []
        self.runtime.commits_in_flight += 1
        return self._in_flight

    def synced(self, batches: list[list[Work]], error: BaseException | None) -> None:
        """The round holding ``batches`` ended: release their replies (or fail them with ``error``)."""
        runtime = self.runtime
        if self._in_flight is batches:
            self._in_flight = []
        runtime.commits_in_flight -= 1
        if error is not None:
            failure = runtime.internal_error(error, f"fsync of {self.id}")
            message = f"{self.id}: its commit could not be made durable ({failure}); the outcome is unknown"
            for batch in batches:
                for work in batch:
                    work.result, work.error = None, ObjectReset(message)
            self.request_eviction("reset")
        for batch in batches:
            for work in batch:
                work.finish()
        self.last_active = trio.current_time()
        if not self._syncer_running and self._synced is not None:
            self._synced.set()
            self._synced = None
        # The idle watch wakes the worker once it is idle long enough; now only to leave.
        if self._parked is not None and (self._evict_reason is not None or runtime.table.room_waiters):
            self.wake()

    async def _wait_synced(self) -> None:
        while self._syncer_running:
            if self._synced is None:
                self._synced = trio.Event()
            await self._synced.wait()

    def cancel_turn(self, work: Work) -> None:
        """Cancel ``work``'s turn because its deadline passed (called by the deadline watch)."""
        if self._running_work is work and self._batch_scope is not None:
            self._timed_out = work
            self._batch_scope.cancel()

    async def run_reentrant(self, work: Work) -> None:
        """Run a call from the running turn's own chain now, nested in that turn.

        It runs in the calling task, outside the worker's batch scope, so it gets its own deadline scope.
        """
        outer = self._running_work
        with trio.CancelScope(deadline=work.deadline) as scope:
            await self._run_turn(work)
        self._running_work = outer
        if scope.cancelled_caught:
            work.error = CallTimeout(f"{work.label}: deadline passed during its reentrant turn")
        if outer is not None and work.outbox and work.error is None:
            # Nested in a running turn: its socket frames wait for the outer turn's commit.
            outer.outbox = [*(outer.outbox or []), *work.outbox]
            work.outbox = None
        work.finish()

    async def _run_turn(self, work: Work) -> None:
        """Run ``work`` as a turn: a savepoint, the user's code, the result check.

        Leaves the outcome in ``work.result`` / ``work.error``; re-raises only trio.Cancelled (after
        rolling back), which ends the enclosing cancel scope.
        """
        file, runtime = self.file, self.runtime
        work.state = WorkState.RUNNING
        outer_chain, outer_running = self.current_chain, self._running
        self.current_chain, self._running, self._running_work = work.chain, True, work
        token = current_turn.set(TurnContext(self, work.chain))
        file.push_level()
        timed = runtime.times_turns
        started = trio.current_time() if timed else 0.0
        try:
            fn = work.fn
            if fn is None:  # a public method, already checked and bound by Runtime.call
                result = await getattr(self.instance, work.label)(*work.args, **(work.kwargs or {}))
            else:
                result = await fn(self.instance)  # type: ignore[arg-type]
            if work.check_result and type(result) not in _SCALARS:
                problem = _codec.describe_unserializable(result, "result")
                if problem:
                    raise ResultNotSerializable(f"{work.label}() returned a bad value: {problem}")  # noqa: TRY301
        except trio.Cancelled:
            file.pop_level(ok=False)
            if self._timed_out is work:
                self._timed_out = None
                work.error = CallTimeout(
                    f"{work.label}: deadline passed during its turn; its writes were rolled back"
                )
            else:
                work.error = ShuttingDown("the runtime stopped during this call's turn")
            raise
        except BaseException as exc:
            file.pop_level(ok=False)
            work.error = _as_actor_error(exc)
            if not isinstance(exc, Exception):
                raise
        else:
            file.pop_level(ok=True)
            work.result = result
        finally:
            current_turn.reset(token)
            self.current_chain, self._running = outer_chain, outer_running
            if timed:
                runtime.hooks.turn_finished(self.id.cls, work.label, trio.current_time() - started)

    def _fail_queue(self, make_error: Callable[[], BaseException]) -> None:
        while self.queue:
            work = self.queue.popleft()
            if work.state is WorkState.QUEUED:
                work.fail(make_error())

    async def _close(self, reason: str) -> None:
        runtime = self.runtime
        if self.state is not ActivationState.EVICTING:
            self._set_state(ActivationState.EVICTING)
        if reason == "reset":
            self._fail_queue(lambda: ObjectReset(f"{self.id} was reset; this call never ran"))
        else:
            self._fail_queue(lambda: ShuttingDown(f"{self.id} was evicted; this call never ran"))
        # Every eviction leaves one self-contained file (no -wal), in a worker thread: a checkpoint
        # of the few frames a small object's WAL holds (its WAL deleted by the fold round that makes
        # it durable, ``_folds.py``), or nothing for an empty one. Except a move:
        # its file and WAL are read as one image and deleted once the new owner stored it (``_moves``).
        # And a reset (a commit or its fsync failed): nothing more is written to a file whose last
        # writes may not be durable; its WAL is folded in at the clean shutdown.
        checkpoint = reason not in ("moved", "reset")
        if reason == "reset":
            runtime.fold_later(self.file.path)
        try:
            if not runtime.closing_abruptly:
                with trio.CancelScope(shield=True):
                    await self._wait_synced()
            # Idle, capacity and shutdown evictions fold the WAL in without an fsync; a round of
            # them ends with one barrier for all (``_folds.py``). A forced one is done when it returns.
            unsynced = reason in ("idle", "capacity", "shutdown")
            close = functools.partial(self.file.close, checkpoint=checkpoint, sync=not unsynced)
            left = False
            if runtime.closing_abruptly:
                self.file.close()  # rolls back anything uncommitted: a crash keeps only commits
            elif not runtime.io_in_threads or self.file.closes_at_once:
                left = close()
            else:
                with trio.CancelScope(shield=True):
                    left = await trio.to_thread.run_sync(close)
            if left:
                runtime.folds.add(self.id.hex, self.file.path)
        except Exception as exc:
            runtime.internal_error(exc, f"closing {self.id}")
        finally:
            runtime.hooks.object_closed(self.id)
            self.instance = None
            self._set_state(ActivationState.EVICTED)
            runtime.table.remove(self)
            runtime.open_files.forget(self)
            self.evicted.set()
            runtime.hooks.evicted(self.id.cls, reason)


async def _call_on_start(instance: DurableObject) -> None:
    await instance.on_start()


def _as_actor_error(exc: BaseException) -> ActorError:
    """What the caller sees when a turn raised ``exc``."""
    if isinstance(exc, ActorError):
        return exc
    tb = "".join(traceback.format_exception(exc))
    return UserError(type(exc).__name__, str(exc), traceback=tb)


def retry_after(activation: Activation) -> float:
    """Seconds until the queue of ``activation`` has probably drained (Overloaded's hint)."""
    estimate = len(activation.queue) * activation.turn_seconds
    return max(0.05, math.ceil(estimate * 100) / 100)
