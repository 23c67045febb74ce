"""The HTTP body codecs (``server/codec.py``) and the WebSocket message decoders, sans I/O: nesting
bounds and their exact edges, and property tests of every decoder on any input."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import cbor2
import pytest
from hypothesis import given
from hypothesis import strategies as st

from actors import plain_value_problem
from actors.errors import ActorError, InvalidArgument, LimitExceeded
from actors.limits import MAX_VALUE_DEPTH
from server import codec
from server.errors import NotAcceptable, status_of
from server.websocket import _decode_cbor, _decode_json

from ..fuzz import require_text
from ..fuzz.strategies import FUZZ, cbor_values, json_values, nested, room_messages, tagged_cbor


def call_body(levels: int, leaf: Any = 1) -> dict[str, Any]:
    """A call body whose ``args`` list is a value nested ``levels`` deep."""
    args = nested(levels, leaf)
    return {"args": args}


TOO_DEEP = r"^the body is nested deeper than MAX_VALUE_DEPTH \(64\) allows$"


@pytest.mark.parametrize("cbor", [False, True])
def test_arguments_at_the_nesting_limit_decode_and_pass_the_runtime_check(cbor: bool) -> None:
    leaf = 2**70 if cbor else 1  # a big integer is a tag in CBOR: one more level for cbor2
    body = call_body(MAX_VALUE_DEPTH, leaf)
    data = cbor2.dumps(body) if cbor else json.dumps(body).encode()
    args, kwargs = codec.decode_call(data, cbor=cbor)
    assert (args, kwargs) == (body["args"], {})
    assert plain_value_problem(args, "args") is None


def test_a_cbor_body_one_level_deeper_is_refused_naming_the_limit() -> None:
    data = cbor2.dumps(call_body(MAX_VALUE_DEPTH + 1, 2**70))
    with pytest.raises(LimitExceeded, match=TOO_DEEP) as caught:
        codec.decode_body(data, cbor=True)
    assert caught.value.limit == "MAX_VALUE_DEPTH"


def test_a_json_body_the_decoder_cannot_recurse_into_is_refused_naming_the_limit() -> None:
    data = b"[" * 100_000 + b"]" * 100_000
    with pytest.raises(LimitExceeded, match=TOO_DEEP):
        codec.decode_body(data, cbor=False)


def test_a_json_body_too_deep_for_the_runtime_but_not_the_decoder_is_refused_by_the_runtime() -> None:
    args, _ = codec.decode_call(json.dumps(call_body(MAX_VALUE_DEPTH + 1)).encode(), cbor=False)
    problem = plain_value_problem(args, "args")
    assert problem is not None
    assert problem.endswith(": nested deeper than MAX_VALUE_DEPTH (64)")


#### Property tests (hypothesis, derandomized): any bytes give a value or a named 4xx error


def value_or_4xx(decode: Callable[[], Any]) -> Any:
    """``decode()``'s value, or None after checking that it refused with a named 4xx error.

    A value must hold only text: a string with a lone surrogate could be neither stored nor sent.
    """
    try:
        value = decode()
    except ActorError as exc:
        refused = exc
    else:
        require_text(value)
        return value
    assert 400 <= status_of(refused) < 500, refused
    assert refused.message
    return None


def call_keys(values: st.SearchStrategy[Any]) -> dict[str, st.SearchStrategy[Any]]:
    """The keys of a call body, each holding any value (often a list or a map: a body's shape)."""
    return {"args": values, "kwargs": values}


@FUZZ
@given(st.binary(max_size=600) | tagged_cbor, st.booleans())
def test_any_bytes_give_a_body_value_or_a_4xx_error(data: bytes, cbor: bool) -> None:
    value_or_4xx(lambda: codec.decode_body(data, cbor=cbor))
    value_or_4xx(lambda: codec.decode_call(data, cbor=cbor))


@FUZZ
@given(room_messages(None, cbor=True) | st.fixed_dictionaries({}, optional=call_keys(cbor_values)))
def test_any_cbor_value_gives_a_body_value_or_a_4xx_error(value: Any) -> None:
    data = cbor2.dumps(value)
    value_or_4xx(lambda: codec.decode_body(data, cbor=True))
    value_or_4xx(lambda: codec.decode_call(data, cbor=True))


@FUZZ
@given(room_messages(None, cbor=False) | st.fixed_dictionaries({}, optional=call_keys(json_values)))
def test_any_json_value_gives_a_body_value_or_a_4xx_error(value: Any) -> None:
    data = json.dumps(value).encode()  # lone surrogates travel as \ud800 escapes, as a client may send
    decoded = value_or_4xx(lambda: codec.decode_body(data, cbor=False))
    value_or_4xx(lambda: codec.decode_call(data, cbor=False))
    if decoded is not None:
        assert decoded == value


@FUZZ
@given(cbor_values, st.booleans())  # what objects return: plain values (no lone surrogates: see below)
def test_any_value_encodes_as_a_reply_or_is_406(value: Any, cbor: bool) -> None:
    try:
        data = codec.encode(value, cbor=cbor)
    except NotAcceptable:
        assert not cbor
        return
    if not cbor:
        data.decode()  # JSON replies are UTF-8


@FUZZ
@given(st.text(max_size=200) | st.tuples(st.text(), st.text(), st.text()).map(codec.encode_cursor))
def test_any_cursor_is_a_catalog_key_or_400(cursor: str) -> None:
    value_or_4xx(lambda: codec.decode_cursor(cursor))


@FUZZ
@given(st.tuples(st.text(), st.text(), st.text()))
def test_cursors_round_trip(key: tuple[str, str, str]) -> None:
    assert codec.decode_cursor(codec.encode_cursor(key)) == key


#### The WebSocket message decoders (server/websocket.py): text is JSON, binary is CBOR


@FUZZ
@given(st.text(max_size=300) | st.builds(json.dumps, json_values))  # wsproto passes only UTF-8 text
def test_any_text_message_gives_a_value_or_a_4xx_error(text: str) -> None:
    value_or_4xx(lambda: _decode_json(text, 1 << 20))


@FUZZ
@given(st.binary(max_size=600) | st.builds(cbor2.dumps, cbor_values) | tagged_cbor)
def test_any_binary_message_gives_a_plain_value_or_a_4xx_error(data: bytes) -> None:
    value = value_or_4xx(lambda: _decode_cbor(data))
    assert plain_value_problem(value, "message") is None


#### Found by the fuzzers: JSON strings that are not text


@pytest.mark.parametrize(
    "body",
    [
        b'["a\\ud800"]',  # a lone high surrogate, escaped
        b'{"\\udc00": 1}',  # a lone low surrogate, in a key
        b'["\\ude00\\ud83d"]',  # a pair in the wrong order
    ],
)
def test_a_json_string_with_a_lone_surrogate_is_400(body: bytes) -> None:
    message = (
        r"^malformed JSON body: a string holds a lone surrogate \(an escape from \\ud800 to \\udfff "
        r"without its pair\), which is not text$"
    )
    with pytest.raises(InvalidArgument, match=message):
        codec.decode_body(body, cbor=False)
    with pytest.raises(InvalidArgument, match=r"^malformed JSON message: a string holds a lone surrogate"):
        _decode_json(body.decode(), 1 << 20)


def test_escaped_surrogate_pairs_and_backslashes_are_text() -> None:
    assert codec.decode_body(b'["\\ud83d\\ude00", "\\\\ud800"]', cbor=False) == ["\U0001f600", "\\ud800"]


@pytest.mark.parametrize(
    "body",
    [b'["\xed\xa0\x80"]', '["a"]'.encode("utf-16"), '["a"]'.encode("utf-32-le")],
    ids=["encoded-surrogate", "utf-16", "utf-32"],
)
def test_a_json_body_that_is_not_strict_utf8_is_400(body: bytes) -> None:
    # json.loads reads UTF-16 and UTF-32 and lets encoded surrogates through ("surrogatepass");
    # the node reads UTF-8 only (UTF-32 without a BOM is valid UTF-8, and then not valid JSON)
    with pytest.raises(InvalidArgument, match=r"^malformed JSON body: "):
        codec.decode_body(body, cbor=False)

