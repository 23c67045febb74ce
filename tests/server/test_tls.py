"""TLS: a node serves HTTPS and WSS with ``--tls-cert``/``--tls-key``; clients and peers verify it.

Certificates come from a certificate authority the test makes (``trustme``): a server certificate
for 127.0.0.1 and localhost. Verification is never turned off: a client that trusts the CA gets
through, one that does not is refused with a certificate error.
"""

from __future__ import annotations

import http.client
import json
import signal
import ssl
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import trio
import trustme

from client import Unreachable, connect
from server import Config, serve
from server.cli import config_from_args, main

from .nodes import ENV, REQUEST_TIMEOUT, STARTUP_TIMEOUT, STOP_TIMEOUT, command


@dataclass(frozen=True)
class Pki:
    ca: Path  # the CA's certificate (PEM), what clients and peers trust
    cert: Path  # the node's certificate chain for 127.0.0.1 and localhost
    key: Path  # its private key


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    authority = trustme.CA()
    issued = authority.issue_cert("127.0.0.1", "localhost")
    folder = tmp_path / "pki"
    folder.mkdir()
    pki = Pki(folder / "ca.pem", folder / "node.pem", folder / "node.key")
    authority.cert_pem.write_to_path(str(pki.ca))
    for pem in issued.cert_chain_pems:
        pem.write_to_path(str(pki.cert), append=True)
    issued.private_key_pem.write_to_path(str(pki.key))
    return pki


@asynccontextmanager
async def tls_node(data_dir: Path, pki: Pki, **options: Any) -> AsyncIterator[str]:
    """An in-process node serving TLS on 127.0.0.1 port 0 for the block; yields its URL."""
    config = Config(port=0, data_dir=data_dir, tls_cert=pki.cert, tls_key=pki.key, **options)
    with trio.fail_after(STARTUP_TIMEOUT):
        async with trio.open_nursery() as nursery:
            urls: list[str] = await nursery.start(lambda task_status: serve(config, task_status=task_status))  # type: ignore[misc]
            yield urls[0]
            nursery.cancel_scope.cancel()


def https_get(url: str, path: str, ca: Path | None, token: str | None = None) -> tuple[int, Any]:
    """``GET path`` on a fresh HTTPS connection, verifying with ``ca`` (None: the system's store)."""
    parts = urlsplit(url)
    context = ssl.create_default_context(cafile=ca)
    connection = http.client.HTTPSConnection(
        parts.hostname, parts.port, timeout=REQUEST_TIMEOUT, context=context
    )
    try:
        connection.request("GET", path, headers={} if token is None else {"Authorization": f"Bearer {token}"})
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


async def in_thread(fn: Any, *args: Any) -> Any:
    with trio.fail_after(REQUEST_TIMEOUT):
        return await trio.to_thread.run_sync(lambda: fn(*args), abandon_on_cancel=True)


#### Configuration


@pytest.mark.parametrize(
    "flags",
    [["--tls-cert", "node.pem"], ["--tls-key", "node.key"]],
)
def test_a_certificate_without_its_key_or_a_key_without_its_certificate_is_refused(
    flags: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["serve", *flags])
    assert exited.value.code == 2
    assert "tls_cert and tls_key go together: give both (HTTPS) or neither (HTTP)" in capsys.readouterr().err


def test_files_that_do_not_load_are_refused_naming_them(pki: Pki, tmp_path: Path) -> None:
    args = _serve_args("--tls-cert", str(pki.key), "--tls-key", str(pki.key))
    with pytest.raises(ValueError, match=r"^tls_cert/tls_key: cannot load .*node.key and .*node.key: "):
        config_from_args(args, {})
    with pytest.raises(ValueError, match=r"^tls_ca: cannot load .*nowhere.pem: "):
        config_from_args(_serve_args(), {"ACTORS_TLS_CA": str(tmp_path / "nowhere.pem")})


def test_the_variables_set_the_tls_files(pki: Pki) -> None:
    environ = {"ACTORS_TLS_CERT": str(pki.cert), "ACTORS_TLS_KEY": str(pki.key), "ACTORS_TLS_CA": str(pki.ca)}
    config = config_from_args(_serve_args(), environ)
    assert (config.tls_cert, config.tls_key, config.tls_ca, config.scheme) == (
        pki.cert,
        pki.key,
        pki.ca,
        "https",
    )


def _serve_args(*flags: str) -> Any:
    from server.cli import _build_parser

    return _build_parser().parse_args(["serve", *flags])


#### One node


async def test_a_tls_node_serves_https_to_a_client_that_trusts_its_ca(tmp_path: Path, pki: Pki) -> None:
    async with tls_node(tmp_path, pki) as url:
        assert url.startswith("https://127.0.0.1:")
        assert await in_thread(https_get, url, "/healthz", pki.ca) == (200, {"status": "ok"})
        status, cluster = await in_thread(https_get, url, "/v1/cluster", pki.ca)
        assert status == 200
        assert cluster["nodes"] == [{"node": urlsplit(url).netloc, "url": url, "up": True}]


async def test_a_client_that_does_not_trust_the_ca_is_refused_with_a_certificate_error(
    tmp_path: Path, pki: Pki
) -> None:
    async with tls_node(tmp_path, pki) as url:
        with pytest.raises(ssl.SSLCertVerificationError, match="certificate verify failed"):
            await in_thread(https_get, url, "/healthz", None)


async def test_past_max_connections_a_tls_client_gets_503_after_its_handshake(
    tmp_path: Path, pki: Pki
) -> None:
    context = ssl.create_default_context(cafile=pki.ca)
    async with tls_node(tmp_path, pki, max_connections=2) as url:
        parts = urlsplit(url)
        assert parts.hostname is not None
        assert parts.port is not None
        held: list[trio.SSLStream[trio.SocketStream]] = []
        try:
            for _ in range(2):  # two kept-alive TLS connections fill the node
                stream = await trio.open_ssl_over_tcp_stream(parts.hostname, parts.port, ssl_context=context)
                held.append(stream)
                await stream.send_all(b"GET /healthz HTTP/1.1\r\nHost: node\r\n\r\n")
                reply = b""
                with trio.fail_after(REQUEST_TIMEOUT):
                    while not reply.endswith(b'{"status":"ok"}'):
                        reply += await stream.receive_some()
            status, body = await in_thread(https_get, url, "/healthz", pki.ca)
            assert status == 503
            assert body["error"]["type"] == "Overloaded"
            assert body["error"]["message"].startswith("the node holds max_connections (2) connections")
        finally:
            for stream in held:
                await trio.aclose_forcefully(stream)


async def test_the_sdk_calls_and_opens_websockets_over_wss_with_the_ca(tmp_path: Path, pki: Pki) -> None:
    async with tls_node(tmp_path, pki) as url, connect(url, ca=pki.ca, timeout=REQUEST_TIMEOUT) as client:
        assert await client.call("Counter", "tls", "increment", by=2) == 2
        async with client.websocket("Counter", "tls", path="/counter/tls/ws") as ws:
            assert await ws.receive() == {"type": "value", "value": 2}


async def test_the_sdk_without_the_ca_fails_with_a_certificate_error(tmp_path: Path, pki: Pki) -> None:
    async with tls_node(tmp_path, pki) as url:
        with pytest.raises(Unreachable, match=r"^could not connect to https://.*certificate verify failed"):
            async with connect(url, timeout=1):  # redialled like any failure, then named
                pass


async def test_actors_call_and_actors_objects_verify_the_node_with_ca(
    tmp_path: Path, pki: Pki, capsys: pytest.CaptureFixture[str]
) -> None:
    async with tls_node(tmp_path, pki) as url:
        call = ["call", "Counter", "cli", "increment", "--url", url, "--ca", str(pki.ca)]
        assert await in_thread(main, call) == 0
        assert capsys.readouterr().out == "1\n"
        assert await in_thread(main, ["objects", "list", "--url", url, "--ca", str(pki.ca)]) == 0
        assert capsys.readouterr().out.startswith("Counter\tcli\t")
        assert await in_thread(main, ["objects", "list", "--url", url]) == 4  # the system's store
        assert "certificate verify failed" in capsys.readouterr().err


#### A cluster of processes


def write_https_cluster_file(path: Path, ports: dict[str, int], scheme: str = "https") -> Path:
    lines = ['secret = "test-cluster-secret-0123456789"']
    for node_id, port in ports.items():
        lines += ["[[nodes]]", f'id = "{node_id}"', f'url = "{scheme}://127.0.0.1:{port}"']
    path.write_text("\n".join(lines) + "\n")
    return path


@asynccontextmanager
async def tls_processes(base: Path, pki: Pki, scheme: str = "https") -> AsyncIterator[list[trio.Process]]:
    """Nodes n1 and n2 as processes with TLS and the CA, on the ports of a cluster file naming
    ``scheme`` URLs; each is SIGTERMed (then killed) at the end."""
    from tests.cluster.processes import free_ports

    ports = dict(zip(("n1", "n2"), free_ports(2), strict=True))
    cluster_file = write_https_cluster_file(base / "cluster.toml", ports, scheme)
    tls = ["--tls-cert", str(pki.cert), "--tls-key", str(pki.key), "--tls-ca", str(pki.ca)]
    processes: list[trio.Process] = []
    try:
        for node_id, port in ports.items():
            data_dir = base / node_id
            data_dir.mkdir(parents=True)
            argv = [*command(data_dir, *tls), "--port", str(port), "--cluster", str(cluster_file)]
            with (base / f"{node_id}.log").open("wb") as log:
                processes.append(
                    await trio.lowlevel.open_process(
                        [*argv, "--node-id", node_id], stdout=subprocess.PIPE, stderr=log, env=ENV, cwd=base
                    )
                )
        yield processes
    finally:
        with trio.CancelScope(shield=True):
            for process in processes:
                if process.returncode is None:
                    process.send_signal(signal.SIGTERM)
            for process in processes:
                with trio.move_on_after(STOP_TIMEOUT):
                    await process.wait()
                if process.returncode is None:
                    process.kill()
                    await process.wait()
                if process.stdout is not None:
                    await process.stdout.aclose()


async def first_line(process: trio.Process) -> str:
    assert process.stdout is not None
    buffer = b""
    with trio.fail_after(STARTUP_TIMEOUT):
        while b"\n" not in buffer:
            chunk = await process.stdout.receive_some()
            assert chunk, "the node exited before listening"
            buffer += chunk
    return buffer.split(b"\n", 1)[0].decode()


async def test_a_cluster_with_https_urls_forwards_calls_over_tls(tmp_path: Path, pki: Pki) -> None:
    async with tls_processes(tmp_path, pki) as processes:
        lines = [await first_line(process) for process in processes]
        assert all(line.startswith("actors: listening on https://127.0.0.1:") for line in lines)
        url = lines[0].rsplit(" ", 1)[1]
        with trio.fail_after(STARTUP_TIMEOUT):
            while True:  # until n1's link to n2 (over TLS) is up
                if (await in_thread(https_get, url, "/readyz", pki.ca))[0] == 200:
                    break
                await trio.sleep(0.05)
        async with connect(url, ca=pki.ca, timeout=REQUEST_TIMEOUT) as client:
            names = [f"tls-{i}" for i in range(16)]
            for name in names:  # the SDK calls each owner directly, over WSS
                assert await client.call("Counter", name, "increment") == 1
        for name in names:  # through n1 only: n2's objects are forwarded over the TLS link
            status, reply = await in_thread(https_get, url, f"/counter/{name}", pki.ca)
            assert (status, reply) == (200, {"value": 1})
        status, listing = await in_thread(https_get, url, "/v1/objects?class=Counter", pki.ca)
        assert status == 200
        assert listing["unavailable"] == []
        assert {o["node"] for o in listing["objects"]} == {"n1", "n2"}


async def test_a_tls_node_whose_cluster_url_is_http_refuses_to_start(tmp_path: Path, pki: Pki) -> None:
    async with tls_processes(tmp_path, pki, scheme="http") as processes:
        with trio.fail_after(STARTUP_TIMEOUT):
            assert await processes[0].wait() == 2
    assert (
        "actors serve: this node (n1) serves TLS (--tls-cert) but its URL in the cluster file is "
        "http://127.0.0.1:" in (tmp_path / "n1.log").read_text()
    )
