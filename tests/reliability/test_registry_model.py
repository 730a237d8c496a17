"""A model-based test: any sequence of admin operations keeps the registry, the manifest on disk
and a plain model in agreement, and a stale revision never changes anything."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import pytest
from anyio.from_thread import BlockingPortal, start_blocking_portal
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule
from msgspec import to_builtins as plain

from agent_pm.errors import PluginExistsError, PluginNotFoundError, RevisionConflictError
from agent_pm.plugins import PluginRegistry
from agent_pm.plugins.manifest import Manifest
from agent_pm.settings import Settings

NAMES = st.sampled_from(["alpha", "beta", "gamma"])
CLASSES = {"Configured": {"channel": "#general", "retries": 3}, "Echo": {}}


class RegistryModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.directory = tempfile.TemporaryDirectory()
        self.path = Path(self.directory.name) / "plugins.yaml"
        self.path.write_text("# operators' notes survive every write\n[]\n")
        self.settings = Settings.from_env({"PLUGIN_INSTALL_ALLOW": "tests.fixtures"})
        self.portal_cm = start_blocking_portal()
        self.portal: BlockingPortal = self.portal_cm.__enter__()
        self.model: dict[str, dict[str, Any]] = {}
        self.classes: dict[str, str] = {}
        self._open()

    def _open(self) -> None:
        self.registry_cm = self.portal.wrap_async_context_manager(
            PluginRegistry(self.path, self.settings)
        )
        self.registry = self.registry_cm.__enter__()

    def teardown(self) -> None:
        self.registry_cm.__exit__(None, None, None)
        self.portal_cm.__exit__(None, None, None)
        self.directory.cleanup()

    def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return self.portal.call(lambda: getattr(self.registry, method)(*args, **kwargs))

    def revision(self, stale: bool) -> int:
        return self.registry.revision - 1 if stale else self.registry.revision

    @rule(name=NAMES, cls=st.sampled_from(sorted(CLASSES)), enabled=st.booleans())
    def install(self, name: str, cls: str, enabled: bool) -> None:
        module = f"tests.fixtures.plugins:{cls}"
        if name in self.model:
            with pytest.raises(PluginExistsError):
                self.call("install", module, name=name, enabled=enabled)
            return
        self.call("install", module, name=name, enabled=enabled)
        self.model[name] = {"enabled": enabled, "config": {}}
        self.classes[name] = cls

    @rule(name=NAMES, enabled=st.booleans(), stale=st.booleans())
    def set_enabled(self, name: str, enabled: bool, stale: bool) -> None:
        if name not in self.model:
            with pytest.raises(PluginNotFoundError):
                self.call("set_enabled", name, enabled)
        elif stale:
            with pytest.raises(RevisionConflictError):
                self.call("set_enabled", name, enabled, revision=self.revision(True))
        else:
            self.call("set_enabled", name, enabled, revision=self.revision(False))
            self.model[name]["enabled"] = enabled

    @rule(name=NAMES, retries=st.integers(0, 9), stale=st.booleans())
    def update_config(self, name: str, retries: int, stale: bool) -> None:
        config = {"retries": retries}
        if name not in self.model:
            with pytest.raises(PluginNotFoundError):
                self.call("update_config", name, config)
        elif stale:
            with pytest.raises(RevisionConflictError):
                self.call("update_config", name, config, revision=self.revision(True))
        else:
            self.call("update_config", name, config)
            self.model[name]["config"] = config

    @rule(name=NAMES)
    def remove(self, name: str) -> None:
        if name not in self.model:
            with pytest.raises(PluginNotFoundError):
                self.call("remove", name)
            return
        self.call("remove", name)
        del self.model[name]

    @rule()
    def reload(self) -> None:
        self.call("reload")

    @rule()
    def restart_from_disk(self) -> None:
        self.registry_cm.__exit__(None, None, None)
        self._open()

    @invariant()
    def registry_manifest_and_model_agree(self) -> None:
        registry = {
            m["name"]: {"enabled": m["enabled"], "config": m["config"]}
            for m in plain(self.registry.list_metadata(history=False))
        }
        on_disk = {
            item.entry.name: {"enabled": item.entry.enabled, "config": item.entry.config}
            for item in Manifest.load(self.path).items()
            if item.entry is not None
        }
        assert registry == on_disk == self.model
        active = {
            m["name"] for m in plain(self.registry.list_metadata(history=False)) if m["active"]
        }
        assert active == {name for name, m in self.model.items() if m["enabled"]}
        assert "# operators' notes survive every write" in self.path.read_text()


RegistryModel.TestCase.settings = settings(
    max_examples=60,
    stateful_step_count=20,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestRegistryModel = RegistryModel.TestCase
