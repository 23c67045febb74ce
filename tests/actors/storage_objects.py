"""Object classes for the storage tests: each method is one small, named use of ``self.storage``."""

from __future__ import annotations

from typing import Any

import trio

from actors import DurableObject, SqlResult


def fail(message: str) -> None:
    """Raise ValueError(message): user code giving up part-way through a block."""
    raise ValueError(message)


def plain(result: SqlResult) -> dict[str, Any]:
    """A SqlResult as a plain value a method can return."""
    return {
        "rows": [list(row) for row in result.rows],
        "columns": list(result.columns),
        "rows_written": result.rows_written,
    }


class Store(DurableObject):
    """Hands the key-value API to the test, one storage call per method."""

    async def get(self, key: Any, default: Any = None) -> Any:
        return self.storage.get(key, default)

    async def get_many(self, keys: Any) -> list[list[Any]]:
        return [[k, v] for k, v in self.storage.get_many(keys).items()]

    async def put(self, key: Any, value: Any) -> None:
        self.storage.put(key, value)

    async def put_many(self, entries: Any) -> None:
        self.storage.put_many(entries)

    async def delete(self, key: Any) -> bool:
        return self.storage.delete(key)

    async def delete_many(self, keys: Any) -> int:
        return self.storage.delete_many(keys)

    async def list(self, **options: Any) -> list[list[Any]]:
        """The pairs of ``storage.list``, in the order it returned them."""
        return [[k, v] for k, v in self.storage.list(**options).items()]

    async def keys(self, **options: Any) -> list[str]:
        return list(self.storage.list(**options))

    async def put_then_fail(self, key: str, value: Any) -> None:
        self.storage.put(key, value)
        raise ValueError("refused after writing")

    async def put_then_put(self, first: str, second: Any) -> None:
        """Two puts in one turn; the second may raise a storage error."""
        self.storage.put(first, 1)
        self.storage.put(second, 1)

    async def put_bytes(self, key: str, size: int) -> None:
        self.storage.put(key, b"x" * size)

    async def stored_size(self, key: str) -> int:
        return len(self.storage.get(key))

    async def put_set(self, key: str) -> None:
        self.storage.put(key, {"tags": [1, {2, 3}]})

    async def put_object(self, key: str) -> None:
        self.storage.put(key, [1, object()])

    async def put_many_with_a_set(self) -> str:
        """put_many whose last value is not serializable; the error is caught and the turn commits."""
        try:
            self.storage.put_many({"good": 1, "also good": 2, "bad": {3}})
        except Exception as exc:
            return f"{type(exc).__name__}: {exc}"
        return "stored"

    async def put_many_under(self, key: Any) -> None:
        """put_many with one pair under ``key`` (which may be no str: the call itself cannot carry that)."""
        self.storage.put_many({key: 1})

    async def put_many_from_a_list(self) -> None:
        self.storage.put_many([("k", 1)])  # type: ignore[arg-type]

    async def get_many_of_a_str(self) -> None:
        self.storage.get_many("abc")

    async def put_surrogate_key(self) -> None:
        self.storage.put("bad \ud800 key", 1)

    async def put_surrogate_value(self) -> None:
        self.storage.put("k", "bad \udfff value")

    async def put_then_mutate(self) -> list[Any]:
        value = [1, {"a": 2}]
        self.storage.put("k", value)
        value.append(3)
        value[1]["a"] = 99
        return self.storage.get("k")  # type: ignore[no-any-return]

    async def sql(self, query: Any, *params: Any) -> dict[str, Any]:
        return plain(self.storage.sql(query, *params))

    async def sql_steps(self, queries: list[str]) -> dict[str, Any]:
        """Run each query in order; the result of the last one."""
        result = None
        for query in queries:
            result = self.storage.sql(query)
        assert result is not None
        return plain(result)

    async def get_then_sql(self, key: str, query: str, *params: Any) -> dict[str, Any]:
        """Run the runtime's own statement for ``get`` first, then user SQL (maybe the same text)."""
        self.storage.get(key)
        self.storage.put(key, "written by put")
        return plain(self.storage.sql(query, *params))

    async def set_alarm(self, at: float) -> None:
        self.storage.set_alarm(at)

    async def get_alarm(self) -> float | None:
        return self.storage.get_alarm()

    async def delete_all(self) -> None:
        self.storage.delete_all()

    async def delete_all_then_fail(self) -> None:
        self.storage.delete_all()
        raise ValueError("refused after delete_all")

    async def delete_all_then_put(self, key: str, value: Any) -> None:
        self.storage.delete_all()
        self.storage.put(key, value)


class Other(DurableObject):
    """A second class, for listing by class."""

    async def put(self, key: str, value: Any) -> None:
        self.storage.put(key, value)


class Ledger(DurableObject):
    """Entries reference accounts through a deferred foreign key, checked only at COMMIT."""

    activations = 0

    async def on_start(self) -> None:
        Ledger.activations += 1
        self.storage.sql("CREATE TABLE IF NOT EXISTS account (id INTEGER PRIMARY KEY)")
        self.storage.sql(
            "CREATE TABLE IF NOT EXISTS entry (id INTEGER PRIMARY KEY, account INTEGER NOT NULL "
            "REFERENCES account (id) DEFERRABLE INITIALLY DEFERRED)"
        )

    async def open_account(self, account: int) -> None:
        self.storage.sql("INSERT INTO account (id) VALUES (?)", account)

    async def post(self, account: int, key: str) -> None:
        """Insert an entry (violating the foreign key if ``account`` does not exist) and a key."""
        self.storage.sql("INSERT INTO entry (account) VALUES (?)", account)
        self.storage.put(key, account)

    async def state(self) -> dict[str, Any]:
        return {
            "accounts": [r[0] for r in self.storage.sql("SELECT id FROM account ORDER BY id")],
            "entries": [r[0] for r in self.storage.sql("SELECT account FROM entry ORDER BY id")],
            "keys": list(self.storage.list()),
        }


class Parts(DurableObject):
    """Uses ``storage.transaction()`` blocks inside a turn."""

    async def setup(self) -> None:
        self.storage.sql("CREATE TABLE IF NOT EXISTS log (what TEXT)")

    async def block_fails_inside_turn(self) -> str:
        self.storage.put("before", 1)
        try:
            with self.storage.transaction():
                self.storage.put("inside", 1)
                self.storage.delete("before")
                self.storage.sql("INSERT INTO log VALUES ('inside')")
                fail("abandon the block")
        except ValueError as exc:
            caught = str(exc)
        self.storage.put("after", 1)
        self.storage.sql("INSERT INTO log VALUES ('after')")
        return caught

    async def block_fails_and_turn_fails(self) -> None:
        self.storage.put("before", 1)
        with self.storage.transaction():
            self.storage.put("inside", 1)
            raise ValueError("abandon the block and the turn")

    async def block_succeeds(self) -> None:
        with self.storage.transaction():
            self.storage.put("inside", 1)
            self.storage.sql("INSERT INTO log VALUES ('inside')")

    async def inner_fails(self) -> None:
        with self.storage.transaction():
            self.storage.put("outer", 1)
            try:
                with self.storage.transaction():
                    self.storage.put("inner", 1)
                    self.storage.put("outer", "overwritten by inner")
                    fail("abandon the inner block")
            except ValueError:
                pass
            self.storage.put("outer after inner", 1)

    async def outer_fails_after_inner_succeeded(self) -> None:
        self.storage.put("turn", 1)
        try:
            with self.storage.transaction():
                with self.storage.transaction():
                    self.storage.put("inner", 1)
                self.storage.put("outer", 1)
                fail("abandon the outer block")
        except ValueError:
            pass

    async def get(self, key: str) -> Any:
        return self.storage.get(key)

    async def state(self) -> dict[str, Any]:
        return {
            "keys": list(self.storage.list()),
            "log": [r[0] for r in self.storage.sql("SELECT what FROM log ORDER BY rowid")],
        }


class Keeper(DurableObject):
    """Lets its instance and storage escape the turn, the way buggy user code might."""

    kept: list[Keeper] = []
    #: where background tasks run (the test's nursery)
    nursery: trio.Nursery | None = None
    #: set by the test to let the background task write
    go: trio.Event | None = None
    #: set by the test to end ``hold``
    release: trio.Event | None = None
    outcomes: list[str] = []

    async def keep(self) -> None:
        self.storage.put("kept", 1)
        Keeper.kept.append(self)

    async def start_background_write(self) -> None:
        """Start a task that writes once the test sets ``go`` (after this turn has ended)."""
        assert Keeper.nursery is not None
        Keeper.nursery.start_soon(self._write_later)

    async def _write_later(self) -> None:
        assert Keeper.go is not None
        await Keeper.go.wait()
        try:
            self.storage.put("from background", 1)
        except RuntimeError as exc:
            Keeper.outcomes.append(f"RuntimeError: {exc}")
        else:
            Keeper.outcomes.append("written")

    async def hold(self) -> None:
        """A turn that stays open until the test sets ``release``."""
        assert Keeper.release is not None
        await Keeper.release.wait()

    async def get(self, key: str) -> Any:
        return self.storage.get(key)
