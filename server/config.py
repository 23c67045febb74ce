"""The node's configuration: one frozen dataclass, every field named, documented and defaulted.

Guarantees
- A ``Config`` that exists is valid: ``__post_init__`` refuses out-of-range values with ValueError
  naming the field, so a bad flag or environment variable stops the node before it binds a socket.
- The runtime limits (``idle_timeout``, ``max_live_objects``, ``max_open_files``, ``max_queue_depth``,
  ``call_timeout``, ``durability``) default to :class:`actors.Settings`' own defaults; this file never
  restates them.

``server/cli.py`` maps one flag and one ``ACTORS_*`` environment variable onto each field.
"""

from __future__ import annotations

import ipaddress
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from actors import Durability, Settings

__all__ = ["LOG_FORMATS", "LOG_LEVELS", "MAX_NODE_NAME_BYTES", "Config", "normalize_origin", "parse_origins"]

_RUNTIME_DEFAULTS = Settings()

#: node processes one ``actors serve --workers`` may run
MAX_WORKERS = 64

#: bytes of UTF-8 a node name may have (the label limit of the wire protocol's Welcome frame)
MAX_NODE_NAME_BYTES = 256

#: TCP_USER_TIMEOUT is an unsigned int of milliseconds (Linux takes up to INT_MAX)
_MAX_SEND_TIMEOUT = (2**31 - 1) / 1000

LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("text", "json")


@dataclass(frozen=True, slots=True)
class Config:
    """How one node runs (see the field comments for what each one bounds)."""

    #: interface to bind; loopback by default so a fresh node is never exposed by accident
    host: str = "127.0.0.1"
    #: TCP port; 0 binds a free port (the bound URL is reported by ``serve`` and printed by the CLI)
    port: int = 8080
    #: folder holding the catalog and one SQLite file per object
    data_dir: Path = Path("data")
    #: the user's App as ``"module:attr"`` (an App, a DurableObject subclass or a list of them); the
    #: built-in rooms (Counter, RateLimiter) are always served beside it
    app: str | None = None
    #: when a commit counts as done, and so when a reply may leave
    durability: Durability = _RUNTIME_DEFAULTS.durability
    #: seconds an object with no work stays in memory
    idle_timeout: float = _RUNTIME_DEFAULTS.idle_timeout
    #: objects in memory at once
    max_live_objects: int = _RUNTIME_DEFAULTS.max_live_objects
    #: live objects that keep their SQLite file open (~80 KiB each); past it idle ones close it
    max_open_files: int = _RUNTIME_DEFAULTS.max_open_files
    #: calls waiting for one object; past it a call gets 503 Overloaded at once
    max_queue_depth: int = _RUNTIME_DEFAULTS.max_queue_depth
    #: default deadline of a call, queueing included; past it 504 CallTimeout
    call_timeout: float = _RUNTIME_DEFAULTS.call_timeout
    #: seconds a batch of turns may wait for more calls before its commit while the node is busy
    #: (``actors.Settings.commit_hold``; 0: never). On by default here, unlike in-process: the event
    #: loop and the fsync threads share the node's core, so fewer, bigger batches serve more requests
    commit_hold: float = 0.02
    #: make each durability round durable with one syncfs(2) of the data folder's volume instead of
    #: an fsync per object (``actors.Settings.sync_volume``): only for a volume of the node's own
    sync_volume: bool = _RUNTIME_DEFAULTS.sync_volume
    #: largest request body; larger ones get 413, from Content-Length or while streaming
    max_body_bytes: int = 1024 * 1024
    #: tokens of each /ratelimit/{key} bucket (the burst it allows)
    ratelimit_limit: int = 100
    #: seconds in which a /ratelimit/{key} bucket refills ``ratelimit_limit`` tokens
    ratelimit_period: float = 60.0
    #: when set, every route but /healthz and /readyz needs ``Authorization: Bearer <token>``
    #: (WebSocket handshakes may carry it as ``?token=<token>`` instead: browsers cannot set headers)
    auth_token: str | None = None
    #: when set, the admin routes (``server/http.py``: listing, export and delete of objects,
    #: ``/v1/cluster/nodes``) need ``Authorization: Bearer <admin token>`` and ``auth_token`` no
    #: longer opens them; the admin token opens every other route too
    admin_token: str | None = None
    #: browser origins allowed to open WebSockets, each ``scheme://host[:port]`` or ``*`` (any). A
    #: handshake without ``Origin`` (not a browser) or from the node's own origin (``Host``) is always
    #: allowed. Empty (the default): any origin while ``host`` is loopback, else only those two.
    allowed_origins: tuple[str, ...] = ()
    #: largest WebSocket message, reassembled and decompressed; a larger one closes the socket with
    #: 1009 (Cloudflare allows 32 MiB; ours is smaller because a message is buffered whole)
    max_frame_bytes: int = 1024 * 1024
    #: bytes (characters, for text frames) of frames that may wait for one WebSocket client; past it
    #: the client reads too slowly and is closed with 1013 (and past ``MAX_SEND_QUEUE_FRAMES`` frames)
    max_send_queue_bytes: int = 8 * 1024 * 1024
    #: WebSockets one node holds at once (object sockets, relayed ones, SDK connections; node links
    #: are not counted); past it a handshake is refused with 503 Overloaded and ``Retry-After``
    max_websockets: int = 100_000
    #: client connections one node holds at once, of every kind (HTTP keep-alive, WebSockets, node
    #: links, TLS or not); past it a new connection gets 503 Overloaded and is closed
    #: (``server/listener.py``). Lowered at start to the open-file limit less ``FD_RESERVE``
    max_connections: int = 10_000
    #: seconds a connection may go without a whole request's headers, idle between requests
    #: (keep-alive) or sending them (a slowloris client); then it is closed (hypercorn's own timer)
    keep_alive_timeout: float = 5.0
    #: largest request line and headers of an HTTP/1.1 request; past it 431 and the connection closes
    max_header_bytes: int = 16 * 1024
    #: seconds data the node sent may stay unacknowledged, or unsent because the client's window is
    #: closed (a client that stopped reading), before the connection is aborted (Linux's
    #: TCP_USER_TIMEOUT; not enforced on other systems)
    send_timeout: float = 60.0
    #: one of LOG_LEVELS
    log_level: str = "info"
    #: one of LOG_FORMATS: ``text`` (key=value) or ``json`` (one JSON object per line)
    log_format: str = "text"
    #: error replies of user code carry its traceback; never enable on a public node
    debug: bool = False
    #: log every activation's opening and closing of an object's file (``object_opened``,
    #: ``object_closed``, with the node, the epoch and the wall-clock time): two log lines per
    #: activation, for checking that no two nodes ever held one object open at once
    log_objects: bool = False
    #: this node's name in the cluster map (the SDK's Welcome frame, ``GET /v1/cluster``). Clients
    #: hash object ids over these names to pick a node, so keep it stable across restarts.
    #: Default (None): the ``host:port`` of the advertised URL
    node_name: str | None = None
    #: the base URL clients reach this node at, as listed in the cluster map. Default (None): the
    #: bound URL ``http(s)://host:port`` (with the real port when ``port`` is 0), naming this machine's
    #: hostname when ``host`` is a wildcard (``0.0.0.0``, ``::``). Set it behind a proxy or NAT
    advertise_url: str | None = None

    #: the cluster file (``server/cluster/membership.py``); None: a single node that owns everything
    cluster: Path | None = None
    #: this node's id in the cluster file (required with ``cluster``)
    node_id: str | None = None
    #: etcd's client URL (``http://host:2379``): membership and liveness from etcd instead of a
    #: file (``server/cluster/etcd_member.py``); needs ``node_id``, ``advertise_url`` and the secret
    #: in ``ACTORS_CLUSTER_SECRET``
    etcd: str | None = None
    #: the keys of this cluster in etcd start with this (several clusters can share one etcd)
    etcd_prefix: str = "/actors/"
    #: seconds of this node's liveness lease in etcd (``liveness.py``)
    lease_ttl: int = 10
    #: seconds before the lease could expire at which the node stops taking turns (fencing)
    lease_margin: float = 3.0
    #: objects a second this node hands to their new owners at most when the membership changes
    handoff_rate: float = 5000.0
    #: node processes ``actors serve`` runs on this machine sharing one port (``server/cluster/local.py``)
    workers: int = 1
    #: also accept on this port, shared with other processes that set it too (``SO_REUSEPORT``:
    #: the kernel spreads connections); ``--workers`` sets it for its workers
    shared_port: int | None = None

    #: PEM certificate chain (leaf first) and its private key: with both, the node serves HTTPS and
    #: WSS only, and its bound and advertised URLs are ``https://``. Both or neither; loaded at start
    tls_cert: Path | None = None
    tls_key: Path | None = None
    #: PEM CA certificates this node trusts when it dials peers over ``https`` URLs (node links,
    #: relayed WebSockets), instead of the system's: for a cluster whose certificates a private CA
    #: signed. It does not ask clients for certificates
    tls_ca: Path | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be in 0..65535, not {self.port}")
        if not self.host:
            raise ValueError("host must not be empty")
        if self.app is not None and ":" not in self.app:
            raise ValueError(f"app must look like 'module:attr', not {self.app!r}")
        if self.max_body_bytes < 1:
            raise ValueError("max_body_bytes must be at least 1")
        if self.ratelimit_limit < 1 or not self.ratelimit_period > 0:
            raise ValueError("ratelimit_limit must be at least 1 and ratelimit_period positive")
        if self.auth_token is not None and not self.auth_token:
            raise ValueError("auth_token must not be empty (leave it unset to disable auth)")
        if self.admin_token is not None and not self.admin_token:
            raise ValueError("admin_token must not be empty (leave it unset: auth_token guards admin routes)")
        if self.admin_token is not None and self.admin_token == self.auth_token:
            raise ValueError("admin_token must differ from auth_token (else it grants nothing apart)")
        if self.max_frame_bytes < 1:
            raise ValueError("max_frame_bytes must be at least 1")
        if self.max_websockets < 1:
            raise ValueError("max_websockets must be at least 1")
        if self.max_connections < 1:
            raise ValueError("max_connections must be at least 1")
        if self.max_send_queue_bytes < 1 or self.max_header_bytes < 1:
            raise ValueError("max_send_queue_bytes and max_header_bytes must be at least 1")
        if not 0 < self.keep_alive_timeout < float("inf"):
            raise ValueError("keep_alive_timeout must be a positive number of seconds")
        if not 0.001 <= self.send_timeout <= _MAX_SEND_TIMEOUT:
            raise ValueError(f"send_timeout must be 0.001 to {_MAX_SEND_TIMEOUT:g} seconds")
        if isinstance(self.allowed_origins, str):
            raise TypeError("allowed_origins must be a tuple of origins (see parse_origins)")
        for origin in self.allowed_origins:
            if origin != "*":
                normalize_origin(origin, strict=True)
        if self.log_level not in LOG_LEVELS:
            raise ValueError(f"log_level must be one of {', '.join(LOG_LEVELS)}")
        if self.log_format not in LOG_FORMATS:
            raise ValueError(f"log_format must be one of {', '.join(LOG_FORMATS)}")
        if self.node_name is not None and (
            not 0 < len(self.node_name.encode("utf-8", "surrogatepass")) <= MAX_NODE_NAME_BYTES
            or not self.node_name.isprintable()
        ):
            raise ValueError(f"node_name must be 1 to {MAX_NODE_NAME_BYTES} bytes of printable text")
        if self.advertise_url is not None:
            _check_base_url(self.advertise_url)
        if self.cluster is not None and (self.node_name is not None or self.advertise_url is not None):
            raise ValueError("node_name and advertise_url come from the cluster file with --cluster")
        if self.node_id is not None and self.cluster is None and self.etcd is None:
            raise ValueError("node_id needs a cluster file (--cluster) or etcd (--etcd)")
        self._check_etcd()
        if not 1 <= self.workers <= MAX_WORKERS:
            raise ValueError(f"workers must be in 1..{MAX_WORKERS}, not {self.workers}")
        if self.workers > 1 and self.cluster is not None:
            raise ValueError("workers makes its own local cluster; it cannot be combined with --cluster")
        if self.shared_port is not None and not 1 <= self.shared_port <= 65535:
            raise ValueError(f"shared_port must be in 1..65535, not {self.shared_port}")
        self._check_tls()
        self.settings()  # the runtime's own checks (positive timeouts, limits >= 1)

    def _check_etcd(self) -> None:
        if self.etcd is None:
            return
        if self.cluster is not None:
            raise ValueError("etcd and cluster are two sources of membership: give one")
        if not self.etcd.startswith(("http://", "https://")):
            raise ValueError(f"etcd must be a URL like http://127.0.0.1:2379, not {self.etcd!r}")
        if not self.node_id or self.advertise_url is None:
            raise ValueError("etcd needs node_id (--node-id) and advertise_url (--advertise)")
        if not self.etcd_prefix.startswith("/") or not self.etcd_prefix.endswith("/"):
            raise ValueError(f"etcd_prefix must start and end with /, not {self.etcd_prefix!r}")
        if self.workers > 1:
            raise ValueError("workers makes its own local cluster; it cannot be combined with etcd")
        if self.lease_ttl < 2 or not 0 < self.lease_margin < self.lease_ttl:
            raise ValueError("lease_ttl must be at least 2 s and lease_margin in (0, lease_ttl)")
        if not self.handoff_rate > 0:
            raise ValueError("handoff_rate must be positive")

    def _check_tls(self) -> None:
        """Refuse TLS files that are half given or do not load (ValueError naming the flag)."""
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key go together: give both (HTTPS) or neither (HTTP)")
        if self.tls_cert is not None and self.workers > 1:
            raise ValueError("tls_cert cannot be combined with workers yet (their local cluster is http)")
        try:
            if self.tls_cert is not None and self.tls_key is not None:
                server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
                server.load_cert_chain(self.tls_cert, self.tls_key)
        except (OSError, ssl.SSLError) as exc:
            files = f"{self.tls_cert} and {self.tls_key}"
            raise ValueError(f"tls_cert/tls_key: cannot load {files}: {exc}") from None
        try:
            if self.tls_ca is not None:
                ssl.create_default_context(cafile=self.tls_ca)
        except (OSError, ssl.SSLError) as exc:
            raise ValueError(f"tls_ca: cannot load {self.tls_ca}: {exc}") from None

    @property
    def scheme(self) -> str:
        """``https`` when the node serves TLS, else ``http``."""
        return "http" if self.tls_cert is None else "https"

    def peer_ssl_context(self) -> ssl.SSLContext:
        """The context this node verifies its peers' certificates with (``tls_ca``, else the system's)."""
        return ssl.create_default_context(cafile=self.tls_ca)

    def settings(self) -> Settings:
        """The runtime settings this node opens its runtime with (ValueError if out of range)."""
        return Settings(
            durability=self.durability,
            idle_timeout=self.idle_timeout,
            max_live_objects=self.max_live_objects,
            max_open_files=self.max_open_files,
            max_queue_depth=self.max_queue_depth,
            call_timeout=self.call_timeout,
            commit_hold=self.commit_hold,
            sync_volume=self.sync_volume,
        )

    @property
    def binds_loopback(self) -> bool:
        """Whether ``host`` is a loopback interface (only this machine can connect)."""
        host = self.host.strip("[]")
        if host == "localhost":
            return True
        try:
            return ipaddress.ip_address(host).is_loopback
        except ValueError:
            return False  # a name other than localhost may resolve to anything

    def cluster_node(self, bound_url: str) -> tuple[str, str]:
        """This node's ``(name, url)`` in the cluster map, given the URL hypercorn bound."""
        url = self.advertise_url or _reachable(bound_url)
        url = url.rstrip("/")
        return self.node_name or urlsplit(url).netloc, url

    @property
    def bind(self) -> str:
        """``host:port`` as hypercorn takes it (IPv6 hosts in brackets)."""
        host = f"[{self.host}]" if ":" in self.host and not self.host.startswith("[") else self.host
        return f"{host}:{self.port}"


_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}


def _check_base_url(url: str) -> None:
    try:
        parts = urlsplit(url)
        _ = parts.port  # ValueError for a port that is not a number
    except ValueError:
        parts = None
    if (
        parts is None
        or parts.scheme not in ("http", "https")
        or not parts.hostname
        or parts.query
        or parts.fragment
        or parts.username is not None
    ):
        raise ValueError(f"advertise_url must look like http(s)://host[:port][/path], not {url!r}")


def _reachable(bound_url: str) -> str:
    """``bound_url`` with a wildcard host (``0.0.0.0``, ``[::]``) replaced by this machine's hostname."""
    parts = urlsplit(bound_url)
    if parts.hostname not in ("0.0.0.0", "::"):
        return bound_url
    netloc = socket.gethostname() if parts.port is None else f"{socket.gethostname()}:{parts.port}"
    return parts._replace(netloc=netloc).geturl()


def parse_origins(text: str) -> tuple[str, ...]:
    """A comma-separated list of origins, as ``--allowed-origins`` and ACTORS_ALLOWED_ORIGINS take it."""
    return tuple(part.strip() for part in text.split(",") if part.strip())


def normalize_origin(origin: str, *, strict: bool = False) -> str | None:
    """``origin`` as ``scheme://host[:port]`` in lower case without its scheme's default port.

    None if it is not such an origin (``null``, a path, an unknown scheme); with ``strict``, raise
    ValueError naming it instead.
    """
    try:
        parts = urlsplit(origin.strip())
        port = parts.port
    except ValueError:
        parts, port = None, None
    if (
        parts is None
        or parts.scheme.lower() not in _DEFAULT_PORTS
        or not parts.hostname
        or parts.path not in ("", "/")
        or parts.query
        or parts.fragment
        or parts.username is not None
    ):
        if strict:
            raise ValueError(f"allowed_origins: {origin!r} is not '*' or scheme://host[:port]")
        return None
    scheme = parts.scheme.lower()
    host = parts.hostname  # lower case, without brackets
    if ":" in host:
        host = f"[{host}]"
    if port is None or port == _DEFAULT_PORTS[scheme]:
        return f"{scheme}://{host}"
    return f"{scheme}://{host}:{port}"
