"""The SDK's wire protocol without I/O: every frame round-trips, every malformed message is a
ProtocolError naming the problem, and hostile CBOR is refused fast."""

from __future__ import annotations

import re
import time
from typing import Any

import cbor2
import pytest

from actors import errors, wire
from actors.wire import Call, Error, Hello, ProtocolError, Result, Welcome

FRAMES: list[wire.Frame] = [
    Hello((1, 2), "actors-python/0.1"),
    Welcome(1, "n1", 4096, 1 << 20, (("n1", "http://a:1"), ("n2", "http://b:2")), 7),
    Call(1, "Counter", "home", "increment", [1, "x", None], {"by": 2}, None),
    Call(wire.MAX_CALL_ID, "Probe", "ü/ß", "echo", [b"\x00\xff", [1.5, {"k": [True]}]], {}, 0.25),
    Result(2, {"value": [1, 2, b"bytes"]}),
    Result(3, None),
    Error(4, {"type": "ValueError", "message": "boom"}),
    Error(None, {"type": "InvalidArgument", "message": "bad"}),
    Error(5, {"type": "Overloaded", "message": "busy", "retry_after": 0.5}),
]


@pytest.mark.parametrize("frame", FRAMES, ids=lambda f: type(f).__name__)
def test_every_frame_round_trips_alone(frame: wire.Frame) -> None:
    assert wire.decode(wire.encode([frame])) == [frame]


def test_a_batch_round_trips_in_order_and_is_one_cbor_array_of_arrays() -> None:
    data = wire.encode(FRAMES)
    assert wire.decode(data) == FRAMES
    raw = cbor2.loads(data)
    assert [item[0] for item in raw] == [1, 2, 3, 3, 4, 4, 5, 5, 5]
    assert raw[2] == [3, 1, "Counter", "home", "increment", [1, "x", None], {"by": 2}, None]


def test_encode_calls_gives_the_bytes_encode_gives_for_the_same_calls() -> None:
    fields: list[wire.CallFields] = [
        (1, "Counter", "home", "increment", [], {"by": 2}, 2.5),
        (2, "Room", "é", "post", ["hi", b"\x00", None, [1, {"k": 1.5}]], {}, None),
    ]
    assert wire.encode_calls(fields) == wire.encode([Call(*f) for f in fields])
    assert wire.decode(wire.encode_calls(fields)) == [Call(*f) for f in fields]
    with pytest.raises(errors.InvalidArgument, match="not CBOR-encodable"):
        wire.encode_calls([(3, "C", "n", "m", [object()], {}, None)])


def test_an_integer_timeout_decodes_as_seconds_in_a_float() -> None:
    (call,) = wire.decode(cbor2.dumps([[3, 1, "C", "n", "m", [], {}, 2]]))
    assert isinstance(call, Call)
    assert call.timeout == 2.0
    assert type(call.timeout) is float


def test_error_frames_rebuild_the_named_exception() -> None:
    overloaded = Error.of(1, errors.Overloaded("busy", retry_after=0.5)).exception()
    assert isinstance(overloaded, errors.Overloaded)
    assert overloaded.retry_after == 0.5
    limit = Error.of(2, errors.LimitExceeded("long", limit="MAX_KEY_BYTES")).exception()
    assert isinstance(limit, errors.LimitExceeded)
    assert limit.limit == "MAX_KEY_BYTES"
    user = Error(3, {"type": "KeyError", "message": "'k'"}).exception()
    assert isinstance(user, errors.UserError)
    assert (user.type, user.message) == ("KeyError", "'k'")


def test_version_choice_is_the_highest_in_common_or_none() -> None:
    assert wire.choose_version([0, 1, 99]) == 1
    assert wire.choose_version([2, 3]) is None
    assert wire.choose_version([]) is None


def test_encoding_a_value_cbor_cannot_carry_is_invalid_argument() -> None:
    with pytest.raises(errors.InvalidArgument, match=r"^a frame is not CBOR-encodable: "):
        wire.encode([Result(1, object())])
    with pytest.raises(TypeError, match=r"^not a frame: 'text'$"):
        wire.encode(["text"])  # type: ignore[list-item]


def call(*items: Any) -> bytes:
    """A message of one Call frame whose items after the code are ``items``."""
    return cbor2.dumps([[3, *items]])


OK_CALL = (1, "C", "n", "m", [], {}, None)

MALFORMED: list[tuple[bytes, str]] = [
    (b"\xff", r"the message is not valid CBOR: .*"),
    (b"", r"the message is not valid CBOR: .*"),
    (cbor2.dumps([[4, 1, None]]) + b"\x00", r"the message is not valid CBOR: .*"),  # trailing bytes
    (cbor2.dumps({"frames": []}), r"a message must be a CBOR array of frames, not a map"),
    (cbor2.dumps([]), r"a message must carry at least one frame"),
    (cbor2.dumps([[4, 1, None]] * 1025), r"a message carries 1025 frames; MAX_FRAMES_PER_MESSAGE is 1024"),
    (cbor2.dumps([7]), r"frame 0 must be a non-empty array, not int"),
    (cbor2.dumps([[]]), r"frame 0 must be a non-empty array, not an array"),
    (cbor2.dumps([[4, 1, None], [9, 1]]), r"frame 1: unknown frame type 9"),
    (cbor2.dumps([["3", 1]]), r"frame 0: unknown frame type a string"),
    (cbor2.dumps([[3.0, *OK_CALL]]), r"frame 0: unknown frame type float"),
    (cbor2.dumps([[True, 1, None]]), r"frame 0: unknown frame type bool"),  # True == 1, not Hello
    (cbor2.dumps([[2**20000]]), r"frame 0: unknown frame type int"),  # never 6,000 digits
    (call(*OK_CALL[:-1]), r"frame 0 \(Call\) must have 8 items, not 7"),
    (call(*OK_CALL, None), r"frame 0 \(Call\) must have 8 items, not 9"),
    (call(0, *OK_CALL[1:]), r"frame 0: a call id must be an integer from 1 to 2\*\*63-1"),
    (call(2**63, *OK_CALL[1:]), r"frame 0: a call id must be an integer from 1 to 2\*\*63-1"),
    (call(True, *OK_CALL[1:]), r"frame 0: a call id must be an integer from 1 to 2\*\*63-1"),
    (call("1", *OK_CALL[1:]), r"frame 0: a call id must be an integer from 1 to 2\*\*63-1"),
    (call(1, b"C", "n", "m", [], {}, None), r"frame 0 \(Call\): cls must be a string, not bytes"),
    (call(1, "C", 5, "m", [], {}, None), r"frame 0 \(Call\): name must be a string, not int"),
    (call(1, "C", "n", None, [], {}, None), r"frame 0 \(Call\): method must be a string, not NoneType"),
    (call(1, "C", "n", "m", {}, {}, None), r"frame 0 \(Call\): args must be an array, not a map"),
    (call(1, "C", "n", "m", [], [], None), r"frame 0 \(Call\): kwargs must be a map with string keys"),
    (call(1, "C", "n", "m", [], {1: 2}, None), r"frame 0 \(Call\): kwargs must be a map with string keys"),
    (call(1, "C", "n", "m", [], {}, 0), r"frame 0 \(Call\): timeout must be a positive number .*"),
    (call(1, "C", "n", "m", [], {}, -1.0), r"frame 0 \(Call\): timeout must be a positive number .*"),
    (call(1, "C", "n", "m", [], {}, float("inf")), r"frame 0 \(Call\): timeout must be a positive .*"),
    (call(1, "C", "n", "m", [], {}, float("nan")), r"frame 0 \(Call\): timeout must be a positive .*"),
    (call(1, "C", "n", "m", [], {}, "1"), r"frame 0 \(Call\): timeout must be a positive number .*"),
    (call(1, "C", "n", "m", [], {}, True), r"frame 0 \(Call\): timeout must be a positive number .*"),
    (call(1, "C", "n", "m", [], {}, 10**400), r"frame 0 \(Call\): timeout must be a positive .*"),
    (cbor2.dumps([[4, 1]]), r"frame 0 \(Result\) must have 3 items, not 2"),
    (cbor2.dumps([[4, None, 1]]), r"frame 0: a call id must be an integer from 1 to 2\*\*63-1"),
    (cbor2.dumps([[5, 1, {"type": "X"}]]), r"frame 0 \(Error\): error must be a map with type and .*"),
    (cbor2.dumps([[5, 1, {"type": 1, "message": ""}]]), r"frame 0 \(Error\): error must be a map .*"),
    (cbor2.dumps([[5, 1, "boom"]]), r"frame 0 \(Error\): error must be a map with type and .*"),
    (cbor2.dumps([[5, 0, {"type": "X", "message": ""}]]), r"frame 0: a call id must be .*"),
    (cbor2.dumps([[1, [1]]]), r"frame 0 \(Hello\) must have 3 items, not 2"),
    (cbor2.dumps([[1, [], "a"]]), r"frame 0 \(Hello\): versions must be 1 to 16 integers"),
    (cbor2.dumps([[1, list(range(17)), "a"]]), r"frame 0 \(Hello\): versions must be 1 to 16 integers"),
    (cbor2.dumps([[1, ["1"], "a"]]), r"frame 0 \(Hello\): versions must be 1 to 16 integers"),
    (cbor2.dumps([[1, 1, "a"]]), r"frame 0 \(Hello\): versions must be 1 to 16 integers"),
    (cbor2.dumps([[1, [1], None]]), r"frame 0 \(Hello\): agent must be a string, not NoneType"),
    (cbor2.dumps([[1, [1], "é" * 129]]), r"frame 0 \(Hello\): agent is longer than 256 bytes"),
    (cbor2.dumps([[2, 1, "n", 1, 1, [["n", "u"]]]]), r"frame 0 \(Welcome\) must have 7 items, not 6"),
    (cbor2.dumps([[2, -1, "n", 1, 1, [["n", "u"]], 0]]), r"frame 0 \(Welcome\): version must be .*"),
    (cbor2.dumps([[2, 1, "n", 1.0, 1, [["n", "u"]], 0]]), r"frame 0 \(Welcome\): max_in_flight .*"),
    (cbor2.dumps([[2, 1, "n", 1, "1", [["n", "u"]], 0]]), r"frame 0 \(Welcome\): max_message_bytes .*"),
    (cbor2.dumps([[2, 1, "n", 1, 1, [["n", "u"]], None]]), r"frame 0 \(Welcome\): epoch must be .*"),
    (cbor2.dumps([[2, 1, 5, 1, 1, [["n", "u"]], 0]]), r"frame 0 \(Welcome\): node must be a string, not int"),
    (cbor2.dumps([[2, 1, "n", 1, 1, [], 0]]), r"frame 0 \(Welcome\): nodes must be an array of 1 to 4096 .*"),
    (cbor2.dumps([[2, 1, "n", 1, 1, {"n": "u"}, 0]]), r"frame 0 \(Welcome\): nodes must be an array .*"),
    (cbor2.dumps([[2, 1, "n", 1, 1, [["n"]], 0]]), r"frame 0 \(Welcome\): each node must be a .*"),
    (cbor2.dumps([[2, 1, "n", 1, 1, [["n", 1]], 0]]), r"frame 0 \(Welcome\): url must be a string, not int"),
    (cbor2.dumps([[2, 1, "n", 1, 1, [["x" * 257, "u"]], 0]]), r"frame 0 \(Welcome\): node is longer .*"),
]


@pytest.mark.parametrize(("data", "message"), MALFORMED)
def test_every_malformed_message_is_a_protocol_error_naming_the_problem(data: bytes, message: str) -> None:
    with pytest.raises(ProtocolError, match=f"^{message}$"):
        wire.decode(data)


def test_a_protocol_error_is_an_invalid_argument() -> None:
    assert issubclass(ProtocolError, errors.InvalidArgument)


#### Hostile CBOR: refused fast, never a crash

#: generous for a slow shared machine; each of these takes microseconds
FAST = 0.5

HOSTILE: list[tuple[str, bytes]] = [
    ("100,000 nested arrays", b"\x81" * 100_000 + b"\x00"),
    ("100,000 nested maps", b"\xa1\x00" * 100_000 + b"\x00"),
    ("an indefinite array never ended", b"\x9f" * 50_000),
    ("an array declaring 2**62 items", b"\x9b" + (2**62).to_bytes(8, "big")),
    ("a map declaring 2**62 pairs", b"\xbb" + (2**62).to_bytes(8, "big")),
    ("bytes declaring 2**62 bytes", b"\x81\x5b" + (2**62).to_bytes(8, "big") + b"abc"),
    ("text declaring 2**62 bytes", b"\x81\x7b" + (2**62).to_bytes(8, "big") + b"abc"),
    ("an array declaring 2**32-1 items", b"\x9a\xff\xff\xff\xff" + b"\x00" * 16),
    ("a frame declaring 2**32-1 items", b"\x81\x9a\xff\xff\xff\xff\x04"),
    ("a lone break", b"\xff"),
    ("a truncated float", b"\xfb\x00"),
    ("invalid UTF-8 text", b"\x81\x81\x62\xff\xfe"),
    ("an unknown simple value", b"\x81\xf8\x20"),
]


@pytest.mark.parametrize(("what", "data"), HOSTILE, ids=[what for what, _ in HOSTILE])
def test_hostile_cbor_is_a_protocol_error_at_once(what: str, data: bytes) -> None:
    started = time.perf_counter()
    with pytest.raises(ProtocolError):
        wire.decode(data)
    assert time.perf_counter() - started < FAST, what


def test_a_self_referencing_message_is_a_protocol_error() -> None:
    # CBOR value sharing (tags 28/29) builds a list that contains itself
    data = b"\xd8\x1c\x81\xd8\x1d\x00"
    with pytest.raises(ProtocolError, match=re.escape("frame 0: unknown frame type an array")):
        wire.decode(data)


def test_call_arguments_are_not_checked_here_but_by_the_runtime() -> None:
    # a CBOR set (tag 258) is not a plain value; wire.decode leaves that to the runtime's checks
    data = cbor2.dumps([[3, 1, "C", "n", "m", [{1, 2}], {}, None]])
    (frame,) = wire.decode(data)
    assert isinstance(frame, Call)
    assert frame.args == [{1, 2}]
