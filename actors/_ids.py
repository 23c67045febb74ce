"""Object identity: a class and a name map to one 64-hex-digit id.

The id is SHA-256 of the class name, a NUL and the object name, so every node computes the same id for
the same name without asking anyone (no global uniqueness round trip, unlike Cloudflare's first
``idFromName``). Ids made by ``App.new_unique_id`` are 32 random bytes and have no name.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass

from .errors import InvalidArgument, LimitExceeded
from .limits import MAX_CLASS_NAME_BYTES, MAX_OBJECT_NAME_BYTES

_CLASS_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_HEX = re.compile(r"^[0-9a-f]{64}$")

#: ids of recently named objects: every HTTP call names its object, and checking the class name
#: and hashing cost more than the rest of the routing (ids are immutable, so sharing them is safe)
_BY_NAME: dict[tuple[str, str], ObjectId] = {}
_BY_NAME_MAX = 4096


@dataclass(frozen=True, slots=True)
class ObjectId:
    """Who an object is: ``cls`` (class name), ``name`` (None for unique ids) and ``hex`` (64 hex digits)."""

    cls: str
    name: str | None
    hex: str

    @classmethod
    def from_name(cls, class_name: str, name: str) -> ObjectId:
        """The deterministic id of ``name`` in ``class_name``.

        Raises InvalidArgument for a malformed class name or a non-str name, LimitExceeded
        (``MAX_OBJECT_NAME_BYTES``, ``MAX_CLASS_NAME_BYTES``) for names too long.
        """
        if type(name) is str and type(class_name) is str:
            found = _BY_NAME.get((class_name, name))
            if found is not None:
                return found
        check_class_name(class_name)
        if type(name) is not str:
            raise InvalidArgument(f"object name must be a str, not {type(name).__name__}")
        encoded = name.encode("utf-8", "surrogatepass")
        if len(encoded) > MAX_OBJECT_NAME_BYTES:
            raise LimitExceeded(
                f"object name is {len(encoded)} bytes; MAX_OBJECT_NAME_BYTES is "
                f"{MAX_OBJECT_NAME_BYTES}",
                limit="MAX_OBJECT_NAME_BYTES",
            )
        digest = hashlib.sha256(class_name.encode() + b"\0" + encoded).hexdigest()
        object_id = cls(class_name, name, digest)
        if len(_BY_NAME) >= _BY_NAME_MAX:
            _BY_NAME.clear()  # crude but bounded; a hot name is back after one miss
        _BY_NAME[(class_name, name)] = object_id
        return object_id

    @classmethod
    def unique(cls, class_name: str) -> ObjectId:
        """A fresh random id with no name."""
        check_class_name(class_name)
        return cls(class_name, None, secrets.token_hex(32))

    @classmethod
    def from_hex(cls, class_name: str, hex: str, name: str | None = None) -> ObjectId:
        """Rebuild an id from its parts; the name, when given, must hash to ``hex``."""
        check_class_name(class_name)
        if type(hex) is not str or not _HEX.match(hex):
            raise InvalidArgument("object id must be 64 lowercase hex digits")
        if name is not None and cls.from_name(class_name, name).hex != hex:
            raise InvalidArgument("object id does not belong to that name")
        return cls(class_name, name, hex)

    def __str__(self) -> str:
        label = self.name if self.name is not None else self.hex[:16]
        return f"{self.cls}/{label}"


def check_class_name(class_name: str) -> None:
    """Refuse class names that are not identifiers or are too long (they become paths and URLs)."""
    if type(class_name) is not str or not _CLASS_NAME.match(class_name):
        raise InvalidArgument(f"class name {class_name!r} is not an identifier")
    if len(class_name) > MAX_CLASS_NAME_BYTES:
        raise LimitExceeded(
            f"class name is {len(class_name)} bytes; MAX_CLASS_NAME_BYTES is {MAX_CLASS_NAME_BYTES}",
            limit="MAX_CLASS_NAME_BYTES",
        )
