"""A pass-through SQLite VFS that records every file opened, every sync, and the thread that synced."""

from __future__ import annotations

import threading
from pathlib import Path

import apsw

from actors import _folderlock


class _RecordingFile(apsw.VFSFile):
    def __init__(self, vfs: RecordingVFS, name: apsw.URIFilename | str, flags: list[int]) -> None:
        self._vfs = vfs
        self._name = name.filename() if isinstance(name, apsw.URIFilename) else str(name)
        super().__init__(vfs.base, name, flags)

    def xSync(self, flags: int) -> None:
        self._vfs.syncs.append((self._name, threading.current_thread() is threading.main_thread()))
        super().xSync(flags)


class RecordingVFS(apsw.VFS):
    """The system's VFS, passing every call through, recording which thread synced which file.

    Made the default (the catalog's files) and the VFS object files are opened with
    (``_folderlock.OBJECT_VFS``) until :meth:`unregister`.
    """

    def __init__(self) -> None:
        self.syncs: list[tuple[str, bool]] = []
        #: every file SQLite opened, in order
        self.opens: list[str] = []
        self.base = _folderlock.OBJECT_VFS
        super().__init__("record-syncs", self.base, makedefault=True)
        _folderlock.OBJECT_VFS = "record-syncs"

    def unregister(self) -> None:
        _folderlock.OBJECT_VFS = self.base
        super().unregister()

    def xOpen(self, name: apsw.URIFilename | str | None, flags: list[int]) -> apsw.VFSFile:
        assert name is not None
        self.opens.append(name.filename() if isinstance(name, apsw.URIFilename) else str(name))
        return _RecordingFile(self, name, flags)


def object_syncs(vfs: RecordingVFS, data_dir: Path) -> list[tuple[str, bool]]:
    objects = str(data_dir / "objects")
    return [(name, main) for name, main in vfs.syncs if name.startswith(objects)]
