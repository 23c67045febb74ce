"""Configuration, the error table and the codec, in-process (no sockets)."""

from __future__ import annotations

import argparse
import logging
import re
from pathlib import Path

import pytest

from actors import Durability
from actors import errors as actor_errors
from server.cli import _build_parser, config_from_args
from server.codec import decode_cursor, encode_cursor
from server.config import Config
from server.errors import (
    MethodNotAllowed,
    NotAcceptable,
    NotFound,
    Unauthorized,
    body_too_large,
    error_reply,
    status_of,
)


def parse(*argv: str) -> argparse.Namespace:
    return _build_parser().parse_args(["serve", *argv])


def test_serve_without_arguments_is_one_node_on_localhost_8080_with_data_and_the_rooms() -> None:
    config = config_from_args(parse(), {})
    assert config == Config()
    assert (config.host, config.port, config.data_dir, config.app) == (
        "127.0.0.1",
        8080,
        Path("data"),
        None,
    )
    assert config.max_body_bytes == 1024 * 1024
    assert config.durability is Durability.FSYNC


def test_a_flag_wins_over_its_variable_and_a_variable_over_the_default() -> None:
    env = {
        "ACTORS_PORT": "9000",
        "ACTORS_HOST": "0.0.0.0",
        "ACTORS_DEBUG": "yes",
        "ACTORS_DURABILITY": "power-loss-unsafe",
        "ACTORS_AUTH_TOKEN": "t",
        "ACTORS_CALL_TIMEOUT": "2.5",
    }
    config = config_from_args(parse("--port", "9001", "--no-debug"), env)
    assert config.port == 9001
    assert config.debug is False
    assert config.host == "0.0.0.0"
    assert config.durability is Durability.POWER_LOSS_UNSAFE
    assert config.auth_token == "t"
    assert config.call_timeout == 2.5
    assert config.settings().call_timeout == 2.5


def test_every_config_field_has_a_flag_and_a_variable() -> None:
    help_text = _build_parser()._subparsers._group_actions[0].choices["serve"].format_help()  # type: ignore[union-attr]
    for field in Config.__dataclass_fields__:
        assert "--" + field.replace("_", "-") in help_text
        assert "ACTORS_" + field.upper() in help_text


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"ACTORS_PORT": "x"}, "ACTORS_PORT='x': invalid literal for int()"),
        ({"ACTORS_DEBUG": "maybe"}, "ACTORS_DEBUG='maybe': not a boolean: 'maybe'"),
        ({"ACTORS_LOG_FORMAT": "xml"}, "ACTORS_LOG_FORMAT must be one of text, json, not 'xml'"),
        ({"ACTORS_PORT": "70000"}, "port must be in 0..65535, not 70000"),
        ({"ACTORS_APP": "no_colon"}, "app must look like 'module:attr', not 'no_colon'"),
        ({"ACTORS_CALL_TIMEOUT": "0"}, "call_timeout must be positive"),
        ({"ACTORS_MAX_CONNECTIONS": "0"}, "max_connections must be at least 1"),
    ],
)
def test_bad_values_are_refused_naming_them(env: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        config_from_args(parse(), env)


def test_the_status_table_covers_every_error() -> None:
    expected = {
        actor_errors.InvalidArgument("m"): 400,
        actor_errors.LimitExceeded("m", limit="MAX_KEY_BYTES"): 400,
        body_too_large(10): 413,
        actor_errors.SqlNotAllowed("m"): 400,
        actor_errors.UnknownClass("m"): 404,
        actor_errors.UnknownMethod("m"): 404,
        actor_errors.ObjectNotFound("m"): 404,
        actor_errors.Deadlock("m"): 409,
        actor_errors.Overloaded("m", retry_after=0.05): 503,
        actor_errors.CallTimeout("m"): 504,
        actor_errors.ObjectReset("m"): 503,
        actor_errors.ShuttingDown("m"): 503,
        actor_errors.OwnerUnavailable("m", node="n2"): 503,
        actor_errors.OwnerLost("m"): 502,
        actor_errors.InternalError("m"): 500,
        actor_errors.UserError("KeyError", "m"): 500,
        actor_errors.ActivationFailed("m"): 500,
        actor_errors.ResultNotSerializable("m"): 500,
        NotFound("m"): 404,
        MethodNotAllowed("m", allow=("GET",)): 405,
        Unauthorized("m"): 401,
        NotAcceptable("m"): 406,
    }
    assert {type(e).__name__: status_of(e) for e in expected} == {
        type(e).__name__: s for e, s in expected.items()
    } | {"LimitExceeded": 413}  # the dict keeps the last LimitExceeded: the body limit
    public = {
        name
        for name in actor_errors.__all__
        if isinstance(getattr(actor_errors, name), type)
        and name not in ("ActorError", "CallerError", "WorldError")
    }
    assert public <= {type(e).__name__ for e in expected}


def test_unexpected_exceptions_become_a_reference_and_reach_the_log_and_the_hook(
    caplog: pytest.LogCaptureFixture,
) -> None:
    reported: list[tuple[str, str]] = []
    with caplog.at_level(logging.ERROR, logger="server"):
        status, body, headers = error_reply(
            RuntimeError("secret detail"), debug=True, report_internal=lambda *a: reported.append(a)
        )
    assert status == 500
    assert headers == []
    match = re.fullmatch(r"internal error; reference = ([0-9a-f]{12})", body["error"]["message"])
    assert match is not None
    assert body == {"error": {"type": "InternalError", "message": match.group(0)}}
    assert reported == [(match.group(1), "RuntimeError('secret detail')")]
    assert [r.reference for r in caplog.records] == [match.group(1)]  # type: ignore[attr-defined]
    assert caplog.records[0].exc_info is not None


@pytest.mark.parametrize(("retry_after", "header"), [(0.05, b"1"), (1.0, b"1"), (2.2, b"3")])
def test_overloaded_retry_after_is_whole_seconds_rounded_up(retry_after: float, header: bytes) -> None:
    _, body, headers = error_reply(
        actor_errors.Overloaded("full", retry_after=retry_after), debug=False, report_internal=print
    )
    assert headers == [(b"retry-after", header)]
    assert body == {"error": {"type": "Overloaded", "message": "full", "retry_after": retry_after}}


def test_a_user_traceback_is_sent_only_in_debug_mode() -> None:
    error = actor_errors.UserError("KeyError", "'k'", traceback="Traceback ...")
    _, quiet, _ = error_reply(error, debug=False, report_internal=print)
    _, loud, _ = error_reply(error, debug=True, report_internal=print)
    assert quiet == {"error": {"type": "KeyError", "message": "'k'"}}
    assert loud == {"error": {"type": "KeyError", "message": "'k'", "traceback": "Traceback ..."}}


def test_a_cursor_round_trips_and_a_forged_one_is_refused() -> None:
    key = ("Counter", "a/b é", "0" * 64)
    assert decode_cursor(encode_cursor(key)) == key
    for forged in ("", "!!", encode_cursor(("a", "b", "c"))[:-3], "WzEsMiwzXQ"):
        with pytest.raises(actor_errors.InvalidArgument, match=r"^cursor is not one this node returned$"):
            decode_cursor(forged)


def test_the_durability_flag_accepts_each_documented_value():
    from actors import Durability
    from server.cli import _build_parser, config_from_args

    for value in ("fsync", "power-loss-unsafe"):
        args = _build_parser().parse_args(["serve", "--durability", value])
        assert config_from_args(args, {}).durability is Durability(value)
