"""The public API is exactly what each package's ``__all__`` lists."""

from __future__ import annotations

import ast
from pathlib import Path
from types import ModuleType

import pytest

import agent_pm
import agent_pm.api as api
import agent_pm.plugins as plugins

PACKAGE = Path(agent_pm.__file__).parent


@pytest.mark.parametrize("package", [plugins, api], ids=lambda p: p.__name__)
def test_exports_all_names_exist_and_are_sorted(package: ModuleType) -> None:
    assert package.__all__ == sorted(package.__all__)
    for name in package.__all__:
        assert getattr(package, name) is not None


def test_exports_public_names_are_listed() -> None:
    public = {n for n in vars(plugins) if not n.startswith("_") and n[0].isupper()}
    assert public <= set(plugins.__all__)


def test_exports_api_modules_are_internal() -> None:
    modules = {path.name for path in (PACKAGE / "api").glob("*.py")} - {"__init__.py"}
    assert modules and {name for name in modules if not name.startswith("_")} == set()


def _api_imports(path: Path) -> set[str]:
    """The ``agent_pm.api`` modules and names that the module at ``path`` imports."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("agent_pm.api"):
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("agent_pm.api")}
    return found


def test_exports_code_outside_api_uses_its_public_surface() -> None:
    outside = [p for p in PACKAGE.rglob("*.py") if (PACKAGE / "api") not in p.parents]
    private = {
        f"{path.relative_to(PACKAGE)}: {name}"
        for path in outside
        for name in _api_imports(path)
        if any(part.startswith("_") for part in name.split(".")[2:])
    }
    assert private == set()
