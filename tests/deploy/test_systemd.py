"""deploy/systemd/: ``systemd-analyze verify`` on the unit, and its ExecStart with its environment
run here as a real node in an etcd membership (a real etcd) that drains on SIGTERM."""

from __future__ import annotations

import os
import shlex
from pathlib import Path

from tests.cluster.etcd_server import EtcdServer
from tests.server.nodes import running_command

from .conftest import (
    BIN,
    DEPLOY,
    DRAIN_TIMEOUT_SECONDS,
    SECRET,
    env_file,
    free_port,
    request,
    run,
    tool,
    wait_ready,
)

UNIT = DEPLOY / "systemd" / "actors.service"
ENV_FILE = DEPLOY / "systemd" / "actors.env"
#: where the README installs the package (a venv), as the unit's ExecStart names it
INSTALL_PREFIX = "/opt/actors/bin/"


def unit_entries(path: Path = UNIT) -> dict[str, list[str]]:
    """``Section.Key`` -> values, in order (systemd keys may repeat)."""
    entries: dict[str, list[str]] = {}
    section = ""
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        entries.setdefault(f"{section}.{key.strip()}", []).append(value.strip())
    return entries


def seconds(value: str) -> float:
    units = {"s": 1, "sec": 1, "min": 60, "m": 60}
    for unit, factor in units.items():
        if value.endswith(unit) and value[: -len(unit)].isdigit():
            return float(value[: -len(unit)]) * factor
    return float(value)


def test_the_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze = tool("systemd-analyze", "Debian's systemd package; scripts/test installs it")
    # verify also checks that ExecStart exists: point it at this checkout's installed `actors`.
    unit = tmp_path / UNIT.name
    unit.write_text(UNIT.read_text().replace(INSTALL_PREFIX + "actors", str(BIN / "actors")))
    result = run(analyze, "verify", "--man=no", str(unit), cwd=tmp_path)
    # Unknown keys and bad values are only warnings (exit 0): any output is a failure here.
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert not output


def test_the_unit_stops_after_the_drain_and_keeps_its_data_and_sandbox() -> None:
    entries = unit_entries()
    one = {key: values[-1] for key, values in entries.items()}
    assert seconds(one["Service.TimeoutStopSec"]) > DRAIN_TIMEOUT_SECONDS
    assert one["Service.KillSignal"] == "SIGTERM"
    assert one["Service.Restart"] == "on-failure"
    assert one["Service.StateDirectory"] == "actors"
    assert "ACTORS_DATA_DIR=%S/actors" in entries["Service.Environment"]  # the StateDirectory
    assert one["Service.User"] == "actors"
    assert one["Service.ProtectSystem"] == "strict"
    assert one["Service.NoNewPrivileges"] == "yes"
    # two descriptors per live object, 10,000 live objects by default, plus a reserve of 1,024
    assert int(one["Service.LimitNOFILE"]) >= 2 * 10_000 + 1024
    assert one["Service.EnvironmentFile"] == "/etc/actors/" + ENV_FILE.name


def test_the_units_exec_start_and_environment_join_etcd_serve_and_drain_on_sigterm(
    etcd: EtcdServer, tmp_path: Path
) -> None:
    entries = unit_entries()
    (exec_start,) = entries["Service.ExecStart"]
    argv = shlex.split(exec_start)
    assert argv == [INSTALL_PREFIX + "actors", "serve"], "configure the node in the env file, not with flags"
    argv[0] = str(BIN / "actors")
    env = env_file(ENV_FILE)
    for assignment in entries["Service.Environment"]:
        key, _, value = assignment.partition("=")
        env[key] = value.replace("%S", str(tmp_path / "state"))
    # etcd and this node's URL name other machines: here the test's etcd, loopback and a free port
    # (the tests' network policy); the secret is left for the operator to fill in.
    assert env.pop("ACTORS_HOST") == "0.0.0.0"
    assert env.pop("ACTORS_ETCD").startswith("http://")
    assert env.pop("ACTORS_ADVERTISE").endswith(":" + env["ACTORS_PORT"])
    assert env.pop("ACTORS_CLUSTER_SECRET") == ""
    assert "ACTORS_CLUSTER" not in env  # the file is the commented alternative
    port = free_port()
    env |= {
        "ACTORS_HOST": "127.0.0.1",
        "ACTORS_PORT": str(port),
        "ACTORS_ETCD": etcd.url,
        "ACTORS_ETCD_PREFIX": "/deploy-systemd/",
        "ACTORS_ADVERTISE": f"http://127.0.0.1:{port}",
        "ACTORS_CLUSTER_SECRET": SECRET,
        "PATH": os.environ["PATH"],
    }
    with running_command(argv, env, tmp_path / "node.log") as node:
        wait_ready(node.url)
        assert request(node.url, "/counter/unit/increment", method="POST").json() == {"value": 1}
        members = request(node.url, "/v1/cluster").json()["nodes"]
        assert [m["node"] for m in members] == [env["ACTORS_NODE_ID"]]
    assert (tmp_path / "state" / "actors" / "catalog.sqlite3").exists()
    assert '"event": "stopped"' in node.log()  # ACTORS_LOG_FORMAT=json from the env file
