"""Every module of the package names its one job in a docstring and logs under its own name."""

from __future__ import annotations

import ast
from pathlib import Path

import agent_pm

MODULES = sorted(Path(agent_pm.__file__).parent.rglob("*.py"))


def test_every_module_opens_with_a_docstring() -> None:
    silent = [path for path in MODULES if not ast.get_docstring(ast.parse(path.read_text()))]
    assert len(MODULES) > 100 and silent == []


def _logger_names(path: Path) -> list[str]:
    """The source of every ``getLogger(...)`` argument in the module."""
    calls = [
        node
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "getLogger"
    ]
    return [ast.unparse(call.args[0]) if call.args else "" for call in calls]


def test_modules_log_under_their_own_name() -> None:
    # Besides ``__name__``: a plugin's own logger, and uvicorn's, whose records the server tunes.
    allowed = {"__name__", "'uvicorn.error'"}
    borrowed = {
        f"{path.name}: {name}"
        for path in MODULES
        for name in _logger_names(path)
        if name not in allowed and not name.startswith("f'agent_pm.plugins.{")
    }
    assert borrowed == set()
