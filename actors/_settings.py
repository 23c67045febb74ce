"""Runtime settings: one frozen dataclass, every field named, documented and defaulted."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Durability(enum.Enum):
    """When a commit counts as done (and so when a reply may leave)."""

    #: fsync of the WAL before every reply (SQLite ``synchronous=FULL``): survives power loss.
    FSYNC = "fsync"
    #: no fsync (``synchronous=NORMAL`` in WAL mode): survives a crash of the process (even SIGKILL), but
    #: a power loss or kernel crash may lose the last commits whose replies were already sent.
    POWER_LOSS_UNSAFE = "power-loss-unsafe"

    @property
    def sqlite_synchronous(self) -> str:
        return "FULL" if self is Durability.FSYNC else "NORMAL"


@dataclass(frozen=True, slots=True)
class Settings:
    """How a runtime behaves; every limit here is enforced (see the field comments for the error)."""

    #: when a commit is durable enough to reply
    durability: Durability = Durability.FSYNC
    #: seconds an object with no queued or running work stays in memory. Cloudflare hibernates after
    #: 10 s and evicts after 70-140 s, Akka passivates after 120 s, Orleans collects after 15 min.
    #: Eviction here closes and folds a file (I/O), while keeping an object live is cheap once its file
    #: rests (``max_open_files``): at 10 s, 10,000 objects called 500 times a second were evicted
    #: between calls and the node stayed at that rate (``BENCHMARKS.md``). Memory stays bounded by
    #: ``max_live_objects`` and ``max_open_files`` whatever this is.
    idle_timeout: float = 60.0
    #: objects in memory at once; past it the least recently used idle one is evicted, and if every
    #: live object is busy a new activation waits (until its deadline) for one to go idle.
    max_live_objects: int = 10_000
    #: live objects that keep their SQLite file open (about 80 KiB and two file descriptors each); past
    #: it the least recently active resting ones close it and stay live (``_resting.py``). Capped so
    #: two descriptors per open file fit in the process's open-file limit (raised to its hard limit).
    max_open_files: int = 10_000
    #: calls waiting for one object; past it calls fail at once with Overloaded
    max_queue_depth: int = 1_000
    #: default deadline of a call, queueing and turn included; past it CallTimeout
    call_timeout: float = 30.0
    #: turns that may share one commit (group commit); bounds how long a reply waits for its batch
    max_batch_turns: int = 256
    #: seconds a batch may wait for more calls before it commits, only while the event loop has other
    #: work and no fsync of the object is running (group commit under load; 0 commits at once). An
    #: idle loop commits at once, so this adds latency only when the process is busy anyway. Off by
    #: default: in-process callers are cheap, and two groups of turns alternating with their fsyncs
    #: serve them best, while a hold would merge the groups. The node turns it on (20 ms).
    commit_hold: float = 0.0
    #: make each durability round durable with one ``syncfs(2)`` of the data folder's file system
    #: instead of an fsync of every object's WAL, each creation round with two instead of the
    #: fsyncs of every new file and folder, and each fold round of evicted and resting objects'
    #: files (``_folds.py``) with one (Linux; only with FSYNC durability and commits in
    #: threads). Cheaper by far when many objects commit at once, but it writes back everything dirty
    #: on that volume, other programs' files included: on a shared volume a round then waits for
    #: their writes too (latency spikes), and a failure to write any file there fails the whole
    #: round's calls. For a volume of the node's own.
    sync_volume: bool = False

    def __post_init__(self) -> None:
        for name in ("idle_timeout", "call_timeout"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive")
        if not self.commit_hold >= 0:
            raise ValueError("commit_hold must not be negative")
        for name in ("max_live_objects", "max_open_files", "max_queue_depth", "max_batch_turns"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
