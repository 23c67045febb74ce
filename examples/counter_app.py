"""An example App: named tallies of many counters each, served beside the built-in rooms.

    PYTHONPATH=examples actors serve --app counter_app:app
    curl -X POST localhost:8080/v1/objects/Tally/team-a/add -d '{"args": ["bugs", 3]}'
    # {"result":3}
    curl -X POST localhost:8080/v1/objects/Tally/team-a/totals
    # {"result":{"bugs":3}}

Each ``Tally`` is one object (one SQLite file) holding any number of named counts. Every method runs
as one turn, so ``add`` never loses an update under concurrency, and its reply leaves only after its
write is durable. ``reset`` shows that a turn is atomic: it deletes every count, or none if it
raises.
"""

from __future__ import annotations

from actors import App, DurableObject
from actors.errors import InvalidArgument

#: counts live under this key prefix, so ``totals`` can list them
_PREFIX = "count:"


class Tally(DurableObject):
    """Named counts, e.g. one Tally per team and one count per label."""

    async def add(self, label: str, by: int = 1) -> int:
        """Add ``by`` to the count of ``label`` and return the new count.

        Raises InvalidArgument if ``by`` is not an int.
        """
        if type(by) is not int:
            raise InvalidArgument(f"by must be an int, not {type(by).__name__}")
        count: int = self.storage.get(_PREFIX + label, 0) + by
        self.storage.put(_PREFIX + label, count)
        return count

    async def get(self, label: str) -> int:
        """The count of ``label`` (0 if never added to)."""
        count: int = self.storage.get(_PREFIX + label, 0)
        return count

    async def totals(self) -> dict[str, int]:
        """Every count, by label, in label order."""
        stored = self.storage.list(prefix=_PREFIX)
        return {key.removeprefix(_PREFIX): value for key, value in stored.items()}

    async def reset(self) -> int:
        """Delete every count; returns how many labels there were."""
        labels = list(self.storage.list(prefix=_PREFIX))
        for start in range(0, len(labels), 128):  # storage takes at most MAX_KEYS_PER_CALL keys
            self.storage.delete_many(labels[start : start + 128])
        return len(labels)


app = App([Tally])
