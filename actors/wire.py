"""The SDK's wire protocol: frames that carry calls over one multiplexed WebSocket, sans I/O.

The node (``server/rpc.py``) and the Python SDK (``client/``) both speak it through this module only,
so the two sides cannot drift apart. Nothing here does I/O: ``encode`` turns frames into the bytes of
one WebSocket binary message and ``decode`` turns such bytes back into frames, or raises
:class:`ProtocolError` saying what is wrong.

Messages and frames
    One binary WebSocket message is a CBOR array of 1 to ``MAX_FRAMES_PER_MESSAGE`` frames. Packing
    several frames into one message is how either side batches: a client with 50 calls ready sends one
    message, and the node replies with one message for every reply ready at the same moment. Each
    frame is a CBOR array whose first item is its type code:

    ====  ===========  ==============================================================  ==========
    code  frame        items after the code                                            direction
    ====  ===========  ==============================================================  ==========
    1     Hello        versions: [int, ...], agent: str                               C -> N
    2     Welcome      version: int, node: str, max_in_flight: int,                    N -> C
                       max_message_bytes: int, nodes: [[node, url], ...], epoch: int
    3     Call         id: int, cls: str, name: str, method: str, args: list,          C -> N
                       kwargs: {str: any}, timeout: float | null
    4     Result       id: int, value: any                                             N -> C
    5     Error        id: int | null, error: {"type": str, "message": str, ...}       N -> C
    ====  ===========  ==============================================================  ==========

Versioning
    The first message of a connection is exactly one Hello listing the versions the client speaks; the
    node answers with one Welcome naming the version both use (the highest in common) before anything
    else. A node that shares no version sends ``Error(None, InvalidArgument)`` and closes with 4400.
    A later version may add frame codes and trailing items; a frame of this version with extra
    trailing items is refused, so a mismatch is loud rather than half-understood.

Calls and replies
    ``id`` is chosen by the client, unique among its calls in flight on the connection (a positive int
    below 2**63). Every Call gets exactly one Result or Error with its id, in any order: replies come
    back as calls finish, not as they were sent. Calls of one connection to one object still run in
    the order they were sent, unless the object is between two activations (a call waiting for its
    eviction to finish, or for room under ``max_live_objects``, may be overtaken). ``timeout``
    (seconds, or null for the node's default) bounds the call at the node; a ``CallTimeout`` error
    means the call's writes were not applied.

Errors
    An Error frame's ``error`` map is :meth:`actors.errors.ActorError.to_dict`'s form: ``type`` (the
    error class name, or the user exception's class name), ``message``, and ``retry_after`` or
    ``limit`` where the class has them. :meth:`Error.exception` rebuilds the named exception.
    ``id`` null means the connection itself is at fault (a malformed message); the node then closes
    with 4400 (1011 if the fault is the node's own). A malformed message never reaches an object and
    never stops the node.

Closing
    A draining node (SIGTERM) answers new Calls with ``ShuttingDown``, answers the calls in flight,
    then closes with ``DRAIN_CLOSE``: 1001 and the reason ``"node shutting down"``. A call without a
    reply at that close never reached an object, so a client may send it again (the SDK does). A
    1001 with any other reason (a proxy going away) or any other close says nothing of the sort: a
    call without a reply may or may not have run. A connection whose Hello does not come within the
    node's Hello timeout (5 s) gets ``Error(null, InvalidArgument)`` and the close 4408.

Limits
    ``MAX_FRAMES_PER_MESSAGE`` frames per message; the node's ``max_message_bytes`` bytes per message
    (its ``--max-frame-bytes``, announced in Welcome); ``max_in_flight`` calls without a reply per
    connection (announced in Welcome; a Call past it gets ``Overloaded`` without reaching the object).
    The node never sends a message over ``max_message_bytes``: a Result too big to fit alone becomes
    ``Error(id, LimitExceeded)`` naming ``max_frame_bytes`` (the call's writes were applied).
"""

from __future__ import annotations

import io
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final, TypeAlias

import cbor2

from .errors import ActorError, InvalidArgument, error_from_wire

__all__ = [
    "DRAIN_CLOSE",
    "MAX_CALL_ID",
    "MAX_FRAMES_PER_MESSAGE",
    "PROTOCOL_VERSION",
    "SUPPORTED_VERSIONS",
    "Call",
    "CallFields",
    "Error",
    "Frame",
    "Hello",
    "ProtocolError",
    "Result",
    "Welcome",
    "choose_version",
    "decode",
    "encode",
    "encode_calls",
]

#: the version this module speaks; Hello lists it, Welcome confirms it
PROTOCOL_VERSION: Final = 1
SUPPORTED_VERSIONS: Final = (1,)

#: frames in one WebSocket message (a batch); more is a protocol error
MAX_FRAMES_PER_MESSAGE: Final = 1024

#: call ids are positive and below this (they fit a CBOR unsigned int and a signed 64-bit integer)
MAX_CALL_ID: Final = 2**63 - 1

#: the close a draining node sends once every call it read is answered: (code, reason). Calls without
#: a reply at this exact close never reached an object (see "Closing" above).
DRAIN_CLOSE: Final = (1001, "node shutting down")

#: items a Hello may list in ``versions`` and bytes an ``agent`` or node name may have
_MAX_VERSIONS = 16
_MAX_LABEL_BYTES = 256
_MAX_NODES = 4096


class ProtocolError(InvalidArgument):
    """A message that is not a well-formed batch of frames of this protocol version."""


@dataclass(frozen=True, slots=True)
class Hello:
    """The client's first frame: the protocol versions it speaks and who it is (for logs)."""

    versions: tuple[int, ...]
    agent: str


@dataclass(frozen=True, slots=True)
class Welcome:
    """The node's answer to Hello: the version in use, its own name and limits, and the cluster map.

    ``nodes`` lists every node of the cluster as ``(node, url)`` pairs (one pair on a single node);
    ``epoch`` grows whenever that list changes, so a client can tell a newer map from an older one.
    """

    version: int
    node: str
    max_in_flight: int
    max_message_bytes: int
    nodes: tuple[tuple[str, str], ...]
    epoch: int


@dataclass(frozen=True, slots=True)
class Call:
    """Call ``method`` of object ``name`` of class ``cls``; ``timeout`` None means the node's default."""

    id: int
    cls: str
    name: str
    method: str
    args: list[Any]
    kwargs: dict[str, Any]
    timeout: float | None = None


@dataclass(frozen=True, slots=True)
class Result:
    """The call ``id`` finished and its writes are durable; ``value`` is what the method returned."""

    id: int
    value: Any


@dataclass(frozen=True, slots=True)
class Error:
    """The call ``id`` failed (``id`` None: the connection is at fault); ``error`` is ``to_dict`` form."""

    id: int | None
    error: dict[str, Any]

    @classmethod
    def of(cls, call_id: int | None, exc: ActorError) -> Error:
        return cls(call_id, exc.to_dict())

    def exception(self) -> ActorError:
        """The named exception this frame carries (:func:`actors.errors.error_from_wire`)."""
        return error_from_wire(self.error)


Frame: TypeAlias = Hello | Welcome | Call | Result | Error


def choose_version(offered: Iterable[int]) -> int | None:
    """The highest version in both ``offered`` and ``SUPPORTED_VERSIONS``, or None."""
    common = set(offered) & set(SUPPORTED_VERSIONS)
    return max(common) if common else None


#### Encoding


def encode(frames: Iterable[Frame]) -> bytes:
    """The bytes of one WebSocket binary message carrying ``frames`` (in order).

    Raises InvalidArgument if a value inside is not CBOR-encodable (callers check plain values first).
    """
    items: list[list[Any]] = []
    for frame in frames:
        kind = type(frame)
        if kind is Result:
            items.append([4, frame.id, frame.value])  # type: ignore[union-attr]
        elif kind is Call:
            f: Any = frame
            items.append([3, f.id, f.cls, f.name, f.method, f.args, f.kwargs, f.timeout])
        elif kind is Error:
            items.append([5, frame.id, frame.error])  # type: ignore[union-attr]
        elif kind is Hello:
            items.append([1, list(frame.versions), frame.agent])  # type: ignore[union-attr]
        elif kind is Welcome:
            w: Any = frame
            nodes = [[node, url] for node, url in w.nodes]
            items.append([2, w.version, w.node, w.max_in_flight, w.max_message_bytes, nodes, w.epoch])
        else:
            raise TypeError(f"not a frame: {frame!r}")
    try:
        return cbor2.dumps(items)
    except (cbor2.CBOREncodeError, TypeError, ValueError) as exc:
        raise InvalidArgument(f"a frame is not CBOR-encodable: {exc}") from None


CallFields: TypeAlias = tuple[int, str, str, str, list[Any], dict[str, Any], float | None]


def encode_calls(calls: Iterable[CallFields]) -> bytes:
    """``encode`` of Call frames given as ``(id, cls, name, method, args, kwargs, timeout)`` tuples:
    the same bytes, without a Call object per call (the SDK's hot path builds none).

    Raises InvalidArgument if a value inside is not CBOR-encodable.
    """
    try:
        return cbor2.dumps([[3, *fields] for fields in calls])
    except (cbor2.CBOREncodeError, TypeError, ValueError) as exc:
        raise InvalidArgument(f"a frame is not CBOR-encodable: {exc}") from None


#### Decoding


def decode(data: bytes) -> list[Frame]:
    """The frames of one binary message, in order; ProtocolError says what is malformed.

    Only the frame structure is checked here. Call arguments and result values are checked as plain
    values by whoever uses them (the runtime checks every call's arguments anyway).
    """
    stream = io.BytesIO(data)
    try:
        items = cbor2.CBORDecoder(stream).decode()
    except Exception as exc:  # cbor2 raises several types (and RecursionError on hostile nesting)
        raise ProtocolError(f"the message is not valid CBOR: {type(exc).__name__}: {exc}") from None
    if stream.tell() != len(data):
        raise ProtocolError("the message is not valid CBOR: bytes follow its array of frames")
    if type(items) is not list:
        raise ProtocolError(f"a message must be a CBOR array of frames, not {_kind(items)}")
    if not items:
        raise ProtocolError("a message must carry at least one frame")
    if len(items) > MAX_FRAMES_PER_MESSAGE:
        raise ProtocolError(
            f"a message carries {len(items)} frames; MAX_FRAMES_PER_MESSAGE is {MAX_FRAMES_PER_MESSAGE}"
        )
    return [_decode_frame(item, index) for index, item in enumerate(items)]


def _decode_frame(item: Any, index: int) -> Frame:
    if type(item) is not list or not item:
        raise ProtocolError(f"frame {index} must be a non-empty array, not {_kind(item)}")
    code = item[0]
    if code == 4 and type(code) is int:
        _arity(item, 3, "Result", index)
        call_id = item[1]
        if type(call_id) is not int or not 0 < call_id <= MAX_CALL_ID:
            _call_id(call_id, index)  # raises, naming the problem
        result: Result = _FAST_NEW(Result)
        _SET_RESULT_ID(result, call_id)  # the SDK's hot path: see _new_call
        _SET_RESULT_VALUE(result, item[2])
        return result
    if code == 3 and type(code) is int:
        _arity(item, 8, "Call", index)
        _, call_id, cls, name, method, args, kwargs, timeout = item
        # The hot path of the node: one test for the common case, the message only on failure.
        if not (
            type(cls) is str
            and type(name) is str
            and type(method) is str
            and type(args) is list
            and type(kwargs) is dict
            and type(call_id) is int
            and 0 < call_id <= MAX_CALL_ID
        ):
            _check_call(item, index)
        if kwargs and any(type(key) is not str for key in kwargs):
            raise ProtocolError(f"frame {index} (Call): kwargs must be a map with string keys")
        if timeout is not None:
            timeout = _timeout(timeout, f"frame {index} (Call)")
        return _new_call(call_id, cls, name, method, args, kwargs, timeout)
    if code == 5 and type(code) is int:
        _arity(item, 3, "Error", index)
        call_id = None if item[1] is None else _call_id(item[1], index)
        error = item[2]
        if (
            type(error) is not dict
            or type(error.get("type")) is not str
            or type(error.get("message")) is not str
        ):
            raise ProtocolError(f"frame {index} (Error): error must be a map with type and message strings")
        return Error(call_id, error)
    if code == 1 and type(code) is int:
        _arity(item, 3, "Hello", index)
        versions, agent = item[1], item[2]
        if (
            type(versions) is not list
            or not 0 < len(versions) <= _MAX_VERSIONS
            or any(type(v) is not int for v in versions)
        ):
            raise ProtocolError(f"frame {index} (Hello): versions must be 1 to {_MAX_VERSIONS} integers")
        _label(agent, "agent", f"frame {index} (Hello)")
        return Hello(tuple(versions), agent)
    if code == 2 and type(code) is int:
        _arity(item, 7, "Welcome", index)
        _, version, node, max_in_flight, max_bytes, nodes, epoch = item
        where = f"frame {index} (Welcome)"
        for value, label in ((version, "version"), (max_in_flight, "max_in_flight"),
                             (max_bytes, "max_message_bytes"), (epoch, "epoch")):
            if type(value) is not int or value < 0:
                raise ProtocolError(f"{where}: {label} must be a non-negative integer")
        _label(node, "node", where)
        if type(nodes) is not list or not 0 < len(nodes) <= _MAX_NODES:
            raise ProtocolError(f"{where}: nodes must be an array of 1 to {_MAX_NODES} [node, url] pairs")
        pairs = []
        for pair in nodes:
            if type(pair) is not list or len(pair) != 2:
                raise ProtocolError(f"{where}: each node must be a [node, url] pair")
            _label(pair[0], "node", where)
            _str(pair[1], "url", where)
            pairs.append((pair[0], pair[1]))
        return Welcome(version, node, max_in_flight, max_bytes, tuple(pairs), epoch)
    shown = repr(code) if type(code) is int and code.bit_length() <= 64 else _kind(code)
    raise ProtocolError(f"frame {index}: unknown frame type {shown}")  # never a huge int's digits


def _check_call(item: list[Any], index: int) -> None:
    """Raise the ProtocolError that says what is wrong with Call ``item``."""
    _, call_id, cls, name, method, args, kwargs, _ = item
    where = f"frame {index} (Call)"
    _str(cls, "cls", where)
    _str(name, "name", where)
    _str(method, "method", where)
    if type(args) is not list:
        raise ProtocolError(f"{where}: args must be an array, not {_kind(args)}")
    if type(kwargs) is not dict:
        raise ProtocolError(f"{where}: kwargs must be a map with string keys")
    _call_id(call_id, index)


_FAST_NEW = object.__new__
_CALL_SETTERS = tuple(
    getattr(Call, field).__set__ for field in ("id", "cls", "name", "method", "args", "kwargs", "timeout")
)


_SET_RESULT_ID, _SET_RESULT_VALUE = (getattr(Result, field).__set__ for field in ("id", "value"))


def _new_call(
    call_id: int,
    cls: str,
    name: str,
    method: str,
    args: list[Any],
    kwargs: dict[str, Any],
    timeout: float | None,
) -> Call:
    """``Call(...)`` for checked fields, at two thirds of the cost: a frozen dataclass's ``__init__``
    assigns through ``object.__setattr__``; the slots' own setters skip that (same object)."""
    call: Call = _FAST_NEW(Call)
    set_id, set_cls, set_name, set_method, set_args, set_kwargs, set_timeout = _CALL_SETTERS
    set_id(call, call_id)
    set_cls(call, cls)
    set_name(call, name)
    set_method(call, method)
    set_args(call, args)
    set_kwargs(call, kwargs)
    set_timeout(call, timeout)
    return call


def _arity(item: list[Any], expected: int, name: str, index: int) -> None:
    if len(item) != expected:
        raise ProtocolError(f"frame {index} ({name}) must have {expected} items, not {len(item)}")


def _call_id(value: Any, index: int) -> int:
    if type(value) is not int or not 0 < value <= MAX_CALL_ID:
        raise ProtocolError(f"frame {index}: a call id must be an integer from 1 to 2**63-1")
    return int(value)


def _timeout(value: Any, where: str) -> float:
    seconds = float("nan")
    if type(value) in (int, float):
        try:
            seconds = float(value)
        except OverflowError:  # an int too large for a float
            pass
    if not 0 < seconds < float("inf"):
        raise ProtocolError(f"{where}: timeout must be a positive number of seconds or null")
    return seconds


def _str(value: Any, label: str, where: str) -> None:
    if type(value) is not str:
        raise ProtocolError(f"{where}: {label} must be a string, not {_kind(value)}")


def _label(value: Any, label: str, where: str) -> None:
    _str(value, label, where)
    if len(value.encode("utf-8", "surrogatepass")) > _MAX_LABEL_BYTES:
        raise ProtocolError(f"{where}: {label} is longer than {_MAX_LABEL_BYTES} bytes")


def _kind(value: Any) -> str:
    names: dict[type, str] = {dict: "a map", list: "an array", str: "a string", bytes: "bytes"}
    return names.get(type(value), type(value).__name__)
