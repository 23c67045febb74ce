"""Misusing ``self.storage``: values and keys of the wrong kind, and storage used outside a turn."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from actors import App
from actors.errors import InvalidArgument
from actors.testing import open_test_runtime

from .storage_objects import Keeper, Store

APP = App([Store, Keeper])


#### Misuse: wrong types


@pytest.mark.parametrize(
    ("key", "kind"), [(1, "int"), (b"k", "bytes"), (None, "NoneType"), (1.5, "float")]
)
async def test_a_key_that_is_not_a_str_is_refused_naming_its_type(tmp_path, key, kind):
    message = rf"^storage key must be a str, not {kind}$"
    async with open_test_runtime(APP, tmp_path) as t:
        store = t.get("Store", "s")
        for method, args in (
            ("get", (key,)),
            ("put", (key, 1)),
            ("delete", (key,)),
            ("get_many", (["ok", key],)),
            ("delete_many", ([key],)),
            ("put_many_under", (key,)),
        ):
            with pytest.raises(InvalidArgument, match=message):
                await store.call(method, *args)
        assert await store.keys() == []


async def test_a_single_str_where_keys_are_expected_is_refused(tmp_path):
    async with open_test_runtime(APP, tmp_path) as t:
        store = t.get("Store", "s")
        with pytest.raises(InvalidArgument, match=r"^expected an iterable of keys, not a single key$"):
            await store.get_many_of_a_str()
        with pytest.raises(InvalidArgument, match=r"^put_many takes a mapping, not list$"):
            await store.put_many_from_a_list()


async def test_an_unserializable_value_is_refused_naming_the_key_and_path(tmp_path):
    async with open_test_runtime(APP, tmp_path) as t:
        store = t.get("Store", "s")
        with pytest.raises(
            InvalidArgument, match=r"^value of 'tags'\['tags'\]\[1\]: set is not serializable$"
        ):
            await store.put_set("tags")
        with pytest.raises(InvalidArgument, match=r"^value of 'obj'\[1\]: object is not serializable$"):
            await store.put_object("obj")
        assert await store.keys() == []


async def test_a_key_that_is_not_valid_unicode_is_refused_with_invalid_argument(tmp_path):
    async with open_test_runtime(APP, tmp_path) as t:
        with pytest.raises(InvalidArgument):
            await t.get("Store", "s").put_surrogate_key()


async def test_a_value_holding_invalid_unicode_is_refused_with_invalid_argument(tmp_path):
    async with open_test_runtime(APP, tmp_path) as t:
        with pytest.raises(InvalidArgument):
            await t.get("Store", "s").put_surrogate_value()


#### Storage outside a turn


async def test_storage_of_an_instance_kept_after_its_turn_raises_runtime_error(tmp_path):
    Keeper.kept = []
    async with open_test_runtime(APP, tmp_path) as t:
        await t.get("Keeper", "k").keep()
        (instance,) = Keeper.kept
        message = r"^storage can only be used inside a turn of its object$"
        with pytest.raises(RuntimeError, match=message):
            instance.storage.get("kept")
        with pytest.raises(RuntimeError, match=message):
            instance.storage.put("outside", 1)
        with pytest.raises(RuntimeError, match=message):
            instance.storage.sql("SELECT 1")
        assert await t.get("Keeper", "k").get("outside") is None


async def test_a_background_task_writing_after_the_turn_ended_gets_runtime_error(tmp_path):
    Keeper.outcomes, Keeper.go = [], trio.Event()
    async with open_test_runtime(APP, tmp_path) as t, trio.open_nursery() as nursery:
        Keeper.nursery = nursery
        keeper = t.get("Keeper", "k")
        await keeper.start_background_write()
        await trio.testing.wait_all_tasks_blocked()
        Keeper.go.set()
        await trio.testing.wait_all_tasks_blocked()
        assert Keeper.outcomes == ["RuntimeError: storage can only be used inside a turn of its object"]
        assert await keeper.get("from background") is None


async def test_a_background_task_writing_during_another_turn_gets_runtime_error(tmp_path):
    Keeper.outcomes, Keeper.go, Keeper.release = [], trio.Event(), trio.Event()
    async with open_test_runtime(APP, tmp_path) as t, trio.open_nursery() as nursery:
        Keeper.nursery = nursery
        keeper = t.get("Keeper", "k")
        await keeper.start_background_write()
        nursery.start_soon(keeper.hold)
        await trio.testing.wait_all_tasks_blocked()  # hold's turn is open, waiting on release
        Keeper.go.set()
        await trio.testing.wait_all_tasks_blocked()
        Keeper.release.set()
        await trio.testing.wait_all_tasks_blocked()
        assert await keeper.get("from background") is None
        assert Keeper.outcomes == ["RuntimeError: storage can only be used inside a turn of its object"]
