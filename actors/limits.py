"""Every limit the runtime enforces, by name.

Exceeding one raises :class:`actors.errors.LimitExceeded` whose ``limit`` attribute is the constant's name
here, so a caller can tell which limit it hit. Values follow Cloudflare Durable Objects where they have
one (``ANCHORS.md`` §3) and say so; the rest are ours and say why.
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "MAX_ATTACHMENT_BYTES",
    "MAX_CLASS_NAME_BYTES",
    "MAX_KEYS_PER_CALL",
    "MAX_KEY_BYTES",
    "MAX_METHOD_NAME_BYTES",
    "MAX_OBJECT_NAME_BYTES",
    "MAX_SOCKETS_PER_OBJECT",
    "MAX_TAGS_PER_SOCKET",
    "MAX_TAG_BYTES",
    "MAX_VALUE_BYTES",
    "MAX_VALUE_DEPTH",
]

#: A storage key, UTF-8 encoded (Cloudflare's KV key limit).
MAX_KEY_BYTES: Final = 2 * 1024

#: A stored value, CBOR encoded (Cloudflare's SQLite-backed key+value limit).
MAX_VALUE_BYTES: Final = 2 * 1024 * 1024

#: Keys in one ``get_many`` / ``put_many`` / ``delete_many`` (Cloudflare's multi-key limit).
MAX_KEYS_PER_CALL: Final = 128

#: An object's name, UTF-8 encoded (Cloudflare keeps ``ctx.id.name`` up to this size).
MAX_OBJECT_NAME_BYTES: Final = 1024

#: A class name; it is part of URLs and of the data folder's paths.
MAX_CLASS_NAME_BYTES: Final = 128

#: A method name; it is part of URLs.
MAX_METHOD_NAME_BYTES: Final = 128

#: Nesting of lists and dicts in an argument, result or stored value (keeps encoders off deep recursion).
MAX_VALUE_DEPTH: Final = 64

#: Open WebSockets per object (Cloudflare's hibernatable WebSocket limit).
MAX_SOCKETS_PER_OBJECT: Final = 32_768

#: A socket's attachment, CBOR encoded (Cloudflare's ``serializeAttachment`` limit).
MAX_ATTACHMENT_BYTES: Final = 16 * 1024

#: Tags per socket, and bytes per tag (Cloudflare's limits).
MAX_TAGS_PER_SOCKET: Final = 10
MAX_TAG_BYTES: Final = 256
