"""A real etcd for the tests: Debian's ``etcd`` (etcd-server, 3.4) on 127.0.0.1, in its own folder.

``running_etcd(folder)`` starts one and always stops it, its whole process group, SIGKILL last, even
when the test fails. The ``EtcdServer`` it yields can also stop, kill, pause and start again that
same etcd (same data folder, same ports), for tests of what a client sees when etcd restarts or
hangs. Every wait is bounded; the methods block (a trio test calls them through
``trio.to_thread.run_sync`` when a task must go on meanwhile). ``etcd_binary()`` skips the test when
etcd is not installed, and fails it under CI (``CI=true``), where ``scripts/test`` installs it.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from .processes import free_ports

IN_CI = os.environ.get("CI") == "true"
#: a single member elects itself about 1 s after it starts (etcd's default election timeout)
START_TIMEOUT = 20.0
STOP_TIMEOUT = 10.0


def etcd_binary() -> str:
    """The path of ``etcd``; skips the test when it is missing (fails it under CI)."""
    path = shutil.which("etcd")
    if path is None:
        message = "etcd is not installed (Debian's etcd-server; scripts/test installs it)"
        if IN_CI:
            pytest.fail(f"{message}: under CI a missing etcd fails the test instead of skipping it")
        pytest.skip(message)
    return path


class EtcdServer:
    """One etcd member, a cluster of its own, that can be stopped and started again with its data."""

    def __init__(self, folder: Path) -> None:
        self.binary = etcd_binary()
        self.folder = folder
        self.client_port, self.peer_port = free_ports(2)
        self.url = f"http://127.0.0.1:{self.client_port}"
        self.log_path = folder / "etcd.log"
        self.process: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        peer = f"http://127.0.0.1:{self.peer_port}"
        return [
            self.binary,
            "--name", "test",
            "--data-dir", str(self.folder / "data"),
            "--listen-client-urls", self.url, "--advertise-client-urls", self.url,
            "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
            "--initial-cluster", f"test={peer}", "--initial-cluster-token", f"test-{self.peer_port}",
            "--logger", "zap", "--log-level", "warn",
        ]  # fmt: skip

    def start(self) -> None:
        """Starts etcd (again: same data, same ports) and waits until it is healthy."""
        assert self.process is None or self.process.poll() is not None, "etcd is already running"
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.command(), stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True
            )
        deadline = time.monotonic() + START_TIMEOUT
        with httpx.Client(trust_env=False, timeout=1.0) as http:
            while True:
                if self.process.poll() is not None:
                    raise RuntimeError(f"etcd exited {self.process.returncode}:\n{self.log()}")
                try:
                    if http.get(f"{self.url}/health").json().get("health") == "true":
                        return
                except (httpx.HTTPError, ValueError):
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"etcd not healthy within {START_TIMEOUT} s:\n{self.log()}")
                time.sleep(0.05)

    def stop(self) -> None:
        """SIGTERM (etcd shuts down cleanly), SIGKILL after STOP_TIMEOUT."""
        self._signal(signal.SIGTERM)
        self._wait()

    def kill(self) -> None:
        """SIGKILL: etcd crashes; what it acknowledged is on disk (it fsyncs before answering)."""
        self._signal(signal.SIGKILL)
        self._wait()

    def pause(self) -> None:
        """SIGSTOP: etcd keeps its connections but answers nothing, as a hung etcd."""
        self._signal(signal.SIGSTOP)

    def resume(self) -> None:
        self._signal(signal.SIGCONT)

    def close(self) -> None:
        """Kills whatever is left of the process group (paused or not); never raises."""
        self._signal(signal.SIGCONT)
        self._signal(signal.SIGKILL)
        if self.process is not None:
            self.process.wait(timeout=STOP_TIMEOUT)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def _signal(self, number: signal.Signals) -> None:
        if self.process is not None and self.process.returncode is None:
            try:
                os.killpg(self.process.pid, number)
            except ProcessLookupError:
                pass

    def _wait(self) -> None:
        assert self.process is not None
        try:
            self.process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self._signal(signal.SIGKILL)
            self.process.wait(timeout=STOP_TIMEOUT)


@contextmanager
def running_etcd(folder: Path) -> Iterator[EtcdServer]:
    """A healthy etcd for the block, stopped (killed) when it ends, whatever happened."""
    server = EtcdServer(folder)
    try:
        server.start()
        yield server
    finally:
        server.close()
