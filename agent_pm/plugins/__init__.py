"""Agent PM's plugin platform: the public API plugin authors and the service use."""

from __future__ import annotations

from agent_pm.errors import (
    AgentPMError,
    ConfigValidationError,
    EmitBudgetError,
    EmitLoopError,
    InstallRefusedError,
    LifecycleError,
    ManifestChangedError,
    ManifestError,
    PluginExistsError,
    PluginLoadError,
    PluginNotFoundError,
    RevisionConflictError,
    UnloadableChangeError,
)
from agent_pm.plugins.base import PluginBase, public
from agent_pm.plugins.bus import Bus, Lagged, StateChange, Subscription
from agent_pm.plugins.dispatch import HookResult
from agent_pm.plugins.paths import DataPath
from agent_pm.plugins.registry import PluginRegistry
from agent_pm.plugins.telemetry import HookSample

__all__ = [
    "AgentPMError",
    "Bus",
    "ConfigValidationError",
    "DataPath",
    "EmitBudgetError",
    "EmitLoopError",
    "HookResult",
    "HookSample",
    "InstallRefusedError",
    "Lagged",
    "LifecycleError",
    "ManifestChangedError",
    "ManifestError",
    "PluginBase",
    "PluginExistsError",
    "PluginLoadError",
    "PluginNotFoundError",
    "PluginRegistry",
    "RevisionConflictError",
    "StateChange",
    "Subscription",
    "UnloadableChangeError",
    "public",
]
