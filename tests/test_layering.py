"""The dependency rule: ``actors`` imports neither ``server`` nor ``client`` nor HTTP/metrics libraries,
and ``client`` does not import ``server``. Also: the public façade exports exactly its ``__all__``."""

from __future__ import annotations

import ast
from pathlib import Path

import actors
import actors.errors
import actors.limits
import actors.placement
import actors.testing
import actors.wire

ROOT = Path(__file__).resolve().parent.parent
FORBIDDEN = {
    "actors": {"server", "client", "hypercorn", "prometheus_client", "trio_websocket", "h11", "wsproto"},
    "client": {"server"},
}


def imported_top_level_names(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_dependencies_point_one_way():
    violations = []
    for package, forbidden in FORBIDDEN.items():
        for path in sorted((ROOT / package).rglob("*.py")):
            bad = imported_top_level_names(path) & forbidden
            if bad:
                violations.append(f"{path.relative_to(ROOT)} imports {sorted(bad)}")
    assert violations == []


def test_the_facade_exports_exactly_its_public_names():
    # `annotations` comes from `from __future__ import annotations`; `testing`, `wire` and `placement`
    # are public submodules bound on the package once imported, deliberately not re-exported
    # (`testing` imports trio.testing; `wire` and `placement` are the SDK's, shared with the node).
    submodules = {"testing", "wire", "placement"}
    public = {name for name in dir(actors) if not name.startswith("_")} - {"annotations", *submodules}
    assert set(actors.__all__) == public
    for module in (actors, actors.errors, actors.limits, actors.testing, actors.wire, actors.placement):
        for name in module.__all__:
            assert getattr(module, name) is not None


def test_every_error_has_a_stable_type_and_status_hint():
    for name in actors.errors.__all__:
        value = getattr(actors.errors, name)
        if isinstance(value, type) and issubclass(value, actors.errors.ActorError):
            assert 400 <= value.status_hint <= 599, name
