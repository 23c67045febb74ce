"""Plain values: the only things that cross an object's boundary or go into its storage.

A plain value is None, bool, int, float, str, bytes, a list of plain values or a dict with str keys and
plain values, nested at most ``MAX_VALUE_DEPTH`` deep. Tuples are accepted and travel as lists (CBOR has
one array type). Anything else is refused with an error that names the type and where it sits
(``result[2]: set is not serializable``), so the mistake is found where it was made rather than as an
opaque encoder failure.
"""

from __future__ import annotations

from typing import Any

import cbor2

from .limits import MAX_VALUE_DEPTH

_SCALARS = (type(None), bool, int, float, str, bytes)


def describe_unserializable(value: Any, where: str) -> str | None:
    """Return why ``value`` is not a plain value (naming the path from ``where``), or None if it is.

    Public as ``actors.plain_value_problem``: the node checks decoded frames with it.
    """
    return _check(value, where, 0)


def _check(value: Any, where: str, depth: int) -> str | None:
    kind = type(value)
    if kind in _SCALARS:
        return None
    if depth >= MAX_VALUE_DEPTH:
        return f"{where}: nested deeper than MAX_VALUE_DEPTH ({MAX_VALUE_DEPTH})"
    if kind is list or kind is tuple:
        for index, item in enumerate(value):
            if type(item) not in _SCALARS:
                problem = _check(item, f"{where}[{index}]", depth + 1)
                if problem:
                    return problem
        return None
    if kind is dict:
        for key, item in value.items():
            if type(key) is not str:
                return f"{where}: dict key {key!r} is a {type(key).__name__}, not a str"
            if type(item) not in _SCALARS:
                problem = _check(item, f"{where}[{key!r}]", depth + 1)
                if problem:
                    return problem
        return None
    return f"{where}: {kind.__name__} is not serializable"


def is_flat(values: Any) -> bool:
    """True if every item of the list/tuple/dict ``values`` is an immutable scalar (no copy needed)."""
    items = values.values() if type(values) is dict else values
    return all(type(item) in _SCALARS for item in items)


def dumps(value: Any) -> bytes:
    """Encode a value already known to be plain."""
    return cbor2.dumps(value)


def loads(data: bytes) -> Any:
    return cbor2.loads(data)
