"""The entry-point catalogue."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from msgspec import to_builtins as plain

from agent_pm.errors import PluginLoadError, PluginNotFoundError
from agent_pm.plugins import PluginRegistry
from agent_pm.plugins.discovery import discover_plugins
from agent_pm.settings import Settings
from tests.conftest import make_distribution


def by_name(entries: list) -> dict:
    return {entry.entry_point: entry for entry in entries}


def test_discover_plugins_describes_loadable_entry_points(plugin_site: Path) -> None:
    entries = by_name(discover_plugins())
    echo = entries["echo-ep"]
    assert echo.module == "tests.fixtures.plugins:Echo"
    assert echo.plugin_name == "echo"
    assert echo.description == "returns what it gets"
    assert echo.hooks == ["post_plan", "pre_plan"]
    assert echo.distribution == "fake-plugins"
    assert echo.version == "1.0"
    assert echo.config_schema is None
    assert echo.error is None
    assert entries["strict-ep"].config_schema["$defs"]["Config"]["properties"]["channel"]


def test_discover_plugins_reports_broken_entries_without_hiding_others(plugin_site: Path) -> None:
    entries = by_name(discover_plugins())
    assert "cannot load: ModuleNotFoundError" in entries["missing-ep"].error
    assert "not a PluginBase subclass" in entries["not-a-plugin"].error
    assert "must name a class" in entries["module-only"].error
    assert entries["missing-ep"].plugin_name is None
    assert entries["echo-ep"].error is None


def test_discover_plugins_marks_configured_by_name_or_module(plugin_site: Path) -> None:
    entries = by_name(discover_plugins(["echo", "tests.fixtures.route_plugins:Strict"]))
    assert entries["echo-ep"].configured
    assert entries["strict-ep"].configured
    assert not entries["missing-ep"].configured


def test_discover_plugins_sees_newly_installed_distributions(plugin_site: Path) -> None:
    assert "late-ep" not in by_name(discover_plugins())
    make_distribution(
        plugin_site, "late-plugins", "[agent_pm.plugins]\nlate-ep = tests.fixtures.plugins:Echo\n"
    )
    assert "late-ep" in by_name(discover_plugins())


def test_discover_plugins_without_entry_points_is_empty() -> None:
    assert all(entry.distribution != "fake-plugins" for entry in discover_plugins())


@pytest.mark.anyio
async def test_registry_installs_from_the_catalogue(
    plugin_site: Path, write_manifest: Callable[[str], Path], settings: Settings
) -> None:
    path = write_manifest("[]\n")
    async with PluginRegistry(path, settings) as registry:
        metadata = plain(await registry.install_entry_point("echo-ep", enabled=True))
        assert metadata["name"] == "echo" and metadata["active"]
        catalogue = by_name(await registry.discover_plugins())
        assert catalogue["echo-ep"].configured
        with pytest.raises(PluginNotFoundError):
            plain(await registry.install_entry_point("nope"))
        with pytest.raises(PluginLoadError, match="broken"):
            plain(await registry.install_entry_point("missing-ep"))
    assert "tests.fixtures.plugins:Echo" in path.read_text()
