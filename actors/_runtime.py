"""The runtime: hosts the objects of one App on one data folder, in one trio run.

Guarantees
- ``call`` validates before anything reaches an object: the class and method exist and are public, the
  arguments bind to the signature and are plain values; otherwise the caller gets the named error at once.
- Arguments and results are copied through CBOR, so caller and object never share a mutable value (the
  same isolation a remote call has).
- Backpressure, not memory: a call to an object whose queue holds ``max_queue_depth`` calls fails at once
  with Overloaded and a retry-after hint.
- Closing drains (``_lifetime.py``): new calls fail with ShuttingDown, queued and running turns finish
  and commit, every file is closed; only then does ``open_runtime`` return. ``crash()`` instead stops at
  once, keeping only what was committed, like a SIGKILL.
"""

from __future__ import annotations

import functools
import logging
import secrets
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import apsw
import trio

from . import _codec
from ._activation import Activation, retry_after
from ._alarms import AlarmRefused, AlarmScheduler
from ._app import App
from ._catalog import Catalog, CatalogEntry
from ._clock import EpochClock
from ._creations import Creations
from ._deadlines import DeadlineWatch
from ._durability import DurabilityRounds, Round
from ._folds import Folds
from ._hooks import Hooks, RuntimeStatistics
from ._ids import ObjectId
from ._lifecycle import ActivationState
from ._moves import AdoptOutcome, Arrival, Gate, Moves, Released
from ._movework import MoveWork
from ._object import DurableObject, Stub
from ._resting import OpenFiles
from ._settings import Durability, Settings
from ._sockets import SocketHub
from ._syncpool import SyncPool
from ._table import Table
from ._turn import current_turn
from ._work import TurnFn, Work, WorkState
from .errors import (
    ActorError,
    Deadlock,
    InternalError,
    InvalidArgument,
    ObjectNotFound,
    Overloaded,
    OwnerUnavailable,
    ShuttingDown,
)

__all__ = ["Runtime"]

CommitResult = Literal["durable", "needs_fsync", "failed"]

log = logging.getLogger("actors")

#: file descriptors an open object file holds (the database and its WAL)
FDS_PER_OBJECT = 2
#: file descriptors kept for everything else (sockets, the catalog, threads, logs)
FD_RESERVE = 1024


def open_file_budget(requested: int) -> int:
    """``requested``, capped so open object files cannot exhaust the open-file limit.

    Raises the soft limit to the hard limit first (as servers commonly do); logs when it still caps.
    """
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft != resource.RLIM_INFINITY and (hard == resource.RLIM_INFINITY or hard > soft):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
    except (ImportError, ValueError, OSError):
        return requested
    if soft == resource.RLIM_INFINITY:
        return requested
    budget = max(64, (soft - FD_RESERVE) // FDS_PER_OBJECT)
    if budget < requested:
        log.warning(
            "max_open_files lowered from %d to %d: the open-file limit is %d", requested, budget, soft
        )
    return min(requested, budget)


class Runtime:
    """Objects of one App on one data folder. Make one with :func:`open_runtime`."""

    def __init__(
        self,
        app: App,
        data_dir: Path,
        settings: Settings,
        hooks: Hooks,
        clock: EpochClock,
        *,
        io_in_threads: bool,
    ) -> None:
        self.app = app
        self.data_dir = data_dir
        self.settings = settings
        self.hooks = hooks
        self.clock = clock
        #: run fsync, catalog writes and close() in worker threads (off: everything inline, for
        #: deterministic tests under an autojumping MockClock)
        self.io_in_threads = io_in_threads
        #: commit with synchronous=NORMAL and fsync the WAL ourselves, off the trio thread, while the
        #: next batch runs (pipelined group commit); otherwise SQLite's own synchronous setting rules
        self.pipelined_sync = io_in_threads and settings.durability is Durability.FSYNC
        #: the synchronous PRAGMA of object files
        self.object_synchronous = (
            "NORMAL" if self.pipelined_sync else settings.durability.sqlite_synchronous
        )
        self.catalog = Catalog(data_dir / "catalog.sqlite3", synchronous="FULL")
        self._objects = str(data_dir / "objects")
        #: folders of object files known to exist with a durable entry (filled as files are made)
        self.durable_folders: set[str] = set()
        #: classes with files in the older two-level layout (found once, here: nothing makes more)
        self._legacy_classes = _classes_with_legacy_layout(data_dir / "objects")
        #: objects in memory at once (Settings.max_live_objects)
        self.max_live_objects = settings.max_live_objects
        #: the live objects whose files are open, at most max_open_files (capped by the open-file limit)
        self.open_files = OpenFiles(open_file_budget(settings.max_open_files))
        self.alarms = AlarmScheduler(self)
        self.deadlines = DeadlineWatch()
        self.sockets = SocketHub(self)
        self.sync_pool = SyncPool()
        #: makes committed batches durable, many objects per round (``_durability.py``)
        self.rounds = DurabilityRounds(
            self.sync_pool,
            self._round_done,
            volume=data_dir if settings.sync_volume and self.pipelined_sync else None,
        )
        #: makes new objects durable (file and catalog entry), many per round (``_creations.py``)
        self.creations = Creations(
            self.sync_pool,
            self.catalog,
            self.durable_folders,
            clock.now,
            sync_volume=self.rounds.volume_sync,
        )
        #: the turn_finished hook is overridden: turns are timed only then (two clock reads a turn)
        self.times_turns = type(hooks).turn_finished is not Hooks.turn_finished
        self._call_timeout = settings.call_timeout
        self._max_queue_depth = settings.max_queue_depth
        #: where objects may be activated and whether this node may write (``set_gate``; None: anywhere)
        self.gate: Gate | None = None
        self._moves = Moves(self)
        #: evictions fold WAL files in unsynced; rounds of one barrier end them (``_folds.py``)
        self.folds = Folds(MoveWork(self), whole_volume=self.rounds.volume_sync is not None)
        self.closing = False
        self.closing_abruptly = False
        self.commits_in_flight = 0
        self._batches = 0
        self._turns = 0
        self._nursery: trio.Nursery | None = None
        self.table: Table

    #### Paths and stubs

    def object_path(self, object_id: ObjectId) -> Path:
        """``objects/<Class>/<h0h1>/<hex>.sqlite3``: 256 folders per class (4,000 files each at a
        million objects). Only a class's first few hundred objects make a folder: each costs a new
        inode and an fsync of its parent, which the deeper layout before paid for most objects."""
        h = object_id.hex
        # One parse of one string (four ``/`` joins cost a new object's activation 10-15 µs)
        return Path(f"{self._objects}/{object_id.cls}/{h[:2]}/{h}.sqlite3")

    def legacy_object_path(self, object_id: ObjectId) -> Path | None:
        """Where versions before the flat layout kept the file (``<h0h1>/<h2h3>/``; moved on use), or
        None if the class had no such folder when the runtime opened (no lookup for new objects)."""
        if object_id.cls not in self._legacy_classes:
            return None
        h = object_id.hex
        return self.data_dir / "objects" / object_id.cls / h[:2] / h[2:4] / f"{h}.sqlite3"

    def get(self, cls: str | type[DurableObject], name: str) -> Stub:
        """A stub for object ``name`` of class ``cls``."""
        return Stub(self, self.app.id_from_name(cls, name))

    def get_by_id(self, object_id: ObjectId) -> Stub:
        self.app.class_of(object_id.cls)
        return Stub(self, object_id)

    #### Calls

    async def call(
        self,
        object_id: ObjectId,
        method: str,
        args: tuple[Any, ...] | list[Any] = (),
        kwargs: dict[str, Any] | None = None,
        *,
        timeout: float | None = None,
    ) -> Any:
        """Call ``method`` on the object as one turn and return its result once durable.

        Raises UnknownClass, UnknownMethod, InvalidArgument (arguments that do not bind or are not plain
        values), Overloaded, CallTimeout, Deadlock, ShuttingDown, ObjectReset, or UserError (the method
        raised; its writes were rolled back).
        """
        started = trio.current_time()
        outcome = "ok"
        try:
            args, kwargs = self._checked_arguments(object_id, method, args, kwargs)
            deadline = started + (self._call_timeout if timeout is None else timeout)
            # fn=None: the worker calls the method by name (no closure, no wrapping coroutine)
            result = await self._run(object_id, None, method, deadline, True, False, args, kwargs)
            return _codec.loads(_codec.dumps(result)) if type(result) in (list, dict) else result
        except ActorError as exc:
            outcome = exc.type
            raise
        finally:
            self.hooks.call_finished(object_id.cls, method, outcome, trio.current_time() - started)

    def start_call(
        self,
        object_id: ObjectId,
        method: str,
        args: tuple[Any, ...] | list[Any],
        kwargs: dict[str, Any] | None,
        timeout: float | None,
        reply: Callable[[Any, ActorError | None], None],
    ) -> Work | None:
        """``call`` without a waiting task, for a server answering many calls on one connection.

        If the object is live, queue the call and return its Work: ``reply(result, None)`` or
        ``reply(None, error)`` then runs exactly once, in the trio thread, when the outcome is final
        and durable, with the same guarantees, errors and copies as ``call``. ``work.abandon()`` (the
        caller went away) keeps a still-queued call from running, and ``reply`` from being called.
        If the object is not live (it must be activated, which waits), return None and do nothing:
        use ``call``. Errors found before queueing are raised here. Never from inside a turn.
        """
        started = trio.current_time()
        activation = self.table.live.get(object_id.hex)
        if activation is None or activation.state is ActivationState.EVICTING:
            return None
        try:
            if self.closing:
                raise ShuttingDown("the runtime is shutting down")
            args, kwargs = self._checked_arguments(object_id, method, args, kwargs)
            _check_queue_room(activation, self._max_queue_depth)
        except ActorError as exc:
            self.hooks.call_finished(object_id.cls, method, exc.type, trio.current_time() - started)
            raise
        deadline = started + (self._call_timeout if timeout is None else timeout)
        work = Work(None, method, deadline, object(), True, args, kwargs)
        work.callback = functools.partial(self._replied, object_id.cls, started, reply)
        activation.enqueue(work)
        self.deadlines.watch(work, activation)
        return work

    def _replied(
        self, cls: str, started: float, reply: Callable[[Any, ActorError | None], None], work: Work
    ) -> None:
        """A started call finished (called by ``Work.finish``): count it, copy its result, reply."""
        error, result = work.error, work.result
        try:
            if error is None and type(result) in (list, dict):
                result = _codec.loads(_codec.dumps(result))
        except Exception as exc:  # checked serializable when the turn ended: a bug of ours
            error, result = self.internal_error(exc, f"copying the result of {work.label}"), None
        if error is not None and not isinstance(error, ActorError):
            error = self.internal_error(error, f"the outcome of {work.label}")
        outcome = "ok" if error is None else error.type
        self.hooks.call_finished(cls, work.label, outcome, trio.current_time() - started)
        try:
            reply(result, error)
        except Exception as exc:  # the server's reply callback failed: never stop the other replies
            self.internal_error(exc, f"replying to {work.label}")

    def _checked_arguments(
        self,
        object_id: ObjectId,
        method: str,
        args: tuple[Any, ...] | list[Any],
        kwargs: dict[str, Any] | None,
    ) -> tuple[tuple[Any, ...] | list[Any], dict[str, Any]]:
        """The arguments, bound to the public method's signature and the object's own copy."""
        bound = self.app.method(object_id.cls, method)
        if kwargs is None:
            kwargs = {}
        elif type(kwargs) is not dict:
            raise InvalidArgument("kwargs must be a dict")
        if args or kwargs:
            flat = _codec.is_flat(args) and _codec.is_flat(kwargs)
            if not flat:
                problem = _codec.describe_unserializable(list(args), "args")
                problem = problem or _codec.describe_unserializable(kwargs, "kwargs")
                if problem:
                    raise InvalidArgument(problem)
            bound.bind(tuple(args), kwargs)
            if not flat:
                # A CBOR round trip gives the object its own copy, as a remote call would.
                args, kwargs = _codec.loads(_codec.dumps([list(args), kwargs]))
        else:
            bound.bind((), kwargs)
        return args, kwargs

    async def submit(
        self,
        object_id: ObjectId,
        fn: TurnFn,
        label: str,
        *,
        timeout: float | None = None,
        check_result: bool = False,
        solo: bool = False,
    ) -> Any:
        """Run ``await fn(instance)`` as a turn of the object; the node uses this for socket events.

        ``solo`` turns run alone, after every earlier turn committed, with no transaction open.
        """
        deadline = trio.current_time() + (self._call_timeout if timeout is None else timeout)
        return await self._run(object_id, fn, label, deadline, check_result, solo, (), None)

    async def run_hook(self, object_id: ObjectId, hook: str, *args: Any) -> Any:
        """Run the object's lifecycle hook ``hook(*args)`` as a turn (the socket events); like
        ``submit``, without a closure per event."""
        deadline = trio.current_time() + self._call_timeout
        return await self._run(object_id, None, hook, deadline, False, False, args, None)

    async def _run(
        self,
        object_id: ObjectId,
        fn: TurnFn | None,
        label: str,
        deadline: float,
        check_result: bool,
        solo: bool,
        args: tuple[Any, ...] | list[Any],
        kwargs: dict[str, Any] | None,
    ) -> Any:
        """Queue a turn on the object's activation (or run it nested, for its own call chain) and
        return its outcome once durable."""
        if self.closing:
            raise ShuttingDown("the runtime is shutting down")
        context = current_turn.get()
        activation = self.table.live.get(object_id.hex)
        if activation is None or activation.state is ActivationState.EVICTING:
            activation = await self.table.get(object_id, deadline)
        if context is not None and activation.current_chain is context.chain:
            work = Work(fn, label, deadline, context.chain, check_result, args, kwargs)
            await activation.run_reentrant(work)
            return work.outcome()
        _check_queue_room(activation, self._max_queue_depth)
        caller = context.activation if context is not None else None
        if caller is not None:
            _check_no_cycle(caller, activation, label)
        work = Work(fn, label, deadline, context.chain if context else object(), check_result, args, kwargs)
        work.solo = solo
        activation.enqueue(work)
        self.deadlines.watch(work, activation)
        if caller is not None:
            caller.awaiting.append(activation)
        try:
            await work.wait()
        except trio.Cancelled:
            if work.state is WorkState.QUEUED:
                work.state = WorkState.ABANDONED  # the caller went away: never run it
            raise
        finally:
            if caller is not None:
                caller.awaiting.remove(activation)
        return work.outcome()

    #### Commit (called by activations)

    async def commit(self, activation: Activation, turns: int) -> CommitResult:
        """Commit ``activation``'s batch: ``"durable"``; ``"needs_fsync"`` (committed, and with
        ``pipelined_sync`` the WAL must be fsynced before replying); or ``"failed"`` (rolled back)."""
        file = activation.file
        if file.created and file.is_empty():
            # Every write of the batch was rolled back: keep the promise that an object nobody wrote
            # to has no file and no catalog entry.
            file.rollback()
            file.remove()
            file.reset_batch_flags()
            return "durable"
        # A new object's first batch ran in memory (only with pipelined_sync): a creation round
        # writes its file and catalog entry, durably, with those of every object created meanwhile.
        # It has an alarm only if this batch set one.
        created = file.in_memory
        old_alarm = activation.committed_alarm
        if file.alarm_touched or (file.created and not created):
            new_alarm = file.stored_alarm()
        else:
            new_alarm = None if created else old_alarm
        record = file.created or new_alarm != old_alarm
        # A commit that will fsync (a checkpoint, a new WAL's header) runs in a thread, like one
        # that records: never on the event loop.
        in_thread = self.io_in_threads and (record or file.commit_syncs)
        now = self.clock.now() if record and not created else 0.0

        def commit_sync() -> None:
            if record:  # the catalog first: it may run ahead of the file, never behind
                self.catalog.record(activation.id, new_alarm, now)
            file.commit(checkpoint=in_thread or not self.io_in_threads)

        started = trio.current_time()
        self.commits_in_flight += 1
        try:
            if created:
                await self.creations.create(activation.id, file.path, file.image(), new_alarm)
                file.materialized()
            elif in_thread:
                await self.sync_pool.run(commit_sync)  # uncancellable, like a shielded thread
            else:
                # Inline (no checkpoint, so nothing can cancel it): with pipelined_sync the COMMIT
                # writes the WAL without fsync (the activation's syncer makes it durable before any
                # reply); otherwise it is either not fsynced at all (POWER_LOSS_UNSAFE) or the test
                # harness wants no threads.
                commit_sync()
        except Exception as exc:
            self.internal_error(exc, f"commit of {activation.id}")
            try:
                file.rollback()
            except Exception as rollback_exc:
                self.internal_error(rollback_exc, f"rollback of {activation.id}")
            file.reset_batch_flags()
            return "failed"
        finally:
            self.commits_in_flight -= 1
        deleted = file.deleted_all
        file.reset_batch_flags()
        if new_alarm != old_alarm:
            activation.committed_alarm = new_alarm
            self.alarms.set(activation.id, new_alarm)
        self._batches += 1
        self._turns += turns
        self.hooks.committed(trio.current_time() - started, turns)
        if deleted and file.is_empty():
            file.remove()  # nothing left to fsync: the file and its WAL are gone
            self.catalog.forget(activation.id)
            return "durable"
        return "needs_fsync" if self.pipelined_sync and not created else "durable"

    def _round_done(self, finished: Round) -> None:
        """A durability round ended (on the trio thread, before any of its replies leaves)."""
        self.hooks.synced(trio.current_time() - finished.started, len(finished.members))

    def spawn(self, fn: Any) -> None:
        """Start a background task of the runtime (activation helpers)."""
        assert self._nursery is not None
        self._nursery.start_soon(fn)

    #### Alarms (called by the scheduler)

    async def run_alarm(self, object_id: ObjectId, retries: int, *, force: bool = False) -> bool:
        """Run the object's alarm if it is due (or set at all, with ``force``); False if it was not
        (a stale catalog entry, or an alarm moved later). AlarmRefused if the gate or the fence
        refused its turn before it ran (``OwnerUnavailable``)."""
        clock, fired_at = self.clock, trio.current_time()
        reached = False

        async def turn(instance: DurableObject) -> tuple[bool, float | None]:
            nonlocal reached
            reached = True
            file = instance.storage._file
            at = file.stored_alarm()
            # Due-ness is decided in trio time, as the scheduler decided it (a round trip through
            # epoch seconds could round below ``at`` and make a due alarm look early forever).
            if at is None or (not force and clock.to_trio(at) > fired_at):
                return False, at
            writes = file.alarm_writes
            await instance.alarm()
            if file.alarm_writes == writes:  # alarm() neither set nor deleted it: it is done
                instance.storage.delete_alarm()
            return True, None

        try:
            ran, stored = await self.submit(object_id, turn, "alarm")
        except OwnerUnavailable:
            if reached:
                raise  # alarm() itself raised it: an ordinary failure
            raise AlarmRefused(f"{object_id}: the gate or the fence refused its alarm") from None
        if not ran:
            self.alarms.set(object_id, stored)
            self.catalog.set_alarm(object_id, stored)
        return bool(ran)

    async def clear_failed_alarm(self, object_id: ObjectId) -> None:
        async def turn(instance: DurableObject) -> None:
            instance.storage.delete_alarm()

        try:
            await self.submit(object_id, turn, "alarm")
        except ActorError as exc:
            log.warning("could not delete the failed alarm of %s: %s", object_id, exc)

    def log_alarm_gave_up(self, object_id: ObjectId, exc: ActorError) -> None:
        log.error("alarm of %s failed after all retries; deleted: %s: %s", object_id, exc.type, exc)

    #### Moving objects between nodes (``_moves.py``)

    def set_gate(self, gate: Gate | None) -> None:
        """Consult ``gate`` before activating an object and before each batch of turns (see ``Gate``)."""
        self.gate = gate

    def holds(self, object_id: ObjectId) -> bool:
        """Whether the object is live here or has a catalog entry here (no object is woken)."""
        return self._moves.holds(object_id)

    async def release(
        self,
        object_id: ObjectId,
        *,
        close_code: int = 4012,
        reason: str = "object moved",
        inline_bytes: int = 0,
    ) -> Released | None:
        """Let the object leave this node; returns its database as one self-contained file, or None
        if it has no storage here.

        Precondition: the gate refuses to activate it already (else RuntimeError). Returns once its
        running and queued turns committed durably, its sockets were closed with ``close_code`` and
        ``reason`` (``on_close`` does not run here) and it was closed. A database of at most
        ``inline_bytes`` comes back as bytes (``Released.data``: read through SQLite with its WAL
        applied, no checkpoint); a bigger one is checkpointed into its file (no ``-wal``), to be read
        from ``Released.path``. Concurrent releases of one object get the same answer.
        """
        return await self._moves.release(object_id, close_code, reason, inline_bytes)

    def fold_later(self, path: Path) -> None:
        """Fold the WAL left beside ``path`` into it at the clean shutdown (if both still exist)."""
        self._moves.unfolded.add(path)

    async def fold_released(self) -> list[Path]:
        """At a clean shutdown: fold the WAL files ``fold_later`` listed (``Moves.fold_released``)."""
        return await self._moves.fold_released()

    def staging_path(self, object_id: ObjectId) -> Path:
        """Where to write the bytes of the object's file as they arrive (its folder is made)."""
        return self._moves.staging_path(object_id)

    async def adopt(self, arrivals: Sequence[Arrival]) -> list[AdoptOutcome]:
        """Store arriving objects (their bytes in the ``Arrival``, or their files written at
        ``staging_path``); one outcome per arrival, in order.

        An object is stored here (file durable under its name, catalog entry with its alarm committed,
        alarm scheduled) only once this returns ``stored`` for it; nothing is activated and the gate
        is not consulted. A SHA-256 mismatch or missing file fails that arrival alone (InvalidArgument);
        an object held here already keeps this node's copy (``already_held``). Raises InternalError if
        the batch could not be made durable: then none of it is held here.
        """
        return await self._moves.adopt(arrivals)

    async def discard(self, object_ids: Sequence[ObjectId]) -> None:
        """Delete this node's copies of released objects: files, catalog entries, pending alarms,
        durably when this returns. Precondition: released, and the gate refuses them (a live object
        raises RuntimeError). Idempotent."""
        await self._moves.discard(object_ids)

    #### Administration

    def internal_error(self, exc: BaseException, context: str) -> InternalError:
        """Log ``exc`` under a fresh reference; return the error a caller may see."""
        reference = secrets.token_hex(6)
        log.error("internal error (reference %s) in %s", reference, context, exc_info=exc)
        self.hooks.internal_error(reference, f"{context}: {exc!r}")
        return InternalError(f"internal error; reference = {reference}", reference=reference)

    def list_objects(
        self,
        *,
        cls: str | None = None,
        prefix: str | None = None,
        limit: int = 100,
        after: tuple[str, str, str] | None = None,
    ) -> list[CatalogEntry]:
        """Objects with storage, from the catalog (no object is woken)."""
        return self.catalog.list(cls=cls, prefix=prefix, limit=limit, after=after)

    async def export(self, object_id: ObjectId, destination: str | Path) -> None:
        """Write a consistent snapshot of the object's database to ``destination`` (a new SQLite file).

        The snapshot is taken between turns, after every earlier turn committed, with SQLite's backup
        API; calls queued behind it wait. Raises ObjectNotFound if the object has no storage.
        """
        self.app.class_of(object_id.cls)
        destination = Path(destination)

        async def snapshot(instance: DurableObject) -> None:
            context = current_turn.get()
            assert context is not None
            await context.activation._wait_synced()  # export only what is durable
            source = instance.storage._file.readable()
            if source is None:
                raise ObjectNotFound(f"{object_id} has no storage")

            def copy() -> None:
                target = apsw.Connection(str(destination))
                try:
                    with target.backup("main", source, "main") as backup:
                        backup.step(-1)
                finally:
                    target.close()

            if self.io_in_threads:
                await trio.to_thread.run_sync(copy)
            else:
                copy()

        await self.submit(object_id, snapshot, "export", solo=True)

    async def delete_object(self, object_id: ObjectId) -> None:
        """Delete all of the object's storage (its file and catalog entry go once committed)."""
        self.app.class_of(object_id.cls)

        async def delete_all(instance: DurableObject) -> None:
            instance.storage.delete_all()

        await self.submit(object_id, delete_all, "delete")

    def is_live(self, object_id: ObjectId) -> bool:
        """Whether the object is in memory now (False: evicted, or never activated)."""
        return self.table.find(object_id) is not None

    async def evict(self, object_id: ObjectId) -> None:
        """Evict the object once its queued work is done; returns when its file is closed."""
        activation = self.table.find(object_id)
        if activation is not None:
            activation.request_eviction("forced")
            await activation.evicted.wait()

    def live_ids(self) -> dict[str, ObjectId]:
        """hex id -> id of every object in memory now (evicting ones included: their file is open)."""
        return {hex_id: activation.id for hex_id, activation in self.table.live.items()}

    def active_ids(self, since: float) -> set[str]:
        """hex id of every live object that worked at or after ``since`` (trio time)."""
        return {hex_id for hex_id, activation in self.table.live.items() if activation.last_active >= since}

    def stored_ids(self) -> tuple[str, ...]:
        """The hex id of every object with storage on this node (from the catalog; none is woken)."""
        return self.catalog.ids()

    def count_objects(self) -> int:
        """Objects with storage on this node (a count of the catalog; no object is woken)."""
        return self.catalog.count()

    def statistics(self) -> RuntimeStatistics:
        queues = [len(a.queue) for a in self.table.live.values()]
        return RuntimeStatistics(
            live_objects=len(queues),
            queued_calls=sum(queues),
            max_queue_depth=max(queues, default=0),
            commits_in_flight=self.commits_in_flight,
            batches_committed=self._batches,
            turns_committed=self._turns,
            pending_alarms=len(self.alarms),
            open_sockets=self.sockets.count(),
            open_files=len(self.open_files),
            files_rested=self.open_files.rested,
        )

    def attach(self, nursery: trio.Nursery) -> None:
        """Run in ``nursery`` (``open_runtime``): the table of live objects, the fold rounds, crash."""
        self._nursery = nursery
        self.table = Table(self, nursery)
        self.folds.start(nursery.start_soon)

    def crash(self) -> None:
        """Stop at once, as if killed: uncommitted turns are lost, nothing is drained."""
        self.closing = self.closing_abruptly = True
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel()


def _check_no_cycle(caller: Activation, target: Activation, label: str) -> None:
    """Raise Deadlock if ``caller`` waiting on ``target`` closes a cycle of waiting turns."""
    stack, seen = [target], set()
    while stack:
        node = stack.pop()
        if node is caller:
            raise Deadlock(
                f"{caller.id} -> {target.id}.{label}() would wait on itself: {target.id}'s running "
                f"turn is (indirectly) waiting on {caller.id}; the call was refused instead of hanging"
            )
        if id(node) in seen or node.current_chain is None:
            continue
        seen.add(id(node))
        stack.extend(node.awaiting)


def _check_queue_room(activation: Activation, max_queue_depth: int) -> None:
    """Overloaded (with a retry-after hint) if ``activation`` already queues ``max_queue_depth`` calls."""
    if len(activation.queue) >= max_queue_depth:
        raise Overloaded(
            f"{activation.id} has {len(activation.queue)} calls queued (max_queue_depth)",
            retry_after=retry_after(activation),
        )


def _classes_with_legacy_layout(objects: Path) -> set[str]:
    """Classes under ``objects`` with a folder two levels down (the older layout's ``<h2h3>``).

    A folder's link count is 2 plus its subfolders on ext4 and most file systems, so one stat per
    ``<h0h1>`` folder tells, without listing its files; a count of 1 (a file system that does not
    count, or ext4 past 65,000 subfolders) counts as maybe, which only costs a lookup per new object.
    """
    found: set[str] = set()
    if not objects.is_dir():
        return found
    for class_dir in objects.iterdir():
        if class_dir.is_dir() and any(
            shard.is_dir() and shard.stat().st_nlink != 2 for shard in class_dir.iterdir()
        ):
            found.add(class_dir.name)
    return found
