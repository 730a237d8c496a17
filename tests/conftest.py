"""Shared fixtures: backends for anyio's pytest plugin and a manifest factory."""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from agent_pm.settings import Settings


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def write_manifest(tmp_path: Path) -> Callable[[str], Path]:
    """Write a manifest (dedented YAML) into the test's directory and return its path."""

    def write(text: str, name: str = "plugins.yaml") -> Path:
        path = tmp_path / name
        path.write_text(textwrap.dedent(text))
        return path

    return write


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Settings isolated from the process environment."""
    return Settings.from_env({"PLUGIN_CONFIG_PATH": str(tmp_path / "plugins.yaml")})
