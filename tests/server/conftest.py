"""Nodes shared by the server tests (one process each for the whole session, started on first use).

- ``node``: default settings (fsync durability, no token) serving ``tests.server.probe_app:app``.
- ``strict_node``: a token, a queue of 1, a 1 s call timeout, a 1000-byte body limit, a short idle
  timeout, JSON logs, debug replies and a rate limit refilling over an hour: the settings whose
  errors (and exact counts) the tests provoke.

Tests use fresh object names (``unique``) so they do not depend on each other's state.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from .nodes import Node, running_node

APP = "tests.server.probe_app:app"
TOKEN = "s3cret-token"


@pytest.fixture(scope="session")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    data_dir: Path = tmp_path_factory.mktemp("node") / "data"
    with running_node(data_dir, "--app", APP) as started:
        yield started


@pytest.fixture(scope="session")
def strict_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    data_dir: Path = tmp_path_factory.mktemp("strict") / "data"
    flags = [
        "--app",
        APP,
        "--auth-token",
        TOKEN,
        "--max-queue-depth",
        "1",
        "--call-timeout",
        "1",
        "--max-body-bytes",
        "1000",
        "--idle-timeout",
        "0.2",
        "--log-format",
        "json",
        "--debug",
        "--ratelimit-period",
        "3600",
    ]
    with running_node(data_dir, *flags, token=TOKEN) as started:
        yield started


@pytest.fixture
def unique() -> str:
    """A name no other test uses."""
    return uuid.uuid4().hex[:12]
