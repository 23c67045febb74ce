"""Property tests of the wire protocol (hypothesis, derandomized): any bytes decode to frames or to a
ProtocolError, never another exception, and every frame type round-trips through encode/decode."""

from __future__ import annotations

import math
from typing import Any

import cbor2
from hypothesis import given
from hypothesis import strategies as st

from actors import wire
from actors.wire import Call, Error, Hello, ProtocolError, Result, Welcome

from ..fuzz.strategies import FUZZ, cbor_values, tagged_cbor


def decodes_or_refuses(data: bytes) -> None:
    """The property: frames, or ProtocolError (any other exception fails the test)."""
    try:
        frames = wire.decode(data)
    except ProtocolError:
        return
    assert 1 <= len(frames) <= wire.MAX_FRAMES_PER_MESSAGE
    assert all(isinstance(frame, Call | Result | Error | Hello | Welcome) for frame in frames)


@FUZZ
@given(st.binary(max_size=600) | tagged_cbor)
def test_any_bytes_decode_to_frames_or_a_protocol_error(data: bytes) -> None:
    decodes_or_refuses(data)


#: arrays that look like frames: a known (or unknown) code, then items of any type
_frame_like = st.builds(
    lambda code, items: [code, *items],
    st.sampled_from([1, 2, 3, 4, 5]) | st.integers() | cbor_values,
    st.lists(cbor_values | st.lists(st.text(max_size=5), max_size=3), max_size=8),
)


@FUZZ
@given(st.lists(_frame_like, max_size=4) | cbor_values)
def test_any_cbor_value_decodes_to_frames_or_a_protocol_error(message: Any) -> None:
    decodes_or_refuses(cbor2.dumps(message))


@st.composite
def _mutated(draw: st.DrawFn) -> bytes:
    """A valid message with a few bytes changed, cut short or extended."""
    data = bytearray(wire.encode(draw(st.lists(frames, min_size=1, max_size=3))))
    for _ in range(draw(st.integers(1, 4))):
        index = draw(st.integers(0, len(data) - 1))
        data[index] = draw(st.integers(0, 255))
    cut = draw(st.integers(1, len(data)))
    return bytes(data[:cut]) + draw(st.binary(max_size=4))


#### Valid frames of every type

_labels = st.text(max_size=20)
_call_ids = st.integers(1, wire.MAX_CALL_ID)
#: plain values without NaN (NaN != NaN would fail an equality that the bytes still satisfy)
_plain = cbor_values.filter(lambda value: _has_no_nan(value))
_timeouts = st.none() | st.floats(min_value=1e-9, max_value=1e9)

frames: st.SearchStrategy[wire.Frame] = st.one_of(
    st.builds(Hello, st.lists(st.integers(-(2**63), 2**64 - 1), min_size=1, max_size=16).map(tuple), _labels),
    st.builds(
        Welcome,
        st.integers(0, 2**64 - 1),
        _labels,
        st.integers(0, 2**64 - 1),
        st.integers(0, 2**64 - 1),
        st.lists(st.tuples(_labels, st.text(max_size=40)), min_size=1, max_size=5).map(tuple),
        st.integers(0, 2**64 - 1),
    ),
    st.builds(
        Call,
        _call_ids,
        st.text(),
        st.text(),
        st.text(),
        st.lists(_plain, max_size=4),
        st.dictionaries(st.text(max_size=10), _plain, max_size=4),
        _timeouts,
    ),
    st.builds(Result, _call_ids, _plain),
    st.builds(
        Error,
        st.none() | _call_ids,
        st.fixed_dictionaries(
            {"type": st.text(max_size=20), "message": st.text()},
            optional={"retry_after": st.floats(0, 60), "limit": st.text(max_size=20)},
        ),
    ),
)


def _has_no_nan(value: Any) -> bool:
    if isinstance(value, float):
        return not math.isnan(value)
    if isinstance(value, list):
        return all(_has_no_nan(item) for item in value)
    if isinstance(value, dict):
        return all(_has_no_nan(item) for item in value.values())
    return True


@FUZZ
@given(st.lists(frames, min_size=1, max_size=5))
def test_every_frame_type_round_trips_through_encode_and_decode(batch: list[wire.Frame]) -> None:
    assert wire.decode(wire.encode(batch)) == batch


@FUZZ
@given(_mutated())
def test_a_damaged_message_decodes_to_frames_or_a_protocol_error(data: bytes) -> None:
    decodes_or_refuses(data)
