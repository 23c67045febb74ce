"""Fixtures shared by the runtime tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .vfs import RecordingVFS


@pytest.fixture
def recording() -> Iterator[RecordingVFS]:
    vfs = RecordingVFS()
    try:
        yield vfs
    finally:
        vfs.unregister()
