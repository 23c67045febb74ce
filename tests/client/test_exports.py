"""The SDK's façade exports exactly its public names, and the retry/error docs name real classes."""

from __future__ import annotations

import types

import client
import client.errors
import client.sync
from actors.errors import ActorError, UserError


def test_the_facade_exports_exactly_its_public_names():
    public = {
        name
        for name, value in vars(client).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    } - {"annotations"}
    assert public == set(client.__all__) - {"errors"}
    for module in (client, client.errors, client.sync):
        for name in module.__all__:
            assert getattr(module, name) is not None


def test_sdk_errors_are_not_answers_from_the_node():
    assert issubclass(client.RemoteError, UserError)
    for error in (client.Unreachable, client.Rejected, client.ConnectionLost, client.ReplyTimeout):
        assert issubclass(error, client.ClientError)
        assert not issubclass(error, ActorError)
    assert issubclass(client.ConnectionLost, client.OutcomeUnknown)
    assert issubclass(client.ReplyTimeout, client.OutcomeUnknown)
