"""The key-value half of ``self.storage``: reads, writes, key order, ranges and prefixes, limits."""

from __future__ import annotations

import pytest

from actors import App
from actors.errors import InvalidArgument, LimitExceeded
from actors.limits import MAX_KEY_BYTES, MAX_KEYS_PER_CALL, MAX_VALUE_BYTES
from actors.testing import open_test_runtime

from .storage_objects import Store

APP = App([Store])

# Keys in UTF-8 byte order, which is also Python's str (code point) order: ASCII, then 2-, 3- and
# 4-byte sequences, with U+FFFF (3 bytes) before U+10000 (4 bytes) and the largest code point last.
ORDERED_KEYS = [
    "",
    "\x00",
    "A",
    "a",
    "a\x00",
    "ab",
    "a\U0010ffff",
    "b",
    "z",
    "é",
    "ÿ",
    "Ā",
    "中",
    "\ud7ff",
    "\ue000",
    "\uffff",
    "😀",
    "\U0010ffff",
    "\U0010ffff\U0010ffff",
]


#### Reads and writes


async def test_a_put_value_reads_back_as_an_equal_plain_value(tmp_path):
    values = [
        *(None, True, False, 0, -1, 2**70, 1.5, "", "text é", b"\x00bytes"),
        *([1, [2]], {"a": {"b": [None]}}),
    ]
    async with open_test_runtime(APP, tmp_path) as t:
        store = t.get("Store", "s")
        for index, value in enumerate(values):
            await store.put(f"k{index}", value)
        for index, value in enumerate(values):
            assert await store.get(f"k{index}") == value
        await store.put("tuple", (1, "two"))
        assert await store.get("tuple") == [1, "two"]


async def test_a_stored_value_is_a_copy_that_later_mutation_does_not_change(tmp_path):
    async with open_test_runtime(APP, tmp_path) as t:
        assert await t.get("Store", "s").put_then_mutate() == [1, {"a": 2}]


async def test_put_replaces_the_previous_value(tmp_path):
    async with open_test_runtime(APP, tmp_path) as t:
        store = t.get("Store", "s")
        await store.put("k", "first")
        await store.put("k", {"second": 2})
        assert await store.get("k") == {"second": 2}
        assert await store.keys() == ["k"]


async def test_get_returns_the_default_only_for_a_missing_key(tmp_path):
    async with open_test_runtime(APP, tmp_path) as t:
        store = t.get("Store", "s")
        assert await store.get("missing") is None  # on an object with no storage at all
        assert await store.get("missing", 5) == 5
        await store.put("none", None)
        await store.put("zero", 0)
        assert await store.get("none", 5) is None
        assert await store.get("zero", 5) == 0
        assert await store.get("missing", [1]) == [1]


async def test_get_many_returns_the_stored_keys_in_the_order_asked(tmp_path):
    async with open_test_runtime(APP, tmp_path) as t:
        store = t.get("Store", "s")
        assert await store.get_many(["a", "b"]) == []  # no storage yet
        await store.put_many({"a": 1, "b": None, "c": 3})
        assert await store.get_many(["c", "missing", "a", "b"]) == [["c", 3], ["a", 1], ["b", None]]
        assert await store.get_many([]) == []


async def test_put_many_stores_every_pair(tmp_path):
    async with open_test_runtime(APP, tmp_path) as t:
        store = t.get("Store", "s")
        await store.put("a", "old")
        await store.put_many({"a": "new", "b": [2], "é": 3})
        assert await store.list() == [["a", "new"], ["b", [2]], ["é", 3]]


async def test_put_many_writes_nothing_if_one_value_is_refused(tmp_path):
    async with open_test_runtime(APP, tmp_path) as t:
        store = t.get("Store", "s")
        assert await store.put_many_with_a_set() == (
            "InvalidArgument: value of 'bad': set is not serializable"
        )
        assert await store.list() == []


async def test_delete_reports_whether_the_key_existed(tmp_path):
    async with open_test_runtime(APP, tmp_path) as t:
        store = t.get("Store", "s")
        assert await store.delete("k") is False  # no storage yet
        await store.put_many({"k": None, "other": 1})
        assert await store.delete("k") is True
        assert await store.delete("k") is False
        assert await store.get("k", "gone") == "gone"
        assert await store.keys() == ["other"]


async def test_delete_many_returns_how_many_of_the_keys_existed(tmp_path):
    async with open_test_runtime(APP, tmp_path) as t:
        store = t.get("Store", "s")
        assert await store.delete_many(["a"]) == 0  # no storage yet
        await store.put_many({"a": 1, "b": 2, "c": 3})
        assert await store.delete_many(["a", "a", "missing", "c"]) == 2
        assert await store.delete_many([]) == 0
        assert await store.keys() == ["b"]


#### Listing: order, ranges, prefixes, limits


async def test_list_returns_keys_in_utf8_byte_order_which_is_str_order(tmp_path):
    assert sorted(ORDERED_KEYS, key=lambda k: k.encode("utf-8")) == ORDERED_KEYS
    assert sorted(ORDERED_KEYS) == ORDERED_KEYS
    async with open_test_runtime(APP, tmp_path) as t:
        store = t.get("Store", "s")
        shuffled = ORDERED_KEYS[1::2] + ORDERED_KEYS[::2]
        await store.put_many({key: index for index, key in enumerate(shuffled)})
        assert await store.keys() == ORDERED_KEYS
        assert await store.keys(reverse=True) == ORDERED_KEYS[::-1]
        assert await store.list(limit=2) == [["", shuffled.index("")], ["\x00", shuffled.index("\x00")]]


async def test_list_of_an_object_with_no_storage_is_empty(tmp_path):
    async with open_test_runtime(APP, tmp_path) as t:
        assert await t.get("Store", "s").list(prefix="a", reverse=True, limit=3) == []


async def test_start_is_inclusive_and_end_is_exclusive(tmp_path):
    async with open_test_runtime(APP, tmp_path) as t:
        store = t.get("Store", "s")
        await store.put_many({k: k for k in ("a", "b", "bb", "c", "d")})
        assert await store.keys(start="b", end="d") == ["b", "bb", "c"]
        assert await store.keys(start="bb") == ["bb", "c", "d"]
        assert await store.keys(end="b") == ["a"]
        assert await store.keys(start="b", end="d", reverse=True) == ["c", "bb", "b"]
        assert await store.keys(start="c", end="b") == []
        assert await store.keys(start="b", end="b") == []


@pytest.mark.parametrize(
    ("prefix", "expected"),
    [
        pytest.param("", ORDERED_KEYS, id="empty prefix matches all"),
        pytest.param("a", ["a", "a\x00", "ab", "a\U0010ffff"], id="ascii"),
        pytest.param("a\U0010ffff", ["a\U0010ffff"], id="ends in the largest code point"),
        pytest.param(
            "\U0010ffff", ["\U0010ffff", "\U0010ffff\U0010ffff"], id="only largest code points"
        ),
        pytest.param("\ud7ff", ["\ud7ff"], id="ends just below the surrogates"),
        pytest.param("\uffff", ["\uffff"], id="U+FFFF is below U+10000"),
        pytest.param("é", ["é"], id="two-byte"),
        pytest.param("ac", [], id="no match"),
    ],
)
async def test_prefix_matches_exactly_the_keys_that_start_with_it(tmp_path, prefix, expected):
    async with open_test_runtime(APP, tmp_path) as t:
        store = t.get("Store", "s")
        await store.put_many({key: 0 for key in ORDERED_KEYS})
        assert await store.keys(prefix=prefix) == expected
        assert await store.keys(prefix=prefix, reverse=True) == expected[::-1]
        assert expected == [k for k in ORDERED_KEYS if k.startswith(prefix)]


async def test_prefix_combines_with_start_end_and_limit(tmp_path):
    async with open_test_runtime(APP, tmp_path) as t:
        store = t.get("Store", "s")
        await store.put_many({k: 0 for k in ("a", "user:1", "user:2", "user:3", "user;", "v")})
        assert await store.keys(prefix="user:", start="user:2") == ["user:2", "user:3"]
        assert await store.keys(prefix="user:", end="user:3") == ["user:1", "user:2"]
        assert await store.keys(prefix="user:", start="a", end="z") == ["user:1", "user:2", "user:3"]
        assert await store.keys(prefix="user:", reverse=True, limit=2) == ["user:3", "user:2"]


async def test_limit_applies_after_ordering_so_reverse_limit_one_is_the_last_key(tmp_path):
    async with open_test_runtime(APP, tmp_path) as t:
        store = t.get("Store", "s")
        await store.put_many({k: k.upper() for k in ("c", "a", "d", "b")})
        assert await store.list(reverse=True, limit=1) == [["d", "D"]]
        assert await store.list(limit=1) == [["a", "A"]]
        assert await store.keys(reverse=True, limit=3) == ["d", "c", "b"]
        assert await store.keys(limit=10) == ["a", "b", "c", "d"]
        assert await store.keys(limit=0) == []


@pytest.mark.parametrize("limit", [-1, 1.0, True, "1"])
async def test_a_limit_that_is_not_a_non_negative_int_is_refused(tmp_path, limit):
    async with open_test_runtime(APP, tmp_path) as t:
        with pytest.raises(InvalidArgument, match=r"^limit must be a non-negative int$"):
            await t.get("Store", "s").keys(limit=limit)


#### Limits


async def test_a_key_of_max_key_bytes_is_stored_and_one_byte_more_is_refused(tmp_path):
    assert MAX_KEY_BYTES == 2048
    longest = "é" * 1024  # 2048 UTF-8 bytes, 1024 characters
    too_long = longest + "a"
    async with open_test_runtime(APP, tmp_path) as t:
        store = t.get("Store", "s")
        await store.put(longest, 1)
        assert await store.get(longest) == 1
        await store.put("😀" * 512, 2)  # 4-byte characters: 2048 bytes in 512 characters
        assert await store.get("😀" * 512) == 2
        for method, args in (
            ("put", (too_long, 1)),
            ("get", (too_long,)),
            ("delete", (too_long,)),
            ("get_many", (["a", too_long],)),
            ("put_many", ({too_long: 1},)),
            ("delete_many", ([too_long],)),
        ):
            with pytest.raises(
                LimitExceeded, match=r"^storage key is 2049 bytes; MAX_KEY_BYTES is 2048$"
            ) as info:
                await store.call(method, *args)
            assert info.value.limit == "MAX_KEY_BYTES"
        assert await store.keys() == sorted([longest, "😀" * 512])


@pytest.mark.parametrize("what", ["start", "end", "prefix"])
async def test_list_bounds_and_prefixes_obey_max_key_bytes(tmp_path, what):
    async with open_test_runtime(APP, tmp_path) as t:
        bound = "bound" if what != "prefix" else "prefix"
        with pytest.raises(
            LimitExceeded, match=rf"^storage {bound} is 2049 bytes; MAX_KEY_BYTES is 2048$"
        ) as info:
            await t.get("Store", "s").keys(**{what: "x" * 2049})
        assert info.value.limit == "MAX_KEY_BYTES"


async def test_a_value_of_max_value_bytes_encoded_is_stored_and_one_byte_more_is_refused(tmp_path):
    assert MAX_VALUE_BYTES == 2 * 1024 * 1024
    header = 5  # CBOR: one byte of major type + a 4-byte length for a byte string this long
    async with open_test_runtime(APP, tmp_path) as t:
        store = t.get("Store", "s")
        await store.put_bytes("big", MAX_VALUE_BYTES - header)
        assert await store.stored_size("big") == MAX_VALUE_BYTES - header
        with pytest.raises(
            LimitExceeded,
            match=r"^value of 'bigger' is 2097153 bytes encoded; MAX_VALUE_BYTES is 2097152$",
        ) as info:
            await store.put_bytes("bigger", MAX_VALUE_BYTES - header + 1)
        assert info.value.limit == "MAX_VALUE_BYTES"
        assert await store.keys() == ["big"]


async def test_multi_key_calls_take_at_most_max_keys_per_call_keys(tmp_path):
    assert MAX_KEYS_PER_CALL == 128
    keys = [f"k{i:03}" for i in range(MAX_KEYS_PER_CALL + 1)]
    async with open_test_runtime(APP, tmp_path) as t:
        store = t.get("Store", "s")
        await store.put_many(dict.fromkeys(keys[:128], 1))
        assert len(await store.get_many(keys[:128])) == 128
        for method, arg in (
            ("get_many", keys),
            ("put_many", dict.fromkeys(keys, 2)),
            ("delete_many", keys),
        ):
            with pytest.raises(
                LimitExceeded, match=r"^129 keys in one call; MAX_KEYS_PER_CALL is 128$"
            ) as info:
                await store.call(method, arg)
            assert info.value.limit == "MAX_KEYS_PER_CALL"
        assert await store.keys() == keys[:128]
        assert await store.get_many(keys[:1]) == [["k000", 1]]
        assert await store.delete_many(keys[:128]) == 128


async def test_a_storage_error_fails_the_turn_and_rolls_back_its_earlier_writes(tmp_path):
    async with open_test_runtime(APP, tmp_path) as t:
        store = t.get("Store", "s")
        with pytest.raises(LimitExceeded):
            await store.put_then_put("first", "x" * 2049)
        with pytest.raises(InvalidArgument):
            await store.put_then_put("first", 7)
        assert await store.keys() == []
