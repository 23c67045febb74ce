"""The handoff's messages between nodes: what an ``adopt`` and an ``adopt_chunk`` carry, and how the
old owner cuts a batch into messages and a big file into chunks (``handoff.py`` runs the protocol).

Guarantees
- :func:`within` keeps each ``adopt`` message's files under the byte limit it is given (a file over
  it goes in ``adopt_chunk`` messages first, and weighs nothing in the ``adopt`` message).
- :func:`object_ref` accepts a message only if its id matches its class and name.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import trio

from actors import ObjectId
from actors.errors import InvalidArgument

if TYPE_CHECKING:
    from actors import Runtime

__all__ = [
    "ADOPT_CHUNK_OPERATION", "ADOPT_OPERATION", "TRANSFER_TIMEOUT_SECONDS", "catalog_id", "catalog_ids",
    "object_ref", "send_chunks", "within",
]  # fmt: skip

ADOPT_OPERATION: Final = "adopt"
ADOPT_CHUNK_OPERATION: Final = "adopt_chunk"
#: seconds a transfer may take before it is given up (and retried)
TRANSFER_TIMEOUT_SECONDS: Final = 30.0


def within(entries: list[dict[str, Any]], max_bytes: int) -> list[list[dict[str, Any]]]:
    """``entries`` in order, cut into messages whose files' bytes stay under ``max_bytes`` (an entry
    without data, sent in chunks before, weighs nothing here)."""
    messages: list[list[dict[str, Any]]] = [[]]
    size = 0
    for entry in entries:
        weight = len(entry["data"] or b"") + 512  # the entry's other fields, generously
        if messages[-1] and size + weight > max_bytes:
            messages.append([])
            size = 0
        messages[-1].append(entry)
        size += weight
    return messages


async def send_chunks(link: Any, epoch: int, object_id: ObjectId, path: Path, size: int, chunk: int) -> None:
    """Send the file at ``path`` (``size`` bytes) in ``adopt_chunk`` messages of ``chunk`` bytes."""
    async with await trio.open_file(path, "rb") as file:
        offset = 0
        while offset < size:
            data = await file.read(chunk)
            if not data:
                raise InvalidArgument(f"{path} is shorter than its released size {size}")
            kwargs = {"epoch": epoch, "cls": object_id.cls, "name": object_id.name,
                      "id": object_id.hex, "offset": offset, "data": data}  # fmt: skip
            with trio.fail_after(TRANSFER_TIMEOUT_SECONDS):
                await link.call("", "", ADOPT_CHUNK_OPERATION, (), kwargs)
            offset += len(data)


def object_ref(runtime: Runtime, kwargs: dict[str, Any]) -> tuple[int, ObjectId]:
    """The epoch and object a peer's handoff message names (InvalidArgument if malformed)."""
    epoch, cls, name, key = kwargs.get("epoch"), kwargs.get("cls"), kwargs.get("name"), kwargs.get("id")
    if type(epoch) is not int or type(cls) is not str or type(key) is not str or len(key) != 64:
        raise InvalidArgument("a handoff message needs epoch, cls and a 64-digit id")
    runtime.app.class_of(cls)
    if name is not None:
        if type(name) is not str:
            raise InvalidArgument("a handoff message's name must be a string or null")
        object_id = runtime.app.id_from_name(cls, name)
        if object_id.hex != key:
            raise InvalidArgument("a handoff message's id does not match its class and name")
        return epoch, object_id
    return epoch, ObjectId(cls, None, key)


def catalog_id(runtime: Runtime, key: str) -> ObjectId | None:
    """The id of the object the catalog lists under ``key`` (blocks: a catalog read)."""
    entry = runtime.catalog.get(key)
    return None if entry is None else entry.id


def catalog_ids(runtime: Runtime, keys: list[str]) -> dict[str, ObjectId]:
    """The ids of those of ``keys`` the catalog lists (blocks: run it in a thread)."""
    return {key: object_id for key in keys if (object_id := catalog_id(runtime, key)) is not None}
