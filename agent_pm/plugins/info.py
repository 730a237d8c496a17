"""Plugin metadata as typed structs: what the registry reports about a plugin, on every surface.

REST, the telemetry stream, the dashboard and the CLI all show these structs, so the OpenAPI
document describes every field. ``config`` stays a plain mapping: it is the plugin's own schema.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

import msgspec

from agent_pm.plugins.health import Health
from agent_pm.plugins.quarantine import QuarantineInfo
from agent_pm.plugins.telemetry import ErrorInfo, HistoryEntry, HookStatsInfo
from agent_pm.plugins.windows import RECENT_WINDOW, WindowName, WindowStats

__all__ = [
    "HistoryEntry",
    "HookStatsInfo",
    "IsolationInfo",
    "PluginInfo",
    "PluginState",
    "SecretsInfo",
]

PluginState = Literal["enabled", "disabled", "failed", "invalid"]


class SecretsInfo(msgspec.Struct, frozen=True):
    """The secrets the plugin class requires, and those no source provides."""

    required: list[str] = msgspec.field(default_factory=list)
    missing: list[str] = msgspec.field(default_factory=list)


class IsolationInfo(msgspec.Struct, kw_only=True):
    """Where a plugin runs and why: the ``isolation`` block of its metadata.

    ``mode`` is where it runs now, ``declared`` what its manifest entry (or
    ``ISOLATION_DEFAULT``) asks for. ``promoted`` is true while the platform has moved an
    ``auto`` plugin to a worker process; ``why``, ``when`` and ``by`` (``platform`` or
    ``operator``) describe the last move, ``promotions`` counts the platform's, and no automatic
    promotion happens before ``hold_until``. The worker fields (``state`` to ``cpu_seconds``)
    are set in ``mode`` ``process`` only; times are UTC.
    """

    mode: Literal["inline", "process"] = "inline"
    declared: Literal["inline", "process", "auto"] = "inline"
    promoted: bool = False
    why: str | None = None
    when: datetime | None = None
    by: Literal["platform", "operator"] | None = None
    promotions: int = 0
    hold_until: datetime | None = None
    state: Literal["running", "restarting", "stopped"] | None = None
    pid: int | None = None
    restarts: int = 0
    last_exit: str | None = None
    memory_mb: int | None = None
    cpu_seconds: float | None = None


class PluginInfo(msgspec.Struct, kw_only=True):
    """Everything the registry reports about one manifest entry; secrets are masked.

    ``state`` is the admin state, ``health`` what the plugin is doing now (worst of its hooks).
    ``hook_windows`` covers ``window``; ``hook_history`` is present only when asked for.
    ``state`` ``removed`` only appears in the stream, when an entry was deleted.
    """

    name: str
    module: str | None = None
    description: str = ""
    enabled: bool = False
    config: dict[str, Any] = msgspec.field(default_factory=dict)
    active: bool = False
    state: PluginState | Literal["removed"] = "disabled"
    invalid: bool = False
    error: str | None = None
    hooks: list[str] = msgspec.field(default_factory=list)
    secrets: SecretsInfo = msgspec.field(default_factory=SecretsInfo)
    hook_stats: dict[str, HookStatsInfo] = msgspec.field(default_factory=dict)
    errors: list[ErrorInfo] = msgspec.field(default_factory=list)
    timeout_seconds: float = 0.0
    # The JSON Schema of the plugin class's config; ``None`` without one or when not imported.
    config_schema: dict[str, Any] | None = None
    health: Health = msgspec.field(default_factory=lambda: Health("disabled", "not enabled"))
    hook_health: dict[str, Health] = msgspec.field(default_factory=dict)
    quarantine: dict[str, QuarantineInfo] = msgspec.field(default_factory=dict)
    window: WindowName = RECENT_WINDOW
    hook_windows: dict[str, WindowStats] = msgspec.field(default_factory=dict)
    isolation: IsolationInfo = msgspec.field(default_factory=IsolationInfo)
    # How long its inline async handlers' steps held the loop; ``None`` while not measured.
    loop_blocks: dict[str, Any] | None = None
    hook_history: dict[str, list[HistoryEntry]] | msgspec.UnsetType = msgspec.UNSET
