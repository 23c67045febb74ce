"""The blocking file work of moves (``_moves.py``), run in worker threads: reading a released
object's bytes, placing arriving files under their names, deleting discarded ones, and clearing
what an unfinished transfer left.

Guarantees
- :func:`place_all` puts a file under an object's name only if its bytes match the SHA-256 the
  sender reported; nothing it does is durable (the caller's barrier makes it so), and an object is
  not held here until its catalog entry commits after that barrier (``_moves.py``, crash points).
- :func:`contents` never changes a small object's files (it reads them through SQLite); a big one
  is checkpointed into one self-contained file.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
from pathlib import Path
from typing import Final

import apsw

from . import _folderlock
from ._file import move_legacy_file, write_file
from ._walfold import fold_wal

__all__ = [
    "STAGED_SUFFIX", "STAGING_MARKER", "Placement", "contents", "delete_files", "place_all",
    "remove_staged_files", "remove_unfinished_transfers", "staged",
]  # fmt: skip

log = logging.getLogger("actors")

#: appended to an object's file name while its bytes arrive from another node in chunks
STAGED_SUFFIX: Final = ".incoming"
#: a file in the data folder, made durably before the first file of a run is staged: only while it
#: exists does start-up list every object file to delete staged ones (a second at a million objects)
STAGING_MARKER: Final = "staging.marker"
#: files beside an object's database that belong to it (its WAL, the WAL's index, a rollback journal)
COMPANIONS: Final = ("-wal", "-shm", "-journal")

#: one arriving file: where it goes, its SHA-256, and its bytes (None: staged beside ``path``)
Placement = tuple[Path, str, bytes | None]


def staged(path: Path) -> Path:
    return path.with_name(path.name + STAGED_SUFFIX)


def contents(path: Path, legacy: Path | None, inline_bytes: int) -> tuple[int, str, bytes | None] | None:
    """Size, SHA-256 and (up to ``inline_bytes``) the bytes of the object's database as one
    self-contained file, or None when it has no file.

    A small database is read as one image through SQLite (its WAL's frames applied), so it needs
    neither a checkpoint nor an fsync here; the file and its WAL stay as they are until discarded. A
    bigger one is checkpointed into its file (its WAL folded in and deleted), which is then sent from
    disk in chunks.
    """
    if legacy is not None and not path.exists() and legacy.exists():
        move_legacy_file(legacy, path)
    if not path.exists():
        return None
    wal = f"{path}-wal"
    has_wal = os.path.exists(wal)
    if has_wal and path.stat().st_size + os.path.getsize(wal) <= inline_bytes:
        image = _image(path)
        return len(image), hashlib.sha256(image).hexdigest(), image
    if has_wal or os.path.exists(f"{path}-shm"):
        fold_wal(path)
    with open(path, "rb") as file:
        size = os.fstat(file.fileno()).st_size
        if size <= inline_bytes:
            data = file.read()
            return len(data), hashlib.sha256(data).hexdigest(), data
        return size, hashlib.file_digest(file, "sha256").hexdigest(), None


def _image(path: Path) -> bytes:
    """The database at ``path`` with its WAL applied, as the bytes of one file (WAL mode in its header)."""
    conn = apsw.Connection(str(path), flags=apsw.SQLITE_OPEN_READWRITE, vfs=_folderlock.OBJECT_VFS)
    try:
        conn.config(apsw.SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, 1)  # leave the file and its WAL as they are
        conn.execute("PRAGMA locking_mode=EXCLUSIVE").fetchall()  # as the runtime opens it: no -shm
        return bytes(conn.serialize("main") or b"")
    finally:
        conn.close()


def place_all(files: list[Placement]) -> list[str | None]:
    """Put each arriving file under its name (not durably yet).

    A file that came with its bytes is checked in memory and written straight under its name: one
    file creation, where a staged file cost a creation, a read and a rename (the renames and
    creations are what wait for the journal on a busy volume). A file that came in chunks was staged
    beside its name; it is hashed from disk and renamed. Returns, per file, None once placed or why
    not (a staged file is then deleted). Any file already at a path belongs to no one (see
    ``_moves.py``): it and its WAL are replaced.
    """
    folders: set[Path] = set()
    problems: list[str | None] = []
    for path, sha256_hex, data in files:
        if data is not None:
            digest = hashlib.sha256(data).hexdigest()
            if digest != sha256_hex:
                problems.append(f"the arriving file's SHA-256 is {digest}, not {sha256_hex}; not stored")
                continue
            if path.parent not in folders:
                path.parent.mkdir(parents=True, exist_ok=True)
                folders.add(path.parent)
            _remove_companions(path)
            write_file(path, data)
            problems.append(None)
            continue
        source = staged(path)
        try:
            with open(source, "rb") as file:
                digest = hashlib.file_digest(file, "sha256").hexdigest()
        except FileNotFoundError:
            problems.append(f"no staged file at {source}")
            continue
        if digest != sha256_hex:
            os.unlink(source)
            problems.append(f"the staged file's SHA-256 is {digest}, not {sha256_hex}; deleted")
            continue
        _remove_companions(path)
        os.rename(source, path)
        problems.append(None)
    return problems


def _remove_companions(path: Path) -> None:
    for suffix in COMPANIONS:  # a stale WAL would be applied to the new file
        with contextlib.suppress(FileNotFoundError):
            os.unlink(f"{path}{suffix}")


def delete_files(paths: list[Path], companions: tuple[str, ...] = ("", *COMPANIONS)) -> None:
    """Delete each object file and its companions (not durably: see ``Moves.discard``); with
    ``companions=("",)``, only the files themselves (staged files)."""
    for path in paths:
        for suffix in companions:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(f"{path}{suffix}")


def remove_unfinished_transfers(data_dir: Path, *, older_folder: bool) -> int:
    """At start-up: delete staged files if a transfer may have been cut short (the staging marker
    exists, or the folder comes from a version without the marker); returns how many were found."""
    marker = data_dir / STAGING_MARKER
    if not older_folder and not marker.exists():
        return 0
    removed = remove_staged_files(data_dir / "objects")
    marker.unlink(missing_ok=True)  # if this is lost in a crash, the next start lists the files again
    return removed


def remove_staged_files(objects: Path) -> int:
    """Delete every staged file under ``objects`` (transfers that did not finish); returns how many.

    Staged files are only ever made in the ``<Class>/<h0h1>/`` folders, so only those are listed (not
    the older layout's deeper folders).
    """
    removed = 0
    if not objects.is_dir():
        return removed
    for class_dir in os.scandir(objects):
        if not class_dir.is_dir():
            continue
        for shard in os.scandir(class_dir.path):
            if not shard.is_dir():
                continue
            for entry in os.scandir(shard.path):
                if entry.name.endswith(STAGED_SUFFIX):
                    os.unlink(entry.path)
                    removed += 1
    if removed:
        log.warning("deleted %d staged files of transfers that did not finish", removed)
    return removed
