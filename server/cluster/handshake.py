"""The node link's handshake: how two nodes prove they hold the cluster secret (sans I/O).

A node dials a peer's ``GET /v1/peer`` WebSocket. Before either side runs anything:

    acceptor -> dialer   {"t": "challenge", "node": acceptor, "nonce": 32 random bytes}
    dialer -> acceptor   {"t": "auth", "node": dialer, "epoch": e, "digest": d, "nonce": 32 bytes,
                          "mac": HMAC-SHA256(secret, "dial" | acceptor nonce | dialer nonce | ids | d)}
    acceptor -> dialer   {"t": "accept", "mac": HMAC-SHA256(secret, "accept" | both nonces | ids | d)}

Guarantees
- Mutual: each side proves the secret over the other's fresh nonce, so a recorded handshake cannot be
  replayed, and a dialer never sends a call to an impostor (it checks the accept's mac first).
- A dialer whose proof is wrong, whose node id is not a member, or whose membership (epoch and
  digest) differs is refused: the acceptor logs the refusal and closes with ``AUTH_FAILED`` or
  ``MEMBERSHIP_DIFFERS`` before reading any call, so nothing it sent runs.
- Macs are compared in constant time (``hmac.compare_digest``).

After the accept, the link carries the SDK's frames (``actors/wire.py``): Calls from the dialer,
Results and Errors from the acceptor.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import cbor2

if TYPE_CHECKING:
    from .membership import Membership

__all__ = [
    "AUTH_FAILED",
    "MEMBERSHIP_DIFFERS",
    "Auth",
    "HandshakeRefused",
    "accept_mac",
    "accept_message",
    "auth_message",
    "challenge_message",
    "dial_mac",
    "new_nonce",
    "parse",
    "parse_auth",
    "verify_auth",
]

#: close codes of a refused link (4000-4999 are ours; 401/409 as in HTTP)
AUTH_FAILED: Final = 4401
MEMBERSHIP_DIFFERS: Final = 4409

_NONCE_BYTES: Final = 32
_DOMAIN: Final = b"actors-peer-link-1\0"


class HandshakeRefused(Exception):
    """The handshake failed; ``code`` is the close code, the message says why (for the log)."""

    def __init__(self, message: str, code: int = AUTH_FAILED) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True, slots=True)
class Auth:
    """The dialer's proof, as the acceptor reads it."""

    node: str
    epoch: int
    digest: str
    nonce: bytes
    mac: bytes


def new_nonce() -> bytes:
    return secrets.token_bytes(_NONCE_BYTES)


def _mac(secret: bytes, role: bytes, first: bytes, second: bytes, ids: tuple[str, str], digest: str) -> bytes:
    message = b"\0".join([_DOMAIN + role, first, second, ids[0].encode(), ids[1].encode(), digest.encode()])
    return hmac.new(secret, message, hashlib.sha256).digest()


def dial_mac(secret: bytes, challenge: bytes, nonce: bytes, dialer: str, acceptor: str, digest: str) -> bytes:
    """The dialer's proof over the acceptor's ``challenge`` nonce and its own ``nonce``."""
    return _mac(secret, b"dial", challenge, nonce, (dialer, acceptor), digest)


def accept_mac(
    secret: bytes, challenge: bytes, nonce: bytes, dialer: str, acceptor: str, digest: str
) -> bytes:
    """The acceptor's proof (the same inputs, another role: it cannot be the dialer's mac replayed)."""
    return _mac(secret, b"accept", challenge, nonce, (dialer, acceptor), digest)


def challenge_message(node: str, nonce: bytes) -> bytes:
    return cbor2.dumps({"t": "challenge", "node": node, "nonce": nonce})


def auth_message(auth: Auth) -> bytes:
    return cbor2.dumps(
        {"t": "auth", "node": auth.node, "epoch": auth.epoch, "digest": auth.digest,
         "nonce": auth.nonce, "mac": auth.mac}
    )  # fmt: skip


def accept_message(mac: bytes) -> bytes:
    return cbor2.dumps({"t": "accept", "mac": mac})


def parse(data: Any, kind: str) -> dict[str, Any]:
    """The handshake message ``kind`` in ``data`` (bytes of CBOR), or HandshakeRefused."""
    if not isinstance(data, bytes) or len(data) > 4096:
        raise HandshakeRefused(f"expected a short binary {kind} message")
    try:
        message = cbor2.loads(data)
    except Exception:
        raise HandshakeRefused(f"the {kind} message is not CBOR") from None
    if type(message) is not dict or message.get("t") != kind:
        raise HandshakeRefused(f"expected a {kind} message")
    for key, types in _FIELDS[kind].items():
        if type(message.get(key)) not in types:
            raise HandshakeRefused(f"the {kind} message has no valid {key!r}")
    for key in ("nonce", "mac"):
        if key in message and len(message[key]) != _NONCE_BYTES:
            raise HandshakeRefused(f"the {kind} message's {key} is not {_NONCE_BYTES} bytes")
    return message


def parse_auth(data: Any) -> Auth:
    m = parse(data, "auth")
    return Auth(m["node"], m["epoch"], m["digest"], m["nonce"], m["mac"])


def verify_auth(membership: Membership, challenge: bytes, data: Any) -> Auth:
    """The dialer's auth message ``data``, checked against this node's ``membership`` and the
    ``challenge`` nonce it sent; HandshakeRefused (with its close code) says what is wrong."""
    auth = parse_auth(data)
    me = membership.self_id
    if auth.node == me or membership.member(auth.node) is None:
        raise HandshakeRefused(f"{auth.node!r} is not a peer of {me}")
    # The proof covers the digest the dialer claims, so a member with another membership is told
    # so (MEMBERSHIP_DIFFERS) rather than refused as an impostor.
    expected = dial_mac(membership.secret, challenge, auth.nonce, auth.node, me, auth.digest)
    if not hmac.compare_digest(auth.mac, expected):
        raise HandshakeRefused(f"{auth.node!r} could not prove the cluster secret")
    epoch, digest = membership.link_epoch, membership.link_digest
    # File memberships at different epochs link: the newer one is signed (``applied.py``) and
    # travels on the link. Equal epochs must agree; etcd's (epoch 0) must match exactly.
    across_epochs = auth.epoch != epoch and auth.epoch > 0 and epoch > 0
    if not across_epochs and (auth.epoch != epoch or auth.digest != digest):
        raise HandshakeRefused(
            f"{auth.node!r} has another membership (epoch {auth.epoch}, digest {auth.digest[:12]}) "
            f"than {me} (epoch {epoch}, digest {digest[:12]})",
            MEMBERSHIP_DIFFERS,
        )
    return auth


_FIELDS: Final[dict[str, dict[str, tuple[type, ...]]]] = {
    "challenge": {"node": (str,), "nonce": (bytes,)},
    "auth": {"node": (str,), "epoch": (int,), "digest": (str,), "nonce": (bytes,), "mac": (bytes,)},
    "accept": {"mac": (bytes,)},
}
