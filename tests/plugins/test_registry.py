"""The registry: states, lifecycle, admin operations, persistence, emit and telemetry."""

from __future__ import annotations

import logging
from pathlib import Path

import anyio
import pytest
from msgspec import to_builtins as plain

from agent_pm.errors import (
    ConfigValidationError,
    EmitLoopError,
    InstallRefusedError,
    LifecycleError,
    ManifestError,
    PluginExistsError,
    PluginLoadError,
    PluginNotFoundError,
    RevisionConflictError,
)
from agent_pm.plugins import PluginRegistry
from agent_pm.plugins.loader import import_plugin_class
from agent_pm.plugins.manifest import Manifest
from agent_pm.settings import Settings
from tests.fixtures.plugins import Collector, Lifecycle

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("lifecycle_calls")]


def methods() -> list[str]:
    return [method for _, method in Lifecycle.calls]


def manifest_state(path: Path) -> dict[str, tuple[bool, dict]]:
    return {
        item.entry.name: (item.entry.enabled, item.entry.config)
        for item in Manifest.load(path).items()
        if item.entry is not None
    }


async def test_registry_states_of_good_and_bad_entries(registry_factory, entry) -> None:
    manifest = [
        entry("Echo"),
        entry("SyncEcho", name="sync_echo", enabled=False),
        entry("NotAPlugin"),
        entry("Missing", name="missing"),
        entry("BrokenInit", name="broken_init"),
        entry("Configured", config={"channel": 5}),
        "- 42\n",
    ]
    async with registry_factory(*manifest) as registry:
        states = {
            m["name"]: (m["state"], m["active"], m["invalid"])
            for m in plain(registry.list_metadata())
        }
        errors = {m["name"]: m["error"] for m in plain(registry.list_metadata())}
    assert states == {
        "echo": ("enabled", True, False),
        "sync_echo": ("disabled", False, False),
        "notaplugin": ("invalid", False, True),
        "missing": ("invalid", False, True),
        "broken_init": ("failed", False, False),
        "configured": ("invalid", False, True),
        "<entry 7>": ("invalid", False, True),
    }
    assert "not a PluginBase subclass" in errors["notaplugin"]
    assert "tests.fixtures.plugins:Missing does not exist" in errors["missing"]
    assert "constructor failed: ValueError: constructor broke" in errors["broken_init"]
    assert "Expected `str`, got `int` (at $.channel)" in errors["configured"]


async def test_registry_metadata_carries_the_config_schema_from_the_import(
    registry_factory, entry
) -> None:
    manifest = [entry("Configured", config={"channel": 5}), entry("Echo"), entry("Missing")]
    async with registry_factory(*manifest) as registry:
        invalid = registry.metadata_for("configured")
        echo = registry.metadata_for("echo")
        missing = registry.metadata_for("missing")
    # An invalid config keeps the schema, so the console can offer the form that fixes it.
    assert invalid.state == "invalid" and invalid.config_schema is not None
    [struct] = invalid.config_schema["$defs"].values()
    assert set(struct["properties"]) == {"channel", "retries"}
    assert echo.config_schema is None and missing.config_schema is None


async def test_registry_metadata_has_the_documented_fields(registry_factory, entry) -> None:
    async with registry_factory(entry("Echo", timeout_seconds=2.5)) as registry:
        await registry.fire("post_plan")
        meta = plain(registry.metadata_for("echo", history=True))
    assert set(meta) >= {
        "name",
        "module",
        "description",
        "enabled",
        "active",
        "state",
        "invalid",
        "hooks",
        "config",
        "secrets",
        "hook_stats",
        "hook_history",
        "errors",
        "timeout_seconds",
    }
    assert meta["description"] == "returns what it gets"
    assert meta["timeout_seconds"] == 2.5
    stats = meta["hook_stats"]["post_plan"]
    assert stats["invocations"] == 1 and stats["avg_duration_ms"] == stats["total_duration_ms"]
    [sample] = meta["hook_history"]["post_plan"]
    assert sample["status"] == "success" and sample["timestamp"].endswith("+00:00")


async def test_registry_lifecycle_enable_disable_and_exit(
    registry_factory, entry, tmp_path
) -> None:
    async with registry_factory(entry("Lifecycle")) as registry:
        assert methods() == ["on_enable"]
        plain(await registry.set_enabled("lifecycle", False))
        assert methods() == ["on_enable", "on_disable"]
        assert manifest_state(tmp_path / "plugins.yaml")["lifecycle"][0] is False
        plain(await registry.set_enabled("lifecycle", True))
        assert registry.get("lifecycle") is not None
    assert methods() == ["on_enable", "on_disable", "on_enable", "on_disable"]


async def test_registry_failed_enable_keeps_plugin_disabled_and_manifest_unchanged(
    registry_factory, entry, tmp_path
) -> None:
    async with registry_factory(entry("Lifecycle", enabled=False)) as registry:
        Lifecycle.fail_on = "on_enable"
        before = (tmp_path / "plugins.yaml").read_bytes()
        revision = registry.revision
        with pytest.raises(LifecycleError, match="on_enable failed: RuntimeError: on_enable broke"):
            plain(await registry.set_enabled("lifecycle", True))
        meta = plain(registry.metadata_for("lifecycle"))
        assert (meta["state"], meta["active"]) == ("disabled", False)
        assert meta["errors"][-1]["stage"] == "on_enable"
        assert (tmp_path / "plugins.yaml").read_bytes() == before
        assert registry.revision == revision


async def test_registry_update_config_validates_and_swaps_instances(
    registry_factory, entry, tmp_path
) -> None:
    async with registry_factory(entry("Configured")) as registry:
        old = registry.get("configured")
        meta = plain(await registry.update_config("configured", {"channel": "#ops"}))
        assert meta["config"] == {"channel": "#ops"}
        assert registry.get("configured") is not old
        [result] = await registry.fire("post_plan")
        assert result.value == {"channel": "#ops", "retries": 3}
        with pytest.raises(ConfigValidationError) as caught:
            plain(await registry.update_config("configured", {"channel": "#x", "bogus": 1}))
        assert caught.value.path == "$.bogus"
        with pytest.raises(ConfigValidationError) as caught:
            plain(await registry.update_config("configured", {"retries": "three"}))
        assert caught.value.path == "$.retries"
        [result] = await registry.fire("post_plan")
        assert result.value["channel"] == "#ops"
    assert manifest_state(tmp_path / "plugins.yaml")["configured"][1] == {"channel": "#ops"}


async def test_registry_update_config_keeps_masked_secret(
    registry_factory, entry, tmp_path
) -> None:
    config = {"secrets": {"API_TOKEN": "canary-9f8e7d"}}
    async with registry_factory(entry("Secretive", config=config)) as registry:
        meta = plain(await registry.update_config("secretive", {"secrets": {"API_TOKEN": "***"}}))
        assert meta["secrets"]["missing"] == []
        assert meta["config"] == {"secrets": {"API_TOKEN": "***"}}
    assert manifest_state(tmp_path / "plugins.yaml")["secretive"][1] == config


async def test_registry_secrets_never_leak_into_metadata_results_or_logs(
    registry_factory, entry, caplog: pytest.LogCaptureFixture
) -> None:
    canary = "canary-c4f3b4b3"
    caplog.set_level(logging.DEBUG)
    async with registry_factory(entry("Secretive", config={"secrets": {"API_TOKEN": canary}})) as r:
        [result] = await r.fire("post_plan")
        everything = repr(r.list_metadata()) + repr(result) + caplog.text
        with r.bus.subscribe(since=0) as subscription:
            everything += repr(subscription.drain())
    assert result.error == "RuntimeError: upstream refused token ***"
    assert canary not in everything


async def test_registry_revision_conflict_is_refused(registry_factory, entry) -> None:
    async with registry_factory(entry("Echo")) as registry:
        revision = registry.revision
        plain(await registry.set_enabled("echo", False, revision=revision))
        with pytest.raises(RevisionConflictError):
            plain(await registry.set_enabled("echo", True, revision=revision))
        assert plain(registry.metadata_for("echo"))["enabled"] is False


async def test_registry_concurrent_admin_calls_lose_no_update(
    registry_factory, entry, tmp_path
) -> None:
    async with registry_factory(entry("Configured"), entry("Echo")) as registry:
        async with anyio.create_task_group() as group:
            for i in range(50):
                group.start_soon(registry.set_enabled, "echo", i % 2 == 0)
                group.start_soon(registry.update_config, "configured", {"retries": i})
        final = {m["name"]: (m["enabled"], m["config"]) for m in plain(registry.list_metadata())}
    assert manifest_state(tmp_path / "plugins.yaml") == final


async def test_registry_unknown_and_invalid_plugins_raise(registry_factory, entry) -> None:
    async with registry_factory(entry("NotAPlugin")) as registry:
        with pytest.raises(PluginNotFoundError):
            plain(await registry.set_enabled("nope", True))
        with pytest.raises(PluginLoadError, match="invalid"):
            plain(await registry.set_enabled("notaplugin", True))
        with pytest.raises(PluginNotFoundError):
            registry.history("nope")


async def test_registry_remove_disables_and_deletes(registry_factory, entry, tmp_path) -> None:
    async with registry_factory(entry("Lifecycle"), entry("NotAPlugin")) as registry:
        await registry.remove("lifecycle")
        await registry.remove("notaplugin")
        assert registry.names() == []
    assert methods() == ["on_enable", "on_disable"]
    assert list(Manifest.load(tmp_path / "plugins.yaml").items()) == []


async def test_registry_reload_applies_only_differences(registry_factory, entry, tmp_path) -> None:
    async with registry_factory(entry("Lifecycle"), entry("Echo")) as registry:
        await registry.fire("post_plan")
        kept = registry.get("lifecycle")
        (tmp_path / "plugins.yaml").write_text(entry("Lifecycle") + entry("Configured"))
        plain(await registry.reload())
        assert registry.get("lifecycle") is kept
        assert (
            plain(registry.metadata_for("lifecycle"))["hook_stats"]["post_plan"]["invocations"] == 1
        )
        assert registry.names() == ["lifecycle", "configured"]
        assert methods() == ["on_enable", "on_reload"]


async def test_registry_reload_of_broken_manifest_keeps_state(registry_factory, entry, tmp_path):
    async with registry_factory(entry("Echo")) as registry:
        (tmp_path / "plugins.yaml").write_text("- name: [broken\n")
        with pytest.raises(ManifestError):
            plain(await registry.reload())
        assert registry.config_errors and "not valid YAML" in registry.config_errors[0]
        assert registry.get("echo") is not None
        (tmp_path / "plugins.yaml").write_text(entry("Echo"))
        plain(await registry.reload())
        assert registry.config_errors == []


RELOADABLE = """
from agent_pm.plugins import PluginBase

class Reloadable(PluginBase):
    name = "reloadable"
    hooks = ("post_plan",)

    async def on_reload(self):
        if {fail!r}:
            raise RuntimeError("on_reload broke")

    async def post_plan(self, **payload):
        return {answer!r}
"""


async def test_registry_reload_plugin_swaps_code_and_rolls_back(
    registry_factory, tmp_path, monkeypatch
) -> None:
    module = tmp_path / "reloadable_mod.py"
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(__import__("sys").modules, "reloadable_mod", raising=False)

    def write(answer: str, fail: bool = False, size_pad: str = "") -> None:
        module.write_text(RELOADABLE.format(answer=answer, fail=fail) + size_pad)

    write("v1")
    line = "- name: reloadable\n  module: reloadable_mod:Reloadable\n  enabled: true\n"
    async with registry_factory(line) as registry:
        assert (await registry.fire("post_plan"))[0].value == "v1"
        write("v2", size_pad="# grown\n")
        plain(await registry.reload_plugin("reloadable"))
        assert (await registry.fire("post_plan"))[0].value == "v2"
        write("v3", fail=True, size_pad="# grown again\n")
        with pytest.raises(LifecycleError, match="on_reload broke"):
            plain(await registry.reload_plugin("reloadable"))
        # The modules of the code that runs are back, so a later load does not pick up v3.
        running = type(registry.get("reloadable"))
        assert import_plugin_class("reloadable_mod:Reloadable") is running
        module.write_text("def broken(:\n")
        with pytest.raises(PluginLoadError, match="SyntaxError"):
            plain(await registry.reload_plugin("reloadable"))
        assert (await registry.fire("post_plan"))[0].value == "v2"
        stages = [e["stage"] for e in plain(registry.metadata_for("reloadable"))["errors"]]
    assert stages == ["on_reload", "reload"]


async def test_registry_reload_plugin_runs_lifecycle_in_order(
    registry_factory, entry, monkeypatch
) -> None:
    modules = __import__("sys").modules
    for name in [n for n in modules if n.startswith("tests.fixtures")]:
        monkeypatch.setitem(modules, name, modules[name])  # put the originals back afterwards
    async with registry_factory(entry("Lifecycle")) as registry:
        plain(await registry.reload_plugin("lifecycle"))
        new_class = type(registry.get("lifecycle"))
    assert methods() == ["on_enable", "on_disable"]  # the old class saw enable, then disable
    assert [m for _, m in new_class.calls] == ["on_enable", "on_reload", "on_disable"]


async def test_registry_install_validates_and_enforces_allowlist(
    registry_factory, tmp_path
) -> None:
    settings = Settings.from_env({"PLUGIN_INSTALL_ALLOW": "tests.fixtures"})
    async with registry_factory(settings_=settings) as registry:
        with pytest.raises(InstallRefusedError):
            plain(await registry.install("os.path:join"))
        with pytest.raises(ConfigValidationError):
            plain(await registry.install("tests.fixtures.plugins:Configured", config={"nope": 1}))
        meta = plain(await registry.install("tests.fixtures.plugins:Configured", enabled=True))
        assert (meta["name"], meta["state"], meta["hooks"]) == (
            "configured",
            "enabled",
            ["post_plan"],
        )
        with pytest.raises(PluginExistsError):
            plain(await registry.install("tests.fixtures.plugins:Configured"))
        Lifecycle.fail_on = "on_enable"
        meta = plain(await registry.install("tests.fixtures.plugins:Lifecycle", enabled=True))
        assert (meta["state"], meta["enabled"]) == ("disabled", False)
        assert meta["errors"][-1]["stage"] == "on_enable"
    assert set(manifest_state(tmp_path / "plugins.yaml")) == {"configured", "lifecycle"}


async def test_registry_refused_install_never_imports(registry_factory, tmp_path, monkeypatch):
    (tmp_path / "sideeffect_mod.py").write_text(
        "import pathlib\npathlib.Path(__file__).with_name('imported').touch()\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    async with registry_factory() as registry:
        with pytest.raises(InstallRefusedError):
            plain(await registry.install("sideeffect_mod:Plugin"))
    assert not (tmp_path / "imported").exists()


async def test_registry_emit_reaches_others_and_loops_are_cut(registry_factory, entry) -> None:
    async with registry_factory(entry("Ping", name="a"), entry("Ping", name="b")) as registry:
        results = await registry.fire("ping")
        assert {r.plugin for r in results} == {"a", "b"}
        errors = (
            plain(registry.metadata_for("a"))["errors"]
            + plain(registry.metadata_for("b"))["errors"]
        )
    assert all(r.status == "success" for r in results)
    assert any(e["stage"] == "emit" and "loop" in e["message"] for e in errors)
    assert "EmitLoopError" in repr(results) or any("EmitLoopError" in e["message"] for e in errors)


async def test_registry_emit_loop_error_is_raised_at_max_depth(registry_factory, entry) -> None:
    async with registry_factory(entry("Echo"), max_emit_depth=0) as registry:
        with pytest.raises(EmitLoopError):
            await registry.emit("echo", "post_plan", {})


async def test_registry_fire_nowait_from_sync_handler_runs_in_background(
    registry_factory, entry
) -> None:
    Collector.seen, Collector.got = [], anyio.Event()
    async with registry_factory(entry("Collector", name="a"), entry("Collector", name="b")) as r:
        results = await r.fire("relay", n=1)
        assert [res.value for res in results] == [True, True]
        with anyio.fail_after(5):
            await Collector.got.wait()
    assert Collector.seen == [{"n": 1}, {"n": 1}]


async def test_registry_fire_nowait_is_bounded(registry_factory, entry) -> None:
    async with registry_factory(entry("Hanging", timeout_seconds=30), max_background=2) as r:
        assert [r.fire_nowait("post_plan") for _ in range(3)] == [True, True, False]
        r._task_group.cancel_scope.cancel()


async def test_registry_state_changes_are_published_with_increasing_seq(
    registry_factory, entry
) -> None:
    async with registry_factory(entry("Echo")) as registry:
        with registry.bus.subscribe() as subscription:
            await registry.fire("post_plan")
            plain(await registry.set_enabled("echo", False))
            batch = subscription.drain()
    assert [type(m).__name__ for m in batch] == ["HookSample", "StateChange"]
    assert batch[0].seq < batch[1].seq
    assert batch[1].plugin.state == "disabled" and "hook_history" not in plain(batch[1].plugin)


async def test_registry_unparsable_manifest_at_start_is_reported_and_not_overwritten(
    tmp_path, settings
) -> None:
    path = tmp_path / "plugins.yaml"
    path.write_text("- name: [broken\n")
    async with PluginRegistry(path, settings) as registry:
        assert registry.names() == [] and "not valid YAML" in registry.config_errors[0]
        with pytest.raises(ManifestError, match="failed to load"):
            plain(await registry.install("agent_pm.plugins.builtin.nothing:X"))
    assert path.read_text() == "- name: [broken\n"


async def test_registry_manifest_hooks_override_the_class_hooks(registry_factory, entry) -> None:
    manifest = [entry("Echo", hooks=["pre_plan"]), entry("Echo", name="typo", hooks=["pre_pln"])]
    async with registry_factory(*manifest) as registry:
        assert await registry.fire("post_plan") == []
        assert [r.value for r in await registry.fire("pre_plan")] == ["pre"]
        typo = plain(registry.metadata_for("typo"))
    assert typo["state"] == "invalid"
    assert "'pre_pln' (Echo does not declare it in its hooks)" in typo["error"]


async def test_registry_plugin_base_defaults(registry_factory, entry) -> None:
    async with registry_factory(
        entry("Secretive", config={"secrets": {"API_TOKEN": "t0k3n"}})
    ) as r:
        plugin = r.get("secretive")
        assert plugin is not None
        assert plugin.get_secret("API_TOKEN") == "t0k3n"
        assert plugin.get_secret("NOPE", "fallback") == "fallback"
        assert plugin.missing_secrets() == []
        assert list(plugin.routes()) == []
        assert plugin.config == {}  # no Config struct: the config minus its secrets


async def test_registry_disable_waits_for_in_flight_calls_before_on_disable(
    registry_factory, tmp_path, monkeypatch
) -> None:
    (tmp_path / "inflight_mod.py").write_text(
        "from agent_pm.plugins import PluginBase\n"
        "class Slow(PluginBase):\n"
        "    hooks = ('post_plan',)\n"
        "    log = []\n"
        "    async def post_plan(self, entered, release):\n"
        "        entered.set()\n"
        "        await release.wait()\n"
        "        type(self).log.append('call finished')\n"
        "    def on_disable(self):\n"
        "        type(self).log.append('on_disable')\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    line = "- name: slow\n  module: inflight_mod:Slow\n  enabled: true\n"
    async with registry_factory(line) as registry:
        log = type(registry.get("slow")).log
        entered, release = anyio.Event(), anyio.Event()
        async with anyio.create_task_group() as group:
            group.start_soon(lambda: registry.fire("post_plan", entered=entered, release=release))
            await entered.wait()
            plain(await registry.set_enabled("slow", False))  # returns while the call still runs
            assert log == [] and await registry.fire("post_plan") == []
            release.set()
        with anyio.fail_after(5):
            while log != ["call finished", "on_disable"]:
                await anyio.wait_all_tasks_blocked()
