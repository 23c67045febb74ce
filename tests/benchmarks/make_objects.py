"""Make a data folder holding many small objects, without a call per object: a catalog and their files.

Run from the repository root (pytest does not collect it)::

    .venv/bin/python -m tests.benchmarks.make_objects FOLDER [--objects 1000000] [--alarms N] [--no-files]

Each object is a ``Counter`` named ``c0000000``, ``c0000001``, ... holding one key (``value`` = 1): the
node's built-in ``Counter`` (``server/rooms``) keeps exactly that, so ``actors serve --data-dir FOLDER``
serves them as they are; ``APP`` here has a ``Counter`` of the same shape for in-process use. Its file is what
the runtime makes for a new object: the in-memory template with its ``_actors_meta`` rows and its key,
written as ``objects/Counter/<h0h1>/<hex>.sqlite3`` in WAL format (no fsync: this is test data). The
first ``--alarms`` objects (default: all) get an alarm between one and two years ahead, in the file and
in the catalog. The catalog is written by ``actors._catalog.Catalog`` in one transaction. With
``--no-files`` only the catalog is made (start-up reads only the catalog and lists the class folders;
see BENCHMARKS.md for what it reads).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import apsw

from actors import App, DurableObject
from actors._catalog import Catalog
from actors._file import _empty_database

YEAR = 365 * 24 * 3600.0


class Counter(DurableObject):
    async def increment(self) -> int:
        value: int = self.storage.get("value", 0) + 1
        self.storage.put("value", value)
        return value

    async def alarm(self) -> None:
        self.storage.put("alarmed", True)


APP = App([Counter])


def _image(template: bytes, cls: str, name: str, hex_id: str, alarm: float | None) -> bytes:
    conn = apsw.Connection(":memory:")
    conn.deserialize("main", template)
    conn.execute(
        "INSERT OR REPLACE INTO _actors_meta VALUES ('class', ?), ('name', ?), ('id', ?)",
        (cls, name, hex_id),
    )
    conn.execute("INSERT INTO _actors_kv VALUES ('value', ?)", (b"\x01",))  # CBOR of 1
    if alarm is not None:
        conn.execute("INSERT INTO _actors_alarm VALUES (0, ?)", (alarm,))
    image = bytearray(conn.serialize("main"))
    conn.close()
    image[18] = image[19] = 2  # WAL format, as materialize() writes it
    return bytes(image)


def make(folder: Path, objects: int, alarms: int, files: bool) -> None:
    now = time.time()
    template = _empty_database()
    entries = []
    made: set[Path] = set()
    for i in range(objects):
        object_id = APP.id_from_name("Counter", f"c{i:07d}")
        alarm = now + YEAR + i * (YEAR / max(objects, 1)) if i < alarms else None
        entries.append((object_id, alarm))
        if files:
            path = folder / "objects" / "Counter" / object_id.hex[:2] / f"{object_id.hex}.sqlite3"
            if path.parent not in made:
                path.parent.mkdir(parents=True, exist_ok=True)
                made.add(path.parent)
            image = _image(template, "Counter", f"c{i:07d}", object_id.hex, alarm)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                os.write(fd, image)
            finally:
                os.close(fd)
        if i % 100_000 == 99_999:
            print(f"{i + 1} objects", flush=True)
    catalog = Catalog(folder / "catalog.sqlite3", synchronous="OFF")
    try:
        catalog.record_all(entries, now)
    finally:
        catalog.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--objects", type=int, default=1_000_000)
    parser.add_argument("--alarms", type=int, default=None, help="objects with an alarm (default: all)")
    parser.add_argument("--no-files", action="store_true", help="only the catalog")
    args = parser.parse_args()
    alarms = args.objects if args.alarms is None else args.alarms
    started = time.perf_counter()
    make(args.folder, args.objects, alarms, not args.no_files)
    print(f"made {args.objects} objects ({alarms} alarms) in {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
