"""The admin sequence: full rollback on any exception, hook-name rules, bounded lifecycle calls
and a bounded emit fan-out."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest
from msgspec import to_builtins as plain

from agent_pm.errors import EmitBudgetError, LifecycleError, PluginLoadError
from agent_pm.plugins import PluginRegistry
from agent_pm.plugins.manifest import Manifest
from agent_pm.settings import Settings
from tests.fixtures.hardening import HangingEnable, Leaky, Spreader
from tests.fixtures.plugins import Lifecycle

pytestmark = pytest.mark.anyio

LEAKY = "tests.fixtures.hardening:Leaky"


@pytest.fixture(autouse=True)
def _fresh() -> Iterator[None]:
    Leaky.instances.clear()
    Spreader.calls = 0
    Lifecycle.calls.clear()
    yield
    Leaky.instances.clear()
    Lifecycle.calls.clear()


@pytest.fixture
def env_settings(tmp_path: Path) -> Settings:
    return Settings.from_env(
        {
            "PLUGIN_CONFIG_PATH": str(tmp_path / "plugins.yaml"),
            "PLUGIN_INSTALL_ALLOW": "tests.fixtures",
            "LEAKY_TOKEN": "first-token-abcdef",
        }
    )


class Boom(RuntimeError):
    """Not a platform error: the kind an unexpected failure raises."""


async def test_admin_unexpected_exception_mid_update_rolls_everything_back(
    env_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = env_settings.plugin_config_path
    path.write_text(f"- name: leaky\n  module: {LEAKY}\n  enabled: true\n")
    before = path.read_bytes()
    async with PluginRegistry(path, env_settings) as registry:
        running = registry.get("leaky")
        revision = registry.revision

        def explode(self: Manifest) -> None:
            raise Boom("disk controller on fire")

        monkeypatch.setattr(Manifest, "save", explode)
        with pytest.raises(Boom):
            await registry.update_config(
                "leaky", {"label": "new", "secrets": {"LEAKY_TOKEN": "second-token-xyz"}}
            )
        monkeypatch.undo()
        candidate = Leaky.instances[-1]
        assert candidate is not running and getattr(candidate, "disabled", False)
        assert registry.get("leaky") is running and not getattr(running, "disabled", False)
        assert registry.revision == revision
        meta = plain(registry.metadata_for("leaky"))
        assert meta["config"] == {} and meta["state"] == "enabled"
        [result] = await registry.fire("slow")
        # The running instance still redacts with the secrets it holds.
        assert result.value == "answered with ***"
        assert registry._records["leaky"].secrets.values["LEAKY_TOKEN"] == "first-token-abcdef"
    assert path.read_bytes() == before


def _explode(*args: object, **kwargs: object) -> None:
    raise Boom("unexpected")


@pytest.mark.parametrize("operation", ["enable", "install", "reload_plugin"])
async def test_admin_every_operation_stops_its_candidate_on_failure(
    env_settings: Settings, monkeypatch: pytest.MonkeyPatch, operation: str
) -> None:
    from agent_pm.plugins.lifecycle import Lifecycle as Runner

    path = env_settings.plugin_config_path
    enabled = str(operation == "reload_plugin").lower()
    path.write_text(
        f"- name: life\n  module: tests.fixtures.plugins:Lifecycle\n  enabled: {enabled}\n"
    )
    before = path.read_bytes()
    async with PluginRegistry(path, env_settings) as registry:
        running = registry.get("life")
        Lifecycle.calls.clear()
        monkeypatch.setattr(Manifest, "save", _explode)
        call = Runner.call
        seen: list[tuple[str, int]] = []  # the re-imported class keeps its own call log

        async def on_reload_explodes(self: Runner, record, instance, method: str) -> None:
            if method == "on_reload":
                _explode()
            seen.append((method, id(instance)))
            await call(self, record, instance, method)

        monkeypatch.setattr(Runner, "call", on_reload_explodes)
        with pytest.raises(Boom):
            if operation == "enable":
                await registry.set_enabled("life", True)
            elif operation == "install":
                await registry.install("tests.fixtures.plugins:Lifecycle", name="l2", enabled=True)
            else:
                await registry.reload_plugin("life")
        monkeypatch.undo()
        [(enable, candidate), (disable, stopped)] = seen
        assert (enable, disable) == ("on_enable", "on_disable") and candidate == stopped
        assert candidate != id(running)
        assert registry.get("life") is running and registry.names() == ["life"]
    assert path.read_bytes() == before


async def test_admin_reload_of_the_manifest_stops_candidates_when_a_later_one_fails(
    env_settings: Settings,
) -> None:
    path = env_settings.plugin_config_path
    path.write_text("- name: echo\n  module: tests.fixtures.plugins:Echo\n  enabled: true\n")
    async with PluginRegistry(path, env_settings) as registry:
        running = registry.get("echo")
        path.write_text(
            "- name: life\n  module: tests.fixtures.plugins:Lifecycle\n  enabled: true\n"
            "- name: echo\n  module: tests.fixtures.plugins:BrokenInit\n  enabled: true\n"
        )
        with pytest.raises(LifecycleError):
            await registry.reload()
        assert registry.get("echo") is running and registry.names() == ["echo"]
    assert [m for _, m in Lifecycle.calls] == ["on_enable", "on_disable"]


# -- hooks are only declared names ----------------------------------------------------------------

FORBIDDEN = [
    "on_enable",
    "on_disable",
    "on_reload",
    "bind",
    "routes",
    "emit",
    "get_secret",
    "missing_secrets",
    "_note",
    "__init__",
    "__class__",
    "post_plam",
]


@pytest.mark.parametrize("hook", FORBIDDEN)
async def test_admin_non_hook_names_are_refused_at_load_and_never_called(
    env_settings: Settings, hook: str
) -> None:
    path = env_settings.plugin_config_path
    path.write_text(
        "- name: life\n  module: tests.fixtures.plugins:Lifecycle\n  enabled: true\n"
        f"  hooks: [post_plan, {hook!r}]\n"
    )
    async with PluginRegistry(path, env_settings) as registry:
        meta = plain(registry.metadata_for("life"))
        assert meta["state"] == "invalid" and repr(hook) in meta["error"]
        assert await registry.fire(hook) == []
    assert Lifecycle.calls == []


async def test_admin_class_declaring_a_lifecycle_hook_is_refused(env_settings: Settings) -> None:
    path = env_settings.plugin_config_path
    path.write_text(
        "- name: m\n  module: tests.fixtures.hardening:MisdeclaredHooks\n  enabled: true\n"
    )
    async with PluginRegistry(path, env_settings) as registry:
        meta = plain(registry.metadata_for("m"))
        assert meta["state"] == "invalid" and "'on_enable' (a PluginBase method" in meta["error"]
        with pytest.raises(PluginLoadError, match="on_enable"):
            await registry.install("tests.fixtures.hardening:MisdeclaredHooks", name="m2")
        assert await registry.fire("on_enable") == []


# -- bounded lifecycle calls --------------------------------------------------------------------


async def test_admin_hanging_sync_on_enable_never_takes_more_than_its_slots(
    env_settings: Settings,
) -> None:
    path = env_settings.plugin_config_path
    path.write_text("- name: hang\n  module: tests.fixtures.hardening:HangingEnable\n")
    HangingEnable.release.clear()
    baseline = threading.active_count()
    try:
        async with PluginRegistry(path, env_settings) as registry:
            for _ in range(8):
                with pytest.raises(LifecycleError, match="on_enable timed out"):
                    await registry.set_enabled("hang", True)
            peak = threading.active_count()
            assert plain(registry.metadata_for("hang"))["state"] == "disabled"
    finally:
        HangingEnable.release.set()
    # Four thread slots per plugin, whatever the number of attempts.
    assert peak - baseline <= 4


# -- bounded emit fan-out -----------------------------------------------------------------------


async def test_admin_emit_fan_out_is_cut_by_a_total_budget(env_settings: Settings) -> None:
    path = env_settings.plugin_config_path
    path.write_text(
        "".join(
            f"- name: s{i}\n  module: tests.fixtures.hardening:Spreader\n  enabled: true\n"
            for i in range(5)
        )
    )
    async with PluginRegistry(path, env_settings, max_emit_calls=200) as registry:
        with anyio.fail_after(60):
            results = await registry.fire("spread")
        errors = [e for r in plain(registry.list_metadata(history=False)) for e in r["errors"]]
    # Four others at every level would make 4 + 16 + ... + 4**8 calls without the budget.
    assert 190 <= Spreader.calls <= 200
    assert len(results) == 5
    assert any("pass the budget of 200" in e["message"] for e in errors)


async def test_admin_emit_budget_error_is_clear_at_the_root(env_settings: Settings) -> None:
    path = env_settings.plugin_config_path
    path.write_text("- name: echo\n  module: tests.fixtures.plugins:Echo\n  enabled: true\n")
    async with PluginRegistry(path, env_settings, max_emit_calls=0) as registry:
        with pytest.raises(EmitBudgetError, match="budget of 0"):
            await registry.fire("post_plan")
