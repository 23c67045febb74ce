"""Fixtures of the SDK tests (the network-test policy is in ``tests/conftest.py``).

- ``fake``: an in-process node (``fake_node.py``) over memory streams, for connection behaviour in
  virtual time; pair it with ``autojump_clock``.
- ``node``: one real node process for the session, serving ``tests.server.probe_app:app`` (the
  example's ``Tally``, ``Probe``, the built-in rooms); ``token_node``: the same with a bearer token.
  Tests use fresh object names (``unique``) so they do not depend on each other's state.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.server.nodes import Node, running_node

from .fake_node import FakeNode, open_fake_node

APP = "tests.server.probe_app:app"
TOKEN = "client-s3cret"


@pytest.fixture
async def fake() -> AsyncIterator[FakeNode]:
    async with open_fake_node() as node:
        yield node


@pytest.fixture(scope="session")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    data_dir: Path = tmp_path_factory.mktemp("client-node") / "data"
    with running_node(data_dir, "--app", APP) as started:
        yield started


@pytest.fixture(scope="session")
def token_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    data_dir: Path = tmp_path_factory.mktemp("client-token-node") / "data"
    with running_node(data_dir, "--app", APP, "--auth-token", TOKEN, token=TOKEN) as started:
        yield started


@pytest.fixture
def unique() -> str:
    """A name no other test uses."""
    return uuid.uuid4().hex[:12]
