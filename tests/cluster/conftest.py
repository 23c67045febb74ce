"""A healthy 3-node cluster shared by the tests of ``test_cluster.py`` (real processes, one module)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.server.nodes import Node

from .processes import running_cluster


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Node]]:
    base: Path = tmp_path_factory.mktemp("cluster")
    with running_cluster(base, 3) as nodes:
        yield nodes


@pytest.fixture
def unique() -> str:
    return uuid.uuid4().hex[:12]
