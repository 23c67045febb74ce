"""Hypothesis settings and the values the property tests draw: what a hostile client can send.

- :data:`json_values` is everything a JSON text can decode to at the node: lone surrogates (``"\\ud800"``
  is valid JSON), integers up to Python's 4,300-digit limit, floats without NaN or infinity (the node's
  WebSocket decoder refuses those), nesting past ``MAX_VALUE_DEPTH``.
- :data:`cbor_values` adds bytes, NaN and infinities and integers past 64 bits (CBOR bignums), and no
  lone surrogates (CBOR text is UTF-8).
- :data:`tagged_cbor` is CBOR bytes with semantic tags inside (dates, bignums, regular expressions,
  MIME messages, sets, shared references, unknown tags), each with any value as its content: what
  a decoder builds from a tag is code that runs on hostile input.
- :func:`room_messages` draws the rooms' well-formed messages with fields changed, so a fuzzer gets
  past "not a map" into each field's checks.
"""

from __future__ import annotations

import math
from typing import Any

import cbor2
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st

from actors.limits import MAX_VALUE_DEPTH

__all__ = [
    "FUZZ",
    "FUZZ_SLOW",
    "WELL_FORMED",
    "cbor_values",
    "json_values",
    "nested",
    "room_messages",
    "tagged_cbor",
]

_HEALTH = [HealthCheck.too_slow, HealthCheck.function_scoped_fixture, HealthCheck.data_too_large]

#: pure parsers: cheap examples, many of them
FUZZ = settings(
    derandomize=True, max_examples=300, deadline=None, database=None, suppress_health_check=_HEALTH
)
#: examples that each run turns of a real runtime (an SQLite commit apiece). No shrinking: shrinking
#: a failure through fresh runtimes takes many minutes; the failing example is reported as drawn
FUZZ_SLOW = settings(FUZZ, max_examples=40, phases=[Phase.explicit, Phase.reuse, Phase.generate])


def nested(levels: int, leaf: Any = 1) -> Any:
    """``leaf`` inside ``levels`` lists."""
    value = leaf
    for _ in range(levels):
        value = [value]
    return value


#: integers at and past the edges that matter: 64-bit storage and CBOR heads, float conversion
_EDGE_INTS = st.sampled_from([2**53 + 1, 2**63 - 1, 2**63, 2**64, -(2**63) - 1, -(2**64) - 1, 10**400])
_INTS = st.integers() | _EDGE_INTS
_EDGE_FINITE_FLOATS = st.sampled_from([-0.0, 5e-324, 1.7976931348623157e308, 2.0**53 + 2])
#: NaN and the infinities: CBOR carries them, JSON does not
_EDGE_FLOATS = _EDGE_FINITE_FLOATS | st.sampled_from([math.nan, math.inf, -math.inf])
#: strings at the edges: lone surrogates (the JSON escape ``\ud800`` makes one), NUL, line separators,
#: one past the rooms' length limits
_EDGE_TEXT = st.sampled_from(["\ud800", "a\udc00b", "\x00", "\u2028", "x" * 65, "x" * 4097, "\U0010ffff"])
#: every code point, lone surrogates included
_ANY_TEXT = st.text(st.characters(codec=None, exclude_categories=()), max_size=80) | _EDGE_TEXT
_UTF8_EDGE_TEXT = _EDGE_TEXT.filter(lambda text: not _has_surrogates(text))
_UTF8_TEXT = st.text(max_size=80) | _UTF8_EDGE_TEXT
#: strings the rooms compare against, so checks beyond "is it a string" are reached
_WORDS = st.sampled_from(["join", "heartbeat", "value", "error", "history", "ann", ""])


def weighted(*choices: tuple[int, st.SearchStrategy[Any]]) -> st.SearchStrategy[Any]:
    """Draw from one of the strategies, each as often as its weight says (``st.one_of`` treats a
    strategy given twice as one, so repeating it does not weigh it)."""
    pool = [strategy for weight, strategy in choices for _ in range(weight)]
    return st.sampled_from(range(len(pool))).flatmap(pool.__getitem__)


def _has_surrogates(text: str) -> bool:
    return any(0xD800 <= ord(char) <= 0xDFFF for char in text)


def _values(scalars: st.SearchStrategy[Any], keys: st.SearchStrategy[str]) -> st.SearchStrategy[Any]:
    tree = st.recursive(
        scalars,
        lambda children: st.lists(children, max_size=4) | st.dictionaries(keys, children, max_size=4),
        max_leaves=12,
    )
    # and, one time in eight, a value nested about as deep as the runtime allows, just under or past it
    deep = st.builds(nested, st.integers(MAX_VALUE_DEPTH - 2, MAX_VALUE_DEPTH + 3), tree)
    return weighted((7, tree), (1, deep))


json_values: st.SearchStrategy[Any] = _values(
    st.none()
    | st.booleans()
    | _INTS
    | st.floats(allow_nan=False, allow_infinity=False)
    | _EDGE_FINITE_FLOATS
    | _ANY_TEXT
    | _WORDS,
    _ANY_TEXT | _WORDS,
)

cbor_values: st.SearchStrategy[Any] = _values(
    st.none()
    | st.booleans()
    | _INTS
    | st.floats()
    | _EDGE_FLOATS
    | _UTF8_TEXT
    | _WORDS
    | st.binary(max_size=40),
    _UTF8_TEXT | _WORDS,
)


#: the rooms' well-formed messages (server/rooms/): a fuzzer that starts from one and changes a field
#: or two reaches each field's checks, where one drawing maps at random rarely gets past the first
WELL_FORMED: dict[str, tuple[dict[str, Any], ...]] = {
    "ChatRoom": ({"user": "ann", "text": "hi", "ts": 1},),
    "Presence": ({"type": "join", "user": "ann", "meta": {"device": "phone"}}, {"type": "heartbeat"}),
    "Counter": ({"type": "value", "value": 1},),  # it ignores what it is sent
}
_ROOM_KEYS = ("type", "user", "text", "ts", "meta", "value")


def room_messages(room: str | None, *, cbor: bool) -> st.SearchStrategy[Any]:
    """Messages for ``room`` (None: any room): three times in five one of its well-formed messages
    with fields changed (to a plausible value of the field's kind three times in four: a string for
    ``user``, a number for ``ts``...; else to any value), added or left out; else a map of the
    rooms' keys, or any value at all. JSON or CBOR values, as ``cbor`` says."""
    values = cbor_values if cbor else json_values
    texts = _UTF8_TEXT if cbor else _ANY_TEXT
    # the scalars most likely to break a handler: a field's value, or an item of ``meta``
    edges = _EDGE_INTS | (
        _EDGE_FLOATS | _UTF8_EDGE_TEXT | st.binary(max_size=8) if cbor else _EDGE_FINITE_FLOATS | _EDGE_TEXT
    )
    # a JSON number past a float's range (``1e400``) reads as infinity, so both formats carry it
    numbers = _EDGE_INTS | _INTS | st.floats(allow_nan=cbor)

    def field(plausible: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
        return weighted((3, plausible), (1, values))

    meta_items = weighted((1, edges), (1, values))
    fields = {
        "type": field(_WORDS),
        "user": field(_WORDS | texts),
        "text": field(_WORDS | texts),
        "ts": field(numbers),
        "meta": field(st.dictionaries(_WORDS | texts, meta_items, min_size=1, max_size=3)),
        "value": field(numbers),
    }

    def changed(base: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
        keep = {key: weighted((1, fields[key]), (1, st.just(value))) for key, value in base.items()}
        extra = {key: fields[key] for key in _ROOM_KEYS if key not in base}
        return st.fixed_dictionaries(keep, optional=extra)

    bases = WELL_FORMED[room] if room else tuple(b for group in WELL_FORMED.values() for b in group)
    near = st.one_of(*(changed(base) for base in bases))
    return weighted((3, near), (1, st.fixed_dictionaries({}, optional=fields)), (1, values))


#: tags cbor2 decodes into objects (RFC 8949 and the IANA registry), and some it does not know
_TAGS = st.sampled_from(
    [0, 1, 2, 3, 4, 5, 21, 22, 23, 24, 25, 28, 29, 30, 32, 33, 34, 35, 36, 37, 100, 256, 258, 260, 261, 262,
     263, 1004, 55799, 27, 6, 99999, 2**64 - 1]
)  # fmt: skip


def _tag(tag: int, value: Any) -> cbor2.CBORTag:
    return cbor2.CBORTag(tag, value)


tagged_cbor: st.SearchStrategy[bytes] = st.recursive(
    cbor_values,
    lambda children: st.builds(_tag, _TAGS, children)
    | st.lists(children, max_size=3)
    | st.dictionaries(_UTF8_TEXT, children, max_size=3),
    max_leaves=8,
).map(cbor2.dumps)

