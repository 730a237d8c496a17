"""Shared fixtures: backends for anyio's pytest plugin and a manifest factory."""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from agent_pm.settings import Settings

# Real servers: uvicorn serving the stream, and redis-server for the cluster tests.
pytest_plugins = ["tests.api.stream_fixtures", "tests.fixtures.redis"]


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
    return Settings.from_env(
        {"PLUGIN_CONFIG_PATH": str(tmp_path / "plugins.yaml"), "DATA_DIR": str(tmp_path / "data")}
    )


@pytest.fixture
def entry() -> Callable[..., str]:
    """One manifest entry for a fixture plugin: ``entry("Echo", enabled=True, config=...)``."""
    import json

    def make(cls: str, *, name: str | None = None, enabled: bool = True, **fields: object) -> str:
        lines = [
            f"- name: {name or cls.lower()}",
            f"  module: tests.fixtures.plugins:{cls}",
            f"  enabled: {str(enabled).lower()}",
        ]
        lines += [f"  {key}: {json.dumps(value)}" for key, value in fields.items()]
        return "\n".join(lines) + "\n"

    return make


@pytest.fixture
def registry_factory(tmp_path: Path, settings: Settings):
    """Enter a ``PluginRegistry`` on a manifest made of ``entries``; yields it."""
    from contextlib import asynccontextmanager

    from agent_pm.plugins import PluginRegistry

    @asynccontextmanager
    async def make(*entries: str, settings_: Settings | None = None, **options: object):
        path = tmp_path / "plugins.yaml"
        path.write_text("".join(entries))
        async with PluginRegistry(path, settings_ or settings, **options) as registry:
            yield registry

    return make


FAKE_ENTRY_POINTS = """\
[agent_pm.plugins]
echo-ep = tests.fixtures.plugins:Echo
strict-ep = tests.fixtures.route_plugins:Strict
missing-ep = tests.fixtures.does_not_exist:Nothing
not-a-plugin = tests.fixtures.plugins:NotAPlugin
module-only = tests.fixtures.plugins
"""


def make_distribution(site: Path, name: str, entry_points: str, version: str = "1.0") -> Path:
    """Create an installed-looking distribution (``*.dist-info``) with entry points in ``site``."""
    dist_info = site / f"{name.replace('-', '_')}-{version}.dist-info"
    dist_info.mkdir(parents=True)
    (dist_info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
    )
    (dist_info / "entry_points.txt").write_text(entry_points)
    return dist_info


@pytest.fixture
def plugin_site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A directory on ``sys.path`` holding a distribution with ``agent_pm.plugins`` entry points."""
    site = tmp_path / "site"
    make_distribution(site, "fake-plugins", FAKE_ENTRY_POINTS)
    monkeypatch.syspath_prepend(str(site))
    return site


@pytest.fixture(autouse=True)
def restore_fixture_modules():
    """Put back the fixture plugin modules a hot-reload test re-imported.

    Tests share class-level state with ``tests.fixtures`` plugins (call logs, events); after a
    reload the registry would load a fresh copy of those classes and the next test would watch
    the wrong one.
    """
    import sys

    saved = {n: m for n, m in sys.modules.items() if n.startswith("tests.fixtures")}
    yield
    for name in [n for n in sys.modules if n.startswith("tests.fixtures")]:
        if name not in saved:
            del sys.modules[name]
    sys.modules.update(saved)


@pytest.fixture
def lifecycle_calls():
    """Reset the ``Lifecycle`` fixture plugin's call log (and failure switch); yields the log."""
    from tests.fixtures.plugins import Lifecycle

    Lifecycle.calls, Lifecycle.fail_on = [], None
    yield Lifecycle.calls
    Lifecycle.calls, Lifecycle.fail_on = [], None
