"""Every ACTORS_* variable and every ``actors serve``/``actors objects``/``actors cluster`` flag that
a file in deploy/ names exists in the code (``--help`` of the real console script), so a renamed
flag breaks this test, not a deployment."""

from __future__ import annotations

import re
from pathlib import Path

from .conftest import DEPLOY, has_flag

#: the recipes and their documentation: every text file in deploy/
FILES = sorted(p for p in DEPLOY.rglob("*") if p.is_file() and p.suffix != ".json")
#: what the recipes configure a node in an etcd membership with
ETCD_VARIABLES = {"ACTORS_ETCD", "ACTORS_NODE_ID", "ACTORS_ADVERTISE", "ACTORS_CLUSTER_SECRET"}


def test_every_actors_variable_in_deploy_is_documented(documented_variables: set[str]) -> None:
    assert documented_variables >= ETCD_VARIABLES
    for path in FILES:
        named = set(re.findall(r"\bACTORS_[A-Z0-9_]+\b", path.read_text()))
        assert named <= documented_variables, (
            f"{path.relative_to(DEPLOY)} names undocumented {sorted(named - documented_variables)}"
        )


def _flags_after(command: str, path: Path) -> set[str]:
    flags = set()
    for line in path.read_text().splitlines():
        if command in line:
            tail = line.split(command, 1)[1].split("#")[0]
            flags.update(re.findall(r"(?<!\S)--[a-z][\w-]*", tail))
    return flags


def test_every_flag_deploy_passes_to_actors_commands_exists(
    help_texts: dict[tuple[str, ...], str],
) -> None:
    serve_help = help_texts["serve",]
    objects_help = " ".join(text for command, text in help_texts.items() if command[0] == "objects")
    for path in FILES:
        for flag in _flags_after("actors serve", path):
            assert has_flag(serve_help, flag), f"{path.relative_to(DEPLOY)}: actors serve {flag}"
        for flag in _flags_after("actors objects", path):
            assert has_flag(objects_help, flag), f"{path.relative_to(DEPLOY)}: actors objects ... {flag}"
        for verb in ("nodes", "leave", "remove"):
            for flag in _flags_after(f"actors cluster {verb}", path):
                assert has_flag(help_texts["cluster", verb], flag), (
                    f"{path.relative_to(DEPLOY)}: actors cluster {verb} {flag}"
                )


def test_the_readme_documents_each_etcd_setting_the_node_offers(serve_help: str) -> None:
    readme = (DEPLOY / "README.md").read_text()
    for flag in ("--etcd", "--advertise", "--etcd-prefix", "--lease-ttl", "--lease-margin", "--handoff-rate"):
        assert has_flag(serve_help, flag), flag
        variable = "ACTORS_" + flag.removeprefix("--").replace("-", "_").upper()
        assert variable in readme, f"deploy/README.md does not name {variable} ({flag})"
