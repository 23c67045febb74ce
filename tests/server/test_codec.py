"""The HTTP body codecs (``server/codec.py``), sans I/O: nesting bounds and their exact edges."""

from __future__ import annotations

import json
from typing import Any

import cbor2
import pytest

from actors import plain_value_problem
from actors.errors import LimitExceeded
from actors.limits import MAX_VALUE_DEPTH
from server import codec


def nested(levels: int, leaf: Any = 1) -> Any:
    """``leaf`` inside ``levels`` lists."""
    value = leaf
    for _ in range(levels):
        value = [value]
    return value


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
