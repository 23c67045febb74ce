"""Process-wide settings of ``actors serve``, made once before the runtime opens (never by ``actors``,
the library: an application that embeds the runtime owns its process).

Guarantees
- :func:`tune_process` changes only how memory is managed, never what is stored or when a reply
  leaves. It must run before the process opens its first SQLite connection; after that it raises
  RuntimeError instead of half-applying.

What it sets, and why (measured on the 2-core VM of ``BENCHMARKS.md``):
- **The cyclic garbage collector.** Under load every request in flight holds hypercorn's, trio's
  and our objects alive for the few milliseconds until its turn is durable, so each young
  collection (every 700 container allocations by default) walks thousands of live objects, and
  many survive into full collections that walk the whole heap: 6-8% of the event loop's time at
  ~800 requests/s. Freezing what is alive after start-up (modules, the app) keeps full collections
  off it, and a larger young threshold (``GC_THRESHOLD_0``) makes collections 14 times rarer at
  about the same cost each. Memory held by unreachable cycles grows by at most that many objects;
  reference counting still frees the rest at once.
- **SQLite's lookaside memory.** SQLite gives each connection its own pool of small allocations
  (about 120 KiB reserved, 35-40 KiB of it touched by an object's first turn), and a node keeps
  one connection per live object with its file open. Turned off, a connection touches 87 KiB
  instead of 124 (2,000 WAL-mode files, one turn each), and a transaction costs the same CPU
  (16-17 us over 1,000 connections either way): SQLite then takes those small blocks from malloc,
  whose arenas every connection shares. It can only be set process-wide, before SQLite starts.
"""

from __future__ import annotations

import gc

import apsw

__all__ = ["GC_THRESHOLD_0", "tune_process"]

#: young-generation threshold of the cyclic garbage collector in ``actors serve`` (CPython: 700)
GC_THRESHOLD_0 = 10_000


def tune_process() -> None:
    """Set the garbage collector and SQLite's memory for a server process; see the module doc."""
    try:
        apsw.shutdown()  # allowed with no connection open; the config below needs SQLite stopped
        apsw.config(apsw.SQLITE_CONFIG_LOOKASIDE, 0, 0)
        apsw.initialize()
    except apsw.MisuseError as exc:
        raise RuntimeError("tune_process must run before the first SQLite connection opens") from exc
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_THRESHOLD_0, *gc.get_threshold()[1:])
