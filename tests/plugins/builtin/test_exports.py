from __future__ import annotations

from types import ModuleType

import agent_pm.plugins.builtin as builtin
from agent_pm.plugins.base import PluginBase


def test_all_lists_the_public_names() -> None:
    public = {
        name
        for name, value in vars(builtin).items()
        if not name.startswith("_") and not isinstance(value, ModuleType)
    } - {"annotations"}
    assert set(builtin.__all__) == public


def test_builtin_plugins_declare_their_names_and_hooks() -> None:
    plugins = [getattr(builtin, name) for name in builtin.__all__ if name.endswith("Plugin")]
    names = {plugin.name for plugin in plugins}
    assert names == {
        "feedback_collector",
        "slack_followup_alerts",
        "ticket_automation",
        "warehouse_export",
    }
    for plugin in plugins:
        assert issubclass(plugin, PluginBase)
        assert all(callable(getattr(plugin, hook)) for hook in plugin.hooks)
        assert plugin.Config is not None
        assert plugin(None).config == plugin.Config()
