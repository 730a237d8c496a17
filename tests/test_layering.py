"""Layering: each layer imports in a fresh interpreter without the layers above it."""

from __future__ import annotations

import subprocess
import sys

import pytest


def _imported(module: str) -> set[str]:
    """The top-level packages and ``agent_pm`` modules that importing ``module`` loads."""
    code = f"import sys, {module}; print('\\n'.join(sys.modules))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    return {name for name in out.split() if "." not in name or name.startswith("agent_pm.")}


@pytest.mark.parametrize(
    ("module", "forbidden"),
    [
        ("agent_pm.plugins", {"starlette", "uvicorn", "agent_pm.api", "agent_pm.demo"}),
        ("agent_pm.api", {"agent_pm.demo"}),
        ("agent_pm.client", {"starlette", "uvicorn", "agent_pm.api", "agent_pm.server"}),
    ],
)
def test_layer_imports_nothing_above_it(module: str, forbidden: set[str]) -> None:
    assert _imported(module) & forbidden == set()


def test_protocol_needs_msgspec_alone() -> None:
    beyond_msgspec = _imported("agent_pm.protocol") - _imported("msgspec")
    assert beyond_msgspec == {"agent_pm", "agent_pm.protocol"}
