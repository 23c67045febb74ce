"""Admin operations across the cluster: listing every node's objects, deleting on the owner.

Guarantees
- ``GET /v1/objects`` from any node lists the whole cluster: each node returns its own page (up to
  ``limit + 1`` entries after the cursor, from its catalog), and the pages are merged in the
  listing's order (class, name, id). Every object on the merged page is among the first ``limit``
  of its node, so the merged page is exactly the cluster's next ``limit`` objects, and the cursor
  works across nodes. Each entry names its ``node``.
- A node that cannot answer is named in ``unavailable`` (with the reason); its objects are missing
  from that page and the answer says so rather than skipping them silently.
- A delete runs on the object's owner (forwarded over the node link like a call).

Peers ask each other through the link as Calls of class ``""`` (never a user class): the method
names the operation (``list_objects``, ``delete_object``, ``stats``) and its keyword arguments carry the rest.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import trio

from actors.errors import ActorError, InvalidArgument

from .file_member import MEMBERSHIP_OPERATION, SETTLED_OPERATION
from .handoff_wire import ADOPT_CHUNK_OPERATION, ADOPT_OPERATION
from .settle import WANT_OPERATION

if TYPE_CHECKING:
    from ..http import HandlerContext as Node

__all__ = ["cluster_nodes", "delete_object", "list_cluster", "list_local", "local_stats", "node_operation"]

#: seconds a node waits for a peer's page before naming it unavailable
PEER_LIST_TIMEOUT_SECONDS = 10.0

Cursor = tuple[str, str, str]


def list_local(
    node: Node, cls: str | None, prefix: str | None, limit: int, after: Cursor | None
) -> list[dict[str, Any]]:
    """This node's objects with storage, as listing entries (from the catalog; no object wakes)."""
    me = node.node_name
    return [
        {
            "class": e.id.cls,
            "name": e.id.name,
            "id": e.id.hex,
            "created": e.created,
            "alarm": e.alarm,
            "node": me,
        }
        for e in node.runtime.list_objects(cls=cls, prefix=prefix, limit=limit, after=after)
    ]


async def list_cluster(
    node: Node, cls: str | None, prefix: str | None, limit: int, after: Cursor | None
) -> tuple[list[dict[str, Any]], bool, list[dict[str, str]]]:
    """The cluster's next ``limit`` objects after ``after``, whether more follow, and the nodes
    that could not answer (``[{"node", "error"}]``)."""
    router = node.router
    entries = list_local(node, cls, prefix, limit + 1, after)
    unavailable: list[dict[str, str]] = []
    if router is not None:
        kwargs = {"cls": cls, "prefix": prefix, "limit": limit + 1, "after": list(after) if after else None}

        async def fetch(peer: str) -> None:
            link = router.links[peer]
            try:
                with trio.fail_after(PEER_LIST_TIMEOUT_SECONDS):
                    page = await link.call("", "", "list_objects", (), kwargs)
                entries.extend(page)
            except (ActorError, trio.TooSlowError) as exc:
                message = exc.message if isinstance(exc, ActorError) else "no answer in time"
                unavailable.append({"node": peer, "error": message})

        async with trio.open_nursery() as nursery:
            for peer in router.links:
                nursery.start_soon(fetch, peer)
    entries.sort(key=lambda e: (e["class"], e["name"] or "", e["id"]))
    unavailable.sort(key=lambda u: u["node"])
    return entries[:limit], len(entries) > limit, unavailable


def local_stats(node: Node) -> dict[str, Any]:
    """This node's share: objects with storage (the catalog) and objects in memory; in a cluster
    also its epoch, the objects it still has to hand to other nodes, and whether it has handed off
    everything for the current epoch (``settled``)."""
    stats: dict[str, Any] = {
        "objects": node.runtime.count_objects(),
        "live_objects": node.runtime.statistics().live_objects,
    }
    mover, router = node.mover, node.router
    if mover is not None and router is not None:
        stats["epoch"] = router.epoch
        stats["to_move"] = mover.to_move
        stats["settled"] = mover.done
    return stats


async def cluster_nodes(node: Node) -> list[dict[str, Any]]:
    """Every member: id, URL, whether this node's link to it is up, and its objects (or ``error``)."""
    router = node.router
    me = {"node": node.node_name, "url": node.url, "up": True, **local_stats(node)}
    if router is None:
        return [me]
    rows = {node.node_name: me}

    async def ask(peer: str) -> None:
        link = router.links.get(peer)
        if link is None:
            return
        row: dict[str, Any] = {"node": peer, "url": link.peer.url, "up": link.up}
        try:
            with trio.fail_after(PEER_LIST_TIMEOUT_SECONDS):
                row.update(await link.call("", "", "stats", (), {}))
        except (ActorError, trio.TooSlowError) as exc:
            row["error"] = exc.message if isinstance(exc, ActorError) else "no answer in time"
        rows[peer] = row

    async with trio.open_nursery() as nursery:
        for peer in router.links:
            nursery.start_soon(ask, peer)
    listed = []
    for member in router.membership.members:
        row = rows.get(member.id, {"node": member.id, "url": member.url, "up": False})
        if member.id in router.membership.leaving:
            row["state"] = "leaving"
        listed.append(row)
    return listed


async def delete_object(node: Node, cls: str, name: str) -> None:
    """Delete the object's storage on whichever node owns it."""
    object_id = node.runtime.app.id_from_name(cls, name)  # UnknownClass before anything is sent
    link = None if node.router is None else node.router.link_for(object_id)
    if link is None:
        await node.runtime.delete_object(object_id)
    else:
        await link.call("", "", "delete_object", (), {"cls": cls, "name": name})


async def node_operation(node: Node, operation: str, kwargs: dict[str, Any]) -> Any:
    """Run a peer's request for this node's part of an operation (only its own objects)."""
    if operation == "list_objects":
        after = kwargs.get("after")
        cursor: Cursor | None = None
        if isinstance(after, list) and len(after) == 3 and all(type(part) is str for part in after):
            cursor = (after[0], after[1], after[2])
        limit = kwargs.get("limit")
        if type(limit) is not int or not 0 < limit <= 10_000:
            raise InvalidArgument("list_objects: limit must be an integer in 1..10000")
        cls, prefix = kwargs.get("cls"), kwargs.get("prefix")
        if not all(value is None or type(value) is str for value in (cls, prefix)):
            raise InvalidArgument("list_objects: cls and prefix must be strings or null")
        return list_local(node, cls, prefix, limit, cursor)
    if operation == "stats":
        return local_stats(node)
    if operation == "delete_object":
        object_id = node.runtime.app.id_from_name(str(kwargs.get("cls")), str(kwargs.get("name")))
        if node.router is not None and node.router.link_for(object_id) is not None:
            raise node.router.not_owner(object_id, "a peer")
        await node.runtime.delete_object(object_id)
        return True
    member = node.file_member
    if member is not None:  # a file membership that apply changes (``file_member.py``)
        if operation == MEMBERSHIP_OPERATION:
            return member.document()
        if operation == SETTLED_OPERATION:
            return await member.heard_settled(kwargs)
    mover, receiver = node.mover, node.receiver
    if mover is not None and receiver is not None:  # handing objects over (``handoff.py``)
        if operation == WANT_OPERATION:
            return await mover.want(kwargs)
        if operation == ADOPT_OPERATION:
            return await receiver.adopt(kwargs)
        if operation == ADOPT_CHUNK_OPERATION:
            await receiver.chunk(kwargs)
            return True
    raise InvalidArgument(f"no node operation {operation!r}")
