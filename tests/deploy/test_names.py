"""Every ACTORS_* variable and every ``actors serve``/``actors objects`` flag that a file in deploy/
names exists in the code (``--help`` of the real console script), so a renamed flag breaks this
test, not a deployment."""

from __future__ import annotations

import re
from pathlib import Path

from .conftest import DEPLOY, etcd_variables_pending, has_flag

#: the recipes and their documentation: every text file in deploy/
FILES = sorted(p for p in DEPLOY.rglob("*") if p.is_file() and p.suffix != ".json")


def test_every_actors_variable_in_deploy_is_documented(
    documented_variables: set[str], serve_help: str
) -> None:
    readme_only = etcd_variables_pending(serve_help)  # "When etcd membership lands"
    for path in FILES:
        named = set(re.findall(r"\bACTORS_[A-Z0-9_]+\b", path.read_text()))
        allowed = documented_variables | (readme_only if path.name == "README.md" else set())
        assert named <= allowed, f"{path.relative_to(DEPLOY)} names undocumented {sorted(named - allowed)}"


def _flags_after(command: str, path: Path) -> set[str]:
    flags = set()
    for line in path.read_text().splitlines():
        if command in line:
            tail = line.split(command, 1)[1].split("#")[0]
            flags.update(re.findall(r"(?<!\S)--[a-z][\w-]*", tail))
    return flags


def test_every_flag_deploy_passes_to_actors_serve_and_actors_objects_exists(
    help_texts: dict[tuple[str, ...], str],
) -> None:
    serve_help = help_texts["serve",]
    pending = {"--etcd", "--advertise", "--etcd-prefix"}
    objects_help = " ".join(text for command, text in help_texts.items() if command[0] == "objects")
    for path in FILES:
        readme = path.name == "README.md"
        for flag in _flags_after("actors serve", path):
            assert has_flag(serve_help, flag) or (
                readme and flag in pending and not has_flag(serve_help, flag)
            ), f"{path.relative_to(DEPLOY)}: actors serve {flag}"
        for flag in _flags_after("actors objects", path):
            assert has_flag(objects_help, flag), f"{path.relative_to(DEPLOY)}: actors objects ... {flag}"
