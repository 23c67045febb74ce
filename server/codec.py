"""Request and reply bodies: JSON or CBOR, chosen by the request, and the listing cursor.

Guarantees
- A body the node cannot parse, or of the wrong shape, is refused with InvalidArgument (400) that
  says what is wrong; it never reaches an object.
- Every string a JSON body or message decodes to is text: a lone UTF-16 surrogate (the escape
  ``\\ud800`` without its pair, valid JSON syntax but no character) is refused with InvalidArgument, as
  I-JSON (RFC 7493) requires, because no object could store, send or encode it back.
- Nesting is bounded before it can exhaust the decoders' stacks: a body nested deeper than
  ``MAX_BODY_DEPTH`` (the arguments' ``MAX_VALUE_DEPTH`` inside the body's own map) is refused with
  LimitExceeded (400) naming ``MAX_VALUE_DEPTH``. CBOR is cut off at that depth by the decoder; JSON
  where Python's decoder would recurse past its stack limit (a few hundred levels, the same error),
  and anything between by the runtime's own check of the arguments (400 naming the same limit).
- A reply is written in the request's format: CBOR when the request's ``Content-Type`` or ``Accept``
  is ``application/cbor``, JSON otherwise. A value JSON cannot carry (bytes, NaN, infinity) raises
  NotAcceptable (406) instead of being written as invalid JSON or silently converted.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from typing import Any

import cbor2

from actors.errors import InvalidArgument, LimitExceeded
from actors.limits import MAX_VALUE_DEPTH

from .errors import NotAcceptable

__all__ = [
    "CBOR",
    "JSON",
    "MAX_BODY_DEPTH",
    "decode_body",
    "decode_call",
    "decode_cursor",
    "encode",
    "encode_cursor",
    "refuse_lone_surrogates",
]

JSON = b"application/json"
CBOR = b"application/cbor"

#: levels of lists and maps a body may nest: arguments of ``MAX_VALUE_DEPTH`` inside the body's map
MAX_BODY_DEPTH = MAX_VALUE_DEPTH + 1

#: cbor2 counts a tag as a level too: one more leaves room for a big integer (tags 2 and 3) at the
#: deepest level of a plain value
_CBOR_MAX_DEPTH = MAX_BODY_DEPTH + 1
#: what cbor2 (5.9 and later) says when a body passes ``_CBOR_MAX_DEPTH`` (a test pins the wording;
#: were it to change, the reply would still be a 400, as a malformed body)
_CBOR_TOO_DEEP = f"maximum container nesting depth ({_CBOR_MAX_DEPTH}) exceeded"

_dumps_json = json.JSONEncoder(separators=(",", ":"), allow_nan=False, ensure_ascii=False).encode
#: once the input is strict UTF-8, only a JSON escape of a surrogate (``\\ud800`` to ``\\udfff``) can put
#: one into a decoded string
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_dumps_text = json.JSONEncoder(ensure_ascii=False, check_circular=False).encode


def decode_body(body: bytes, *, cbor: bool) -> Any:
    """The value in ``body`` (None for an empty body).

    Raises InvalidArgument if it does not parse, LimitExceeded (``MAX_VALUE_DEPTH``) if it nests
    too deep to decode (see the module docstring).
    """
    if not body:
        return None
    if cbor:
        try:
            return cbor2.loads(body, max_depth=_CBOR_MAX_DEPTH)
        except (cbor2.CBORDecodeError, ValueError, TypeError) as exc:
            if str(exc) == _CBOR_TOO_DEEP:
                raise _too_deep() from None
            raise InvalidArgument(f"malformed CBOR body: {exc}") from None
    try:
        # Strict UTF-8 (RFC 8259): json.loads would also read UTF-16 and 32, and let encoded
        # surrogates through ("surrogatepass")
        text = body.decode()
        value = json.loads(text)
    except RecursionError:  # the C decoder checks the interpreter's recursion limit at each level
        raise _too_deep() from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidArgument(f"malformed JSON body: {exc}") from None
    refuse_lone_surrogates(value, text, "body")
    return value


def refuse_lone_surrogates(value: Any, text: str, what: str) -> None:
    """Raise InvalidArgument if a string in ``value``, decoded from the JSON ``text`` (a str decoded
    strictly), holds a lone surrogate. Costs a search of ``text``, and an encoding of ``value`` only
    when ``text`` has surrogate escapes (emoji escaped as pairs, say)."""
    if _SURROGATE_ESCAPE.search(text) is None:
        return
    try:
        _dumps_text(value).encode()
    except UnicodeEncodeError:
        raise InvalidArgument(
            f"malformed JSON {what}: a string holds a lone surrogate (an escape from \\ud800 to \\udfff "
            "without its pair), which is not text"
        ) from None


def _too_deep() -> LimitExceeded:
    return LimitExceeded(
        f"the body is nested deeper than MAX_VALUE_DEPTH ({MAX_VALUE_DEPTH}) allows", limit="MAX_VALUE_DEPTH"
    )


def decode_call(body: bytes, *, cbor: bool) -> tuple[list[Any], dict[str, Any]]:
    """``args`` and ``kwargs`` of a generic call body ``{"args": [...], "kwargs": {...}}``.

    An empty body means no arguments; either key may be left out. Raises InvalidArgument unless the
    body is a map with only those keys, ``args`` a list and ``kwargs`` a map with str keys.
    """
    value = decode_body(body, cbor=cbor)
    if value is None:
        return [], {}
    if type(value) is not dict:
        raise InvalidArgument('the body must be a map {"args": [...], "kwargs": {...}}')
    unknown = sorted(str(key) for key in value if key not in ("args", "kwargs"))
    if unknown:
        raise InvalidArgument(f"unknown keys in the body: {', '.join(unknown)} (allowed: args, kwargs)")
    args = value.get("args", [])
    kwargs = value.get("kwargs", {})
    if type(args) is not list:
        raise InvalidArgument(f'"args" must be a list, not {_kind(args)}')
    if type(kwargs) is not dict:
        raise InvalidArgument(f'"kwargs" must be a map, not {_kind(kwargs)}')
    for key in kwargs:
        if type(key) is not str:
            raise InvalidArgument(f'"kwargs" keys must be strings, not {_kind(key)} {key!r}')
    return args, kwargs


def encode(value: Any, *, cbor: bool) -> bytes:
    """``value`` as a reply body; NotAcceptable if JSON cannot carry it."""
    if cbor:
        return cbor2.dumps(value)
    try:
        return _dumps_json(value).encode()
    except (TypeError, ValueError) as exc:
        raise NotAcceptable(
            f"the reply cannot be written as JSON ({exc}); send Accept: application/cbor"
        ) from None


def encode_cursor(key: tuple[str, str, str]) -> str:
    """An opaque listing cursor for the catalog key ``(class, name, id)``."""
    return base64.urlsafe_b64encode(_dumps_json(list(key)).encode()).rstrip(b"=").decode()


def decode_cursor(cursor: str) -> tuple[str, str, str]:
    """The catalog key a cursor stands for.

    Raises InvalidArgument if ``cursor`` was not made by :func:`encode_cursor`.
    """
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        key = json.loads(raw)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise InvalidArgument("cursor is not one this node returned") from None
    if type(key) is not list or len(key) != 3 or not all(type(part) is str for part in key):
        raise InvalidArgument("cursor is not one this node returned")
    return key[0], key[1], key[2]


_KINDS: dict[type, str] = {dict: "a map", list: "a list", str: "a string"}


def _kind(value: Any) -> str:
    return _KINDS.get(type(value), type(value).__name__)
