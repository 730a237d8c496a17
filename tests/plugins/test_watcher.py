"""Manifest watching with real file edits: replaced files, in-place writes, bad edits, races."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import pytest
from msgspec import to_builtins as plain

from agent_pm.errors import RevisionConflictError
from agent_pm.plugins import PluginRegistry, StateChange
from agent_pm.plugins.watcher import ManifestWatcher, watch_manifest
from agent_pm.settings import Settings
from tests.fixtures.manifests import THREE_PLUGINS
from tests.fixtures.plugins import Lifecycle

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("lifecycle_calls")]

MANIFEST = THREE_PLUGINS


def reloads() -> int:
    return sum(1 for _, method in Lifecycle.calls if method == "on_reload")


def replace_file(path: Path, text: str) -> None:
    """Write the way editors and ``git`` do: a new file renamed over the old one."""
    temp = path.with_name(path.name + ".swp")
    temp.write_text(text)
    os.replace(temp, path)


@pytest.fixture
async def registry(
    write_manifest: Callable[[str], Path], settings: Settings
) -> AsyncIterator[PluginRegistry]:
    async with PluginRegistry(write_manifest(MANIFEST), settings) as registry:
        yield registry


@pytest.fixture
async def watcher(registry: PluginRegistry) -> AsyncIterator[ManifestWatcher]:
    watcher = ManifestWatcher(registry, poll_interval=0.02)
    async with anyio.create_task_group() as group:
        await group.start(watcher.run)
        yield watcher
        group.cancel_scope.cancel()


async def state_change(registry: PluginRegistry, name: str, **expected: Any) -> dict[str, Any]:
    """Wait (at most 5 s) for a state change of plugin ``name`` that matches ``expected``."""
    with anyio.fail_after(5), registry.bus.subscribe(plugins=[name]) as subscription:
        while True:
            for message in await subscription.receive():
                if isinstance(message, StateChange) and all(
                    plain(message.plugin).get(k) == v for k, v in expected.items()
                ):
                    return plain(message.plugin)


async def until(watcher: ManifestWatcher, condition: Callable[[], object]) -> None:
    """Wait (at most 5 s) until ``condition()`` holds after a poll of the watcher."""
    with anyio.fail_after(5):
        while not condition():
            await watcher.polled()


async def test_watcher_applies_a_file_renamed_over_the_manifest(registry: PluginRegistry) -> None:
    lifecycle = registry.get("lifecycle")
    async with anyio.create_task_group() as group:
        await group.start(watch_manifest, registry)  # the default poll interval
        edited = MANIFEST.replace("true\n- name: lifecycle", "false\n- name: lifecycle")
        replace_file(registry.manifest_path, edited)
        with anyio.fail_after(1.5):
            await state_change(registry, "echo", state="disabled")
        group.cancel_scope.cancel()
    assert registry.get("echo") is None
    assert registry.get("lifecycle") is lifecycle and reloads() == 1


@pytest.mark.usefixtures("watcher")
async def test_watcher_applies_an_in_place_write(registry: PluginRegistry) -> None:
    revision = registry.revision
    registry.manifest_path.write_text(MANIFEST.replace("#one", "#two"))
    with anyio.fail_after(1):
        data = await state_change(registry, "configured")
    assert data["config"] == {"channel": "#two"}
    assert registry.revision == revision + 1


async def test_watcher_reports_an_invalid_edit_until_it_is_fixed(
    registry: PluginRegistry, watcher: ManifestWatcher
) -> None:
    before = {name: registry.get(name) for name in registry.names()}
    revision = registry.revision
    replace_file(registry.manifest_path, "- name: echo\n  enabled: [unclosed\n")
    await until(watcher, lambda: registry.config_errors)
    assert "not valid YAML" in registry.config_errors[0]
    assert {name: registry.get(name) for name in registry.names()} == before
    assert registry.revision == revision

    replace_file(registry.manifest_path, MANIFEST.replace("#one", "#fixed"))
    data = await state_change(registry, "configured")
    assert data["config"] == {"channel": "#fixed"}
    assert registry.config_errors == []


async def test_watcher_reports_a_file_too_large_to_be_the_manifest_once(
    registry: PluginRegistry, watcher: ManifestWatcher
) -> None:
    revision = registry.revision
    replace_file(registry.manifest_path, MANIFEST + "#" * (1024 * 1024) + "\n")
    await until(watcher, lambda: registry.config_errors)
    assert "larger than" in registry.config_errors[0] and registry.revision == revision
    seen = watcher.seen
    assert await watcher.check() is False and watcher.seen == seen  # reported once
    replace_file(registry.manifest_path, MANIFEST)
    await until(watcher, lambda: not registry.config_errors)


async def test_watcher_clears_the_report_when_a_bad_edit_is_reverted(
    registry: PluginRegistry, watcher: ManifestWatcher
) -> None:
    replace_file(registry.manifest_path, MANIFEST.replace('"#one"', "[oops"))
    await until(watcher, lambda: registry.config_errors)
    revision = registry.revision
    replace_file(registry.manifest_path, MANIFEST)
    await until(watcher, lambda: not registry.config_errors)
    assert registry.revision == revision and reloads() == 0


async def test_watcher_ignores_the_registrys_own_writes(
    registry: PluginRegistry, watcher: ManifestWatcher
) -> None:
    revision = registry.revision
    plain(await registry.set_enabled("echo", False))
    plain(await registry.update_config("configured", {"channel": "#own"}))
    await until(watcher, lambda: watcher.seen == registry.manifest_digest)
    assert await watcher.check() is False
    assert registry.revision == revision + 2
    assert reloads() == 0


async def test_watcher_leaves_plugins_running_while_the_file_is_missing(
    registry: PluginRegistry,
) -> None:
    watcher = ManifestWatcher(registry)
    registry.manifest_path.unlink()
    assert await watcher.check() is False
    assert registry.get("echo") is not None
    registry.manifest_path.write_text(MANIFEST.replace("#one", "#back"))
    assert await watcher.check() is True
    assert plain(registry.metadata_for("configured"))["config"] == {"channel": "#back"}


async def test_watcher_edit_racing_an_api_write_loses_nothing(
    registry: PluginRegistry, watcher: ManifestWatcher
) -> None:
    revision = registry.revision
    external = MANIFEST.replace("#one", "#external")
    replace_file(registry.manifest_path, external)
    await state_change(registry, "configured", config={"channel": "#external"})
    assert registry.revision > revision
    with pytest.raises(RevisionConflictError):
        plain(await registry.update_config("configured", {"channel": "#api"}, revision=revision))
    assert registry.manifest_path.read_text() == external
    assert plain(registry.metadata_for("configured"))["config"] == {"channel": "#external"}


async def test_watch_manifest_stops_when_asked(registry: PluginRegistry) -> None:
    stop = anyio.Event()
    with anyio.fail_after(5):
        async with anyio.create_task_group() as group:
            await group.start(partial(watch_manifest, registry, poll_interval=0.01, stop=stop))
            registry.manifest_path.write_text(MANIFEST.replace("#one", "#seen"))
            await state_change(registry, "configured")
            stop.set()
