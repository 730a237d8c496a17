"""``PluginRegistry.reload``: apply only what changed, check before applying, never lose an edit."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import pytest
from msgspec import to_builtins as plain

from agent_pm.errors import (
    LifecycleError,
    ManifestChangedError,
    ManifestError,
    RevisionConflictError,
)
from agent_pm.plugins import PluginRegistry
from agent_pm.settings import Settings
from tests.fixtures.manifests import THREE_PLUGINS
from tests.fixtures.plugins import Lifecycle

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("lifecycle_calls")]

MANIFEST = THREE_PLUGINS


@pytest.fixture
def manifest(write_manifest: Callable[[str], Path]) -> Path:
    return write_manifest(MANIFEST)


async def test_reload_applies_only_differences(manifest: Path, settings: Settings) -> None:
    async with PluginRegistry(manifest, settings) as registry:
        await registry.fire("post_plan")
        echo, lifecycle = registry.get("echo"), registry.get("lifecycle")
        configured = registry.get("configured")
        manifest.write_text(MANIFEST.replace('"#one"', '"#two"'))
        plain(await registry.reload())
        assert registry.get("echo") is echo and registry.get("lifecycle") is lifecycle
        assert registry.get("configured") is not configured
        # Telemetry of every plugin, changed or not, is kept.
        for name in ("echo", "lifecycle", "configured"):
            assert plain(registry.metadata_for(name))["hook_stats"]["post_plan"]["invocations"] == 1
        results = {r.plugin: r.value for r in await registry.fire("post_plan")}
        assert results["configured"] == {"channel": "#two", "retries": 3}
        assert [m for _, m in Lifecycle.calls] == ["on_enable", "on_reload"]


async def test_reload_announces_only_changed_plugins(manifest: Path, settings: Settings) -> None:
    async with PluginRegistry(manifest, settings) as registry:
        manifest.write_text(MANIFEST.replace('"#one"', '"#two"'))
        with registry.bus.subscribe() as subscription:
            plain(await registry.reload())
            names = [m.plugin.name for m in subscription.drain()]
        assert names == ["configured"]


@pytest.mark.parametrize(
    ("edit", "reason"),
    [
        ("- name: [unclosed", "not valid YAML"),
        (
            MANIFEST.replace(
                "enabled: true\n- name: lifecycle", "enabled: maybe\n- name: lifecycle"
            ),
            "echo: invalid manifest entry",
        ),
        (MANIFEST.replace('channel: "#one"', "chanel: x"), "configured: unknown config key"),
        (MANIFEST.replace("plugins:Echo", "plugins:Missing"), "echo: tests.fixtures"),
        (MANIFEST + "- name: new\n  module: no_such_package.plugin:X\n", "new: cannot import"),
    ],
)
async def test_reload_rejects_an_invalid_edit_and_keeps_running(
    manifest: Path, settings: Settings, edit: str, reason: str
) -> None:
    async with PluginRegistry(manifest, settings) as registry:
        before = {name: registry.get(name) for name in registry.names()}
        revision, digest = registry.revision, registry.manifest_digest
        manifest.write_text(edit)
        with pytest.raises(ManifestError):
            plain(await registry.reload())
        assert reason in " ".join(registry.config_errors)
        assert {name: registry.get(name) for name in registry.names()} == before
        assert registry.revision == revision and registry.manifest_digest == digest
        manifest.write_text(MANIFEST.replace('"#one"', '"#two"'))
        plain(await registry.reload())
        assert registry.config_errors == []
        assert registry.get("echo") is before["echo"]


async def test_reload_keeps_an_entry_that_was_already_invalid(
    write_manifest: Callable[[str], Path], settings: Settings
) -> None:
    path = write_manifest(MANIFEST + "- name: broken\n  module: not a module path\n")
    async with PluginRegistry(path, settings) as registry:
        assert plain(registry.metadata_for("broken"))["state"] == "invalid"
        path.write_text(path.read_text().replace('"#one"', '"#two"'))
        plain(await registry.reload())
        assert registry.config_errors == []
        assert plain(registry.metadata_for("configured"))["config"] == {"channel": "#two"}


async def test_reload_retries_a_plugin_whose_start_failed(
    manifest: Path, settings: Settings
) -> None:
    Lifecycle.fail_on = "on_enable"
    async with PluginRegistry(manifest, settings) as registry:
        assert plain(registry.metadata_for("lifecycle"))["state"] == "failed"
        Lifecycle.fail_on = None
        plain(await registry.reload())
        assert plain(registry.metadata_for("lifecycle"))["state"] == "enabled"


async def test_reload_rolls_back_when_a_running_plugins_successor_fails(
    manifest: Path, settings: Settings
) -> None:
    async with PluginRegistry(manifest, settings) as registry:
        old = registry.get("lifecycle")
        configured = registry.get("configured")
        edited = MANIFEST.replace(
            "Lifecycle\n  enabled: true", "Lifecycle\n  enabled: true\n  description: changed"
        )
        manifest.write_text(edited.replace('"#one"', '"#two"'))
        Lifecycle.fail_on = "on_enable"
        with pytest.raises(LifecycleError):
            plain(await registry.reload())
        assert registry.get("lifecycle") is old and registry.get("configured") is configured
        assert "lifecycle" in registry.config_errors[0]
        # The new instance that did start was stopped again.
        assert [m for _, m in Lifecycle.calls] == ["on_enable", "on_enable"]
        Lifecycle.fail_on = None
        plain(await registry.reload())
        assert registry.get("lifecycle") is not old and registry.config_errors == []


async def test_reload_only_if_changed_ignores_the_registrys_own_write(
    manifest: Path, settings: Settings
) -> None:
    async with PluginRegistry(manifest, settings) as registry:
        plain(await registry.set_enabled("echo", False))
        revision = registry.revision
        plain(await registry.reload(only_if_changed=True))
        assert registry.revision == revision
        assert [m for _, m in Lifecycle.calls] == ["on_enable"]
        assert "# operators' comment" in manifest.read_text()


async def test_write_refuses_to_overwrite_an_unapplied_outside_edit(
    manifest: Path, settings: Settings
) -> None:
    async with PluginRegistry(manifest, settings) as registry:
        external = MANIFEST.replace('"#one"', '"#external"')
        manifest.write_text(external)
        with pytest.raises(ManifestChangedError) as caught:
            plain(await registry.set_enabled("echo", False, revision=registry.revision))
        assert isinstance(caught.value, RevisionConflictError)
        assert manifest.read_text() == external
        assert registry.get("echo") is not None
        plain(await registry.reload(only_if_changed=True))
        plain(await registry.set_enabled("echo", False, revision=registry.revision))
        assert "#external" in manifest.read_text()
        assert "enabled: false" in manifest.read_text()


async def test_manifest_digest_follows_loads_and_writes(manifest: Path, settings: Settings) -> None:
    async with PluginRegistry(manifest, settings) as registry:
        assert registry.manifest_digest == hashlib.sha256(manifest.read_bytes()).hexdigest()
        plain(await registry.set_enabled("echo", False))
        assert registry.manifest_digest == hashlib.sha256(manifest.read_bytes()).hexdigest()


async def test_manifest_digest_is_none_while_the_manifest_is_broken(
    write_manifest: Callable[[str], Path], settings: Settings
) -> None:
    path = write_manifest("- [unclosed")
    async with PluginRegistry(path, settings) as registry:
        assert registry.manifest_digest is None and registry.config_errors
        path.write_text(MANIFEST)
        plain(await registry.reload(only_if_changed=True))
        assert registry.get("echo") is not None and registry.config_errors == []
