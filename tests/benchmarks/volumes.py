"""One filesystem per node on one machine: an ext4 image file per node, loop-mounted.

``node_volumes(base, names)`` makes, for each name, a sparse image file ``base/<name>.img``
(``VOLUME_BYTES``), formats it ext4 (inode tables and journal written at once, so no background
``ext4lazyinit`` writes during a run), loop-mounts it on ``base/<name>.mnt`` and yields the data
folder inside each (``<name>.mnt/data``: the volume's root holds ``lost+found``). On the way out, also
after an exception or Ctrl-C, it unmounts every volume it mounted (a lazy unmount when a process
still holds it) and deletes the images.

What it emulates: a ``syncfs`` or ``fsync`` on one node flushes that node's volume only, and file
creations and deletions wait for that volume's journal only, as on machines with a disk each. What
it does not: the images share this machine's one disk (their flushes still queue there, and an
``fsync`` in a volume also flushes the image file on the shared filesystem underneath), the loop
device adds a layer of page cache and a kernel thread per volume, and CPU and memory stay shared.

Needs root, ``mkfs.ext4`` and ``mount``/``umount``; ``VolumeError`` says which one is missing.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

#: the size of each sparse image; 10,000 counters take about 200 MB on one node
VOLUME_BYTES = 2 << 30


class VolumeError(RuntimeError):
    """A volume per node cannot be made on this machine (not root, or a tool is missing)."""


def check_volumes_possible() -> None:
    """Raises ``VolumeError`` unless this process can format and loop-mount images."""
    if os.geteuid() != 0:
        raise VolumeError("--volume-per-node needs root (it loop-mounts an ext4 image per node)")
    for tool in ("mkfs.ext4", "mount", "umount"):
        if shutil.which(tool) is None:
            raise VolumeError(f"--volume-per-node needs {tool}, which is not on PATH")


def _run(*argv: str) -> None:
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _unmount(mount_point: Path) -> None:
    if subprocess.run(["umount", str(mount_point)], stderr=subprocess.DEVNULL).returncode != 0:
        # a process that was not stopped still has a file open: detach now, free when it exits
        subprocess.run(["umount", "-l", str(mount_point)], stderr=subprocess.DEVNULL)


@contextmanager
def _volume(base: Path, name: str) -> Iterator[Path]:
    image, mount_point = base / f"{name}.img", base / f"{name}.mnt"
    try:
        with image.open("wb") as f:
            f.truncate(VOLUME_BYTES)
        _run("mkfs.ext4", "-q", "-F", "-E", "lazy_itable_init=0,lazy_journal_init=0", str(image))
        mount_point.mkdir()
        _run("mount", "-o", "loop", str(image), str(mount_point))
        try:
            data = mount_point / "data"
            data.mkdir()
            yield data
        finally:
            _unmount(mount_point)
    finally:
        image.unlink(missing_ok=True)
        if mount_point.exists() and not os.path.ismount(mount_point):
            shutil.rmtree(mount_point, ignore_errors=True)


@contextmanager
def node_volumes(base: Path, names: list[str]) -> Iterator[dict[str, Path]]:
    """The data folder of each node, each on its own loop-mounted ext4 volume; always cleaned up."""
    check_volumes_possible()
    with ExitStack() as stack:
        yield {name: stack.enter_context(_volume(base, name)) for name in names}
