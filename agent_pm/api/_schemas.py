"""The msgspec structs of the REST API: request bodies and response envelopes.

The OpenAPI document is generated from these, so their docstrings are the API's descriptions.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from agent_pm.api._figures import FigureScope
from agent_pm.plugins.discovery import CatalogueEntry
from agent_pm.plugins.dispatch import HookResult
from agent_pm.plugins.health import Health as PluginHealth
from agent_pm.plugins.info import PluginInfo
from agent_pm.plugins.manifest import HookName, ModulePath, PluginName
from agent_pm.plugins.quarantine import QuarantineInfo
from agent_pm.plugins.telemetry import HistoryEntry
from agent_pm.plugins.windows import WindowName, WindowPoint, WindowStats

__all__ = [
    "BusHealth",
    "Catalogue",
    "ConfigBody",
    "Health",
    "HookPayload",
    "HookResults",
    "HookSeries",
    "InstallBody",
    "IsolationBody",
    "PluginEnvelope",
    "PluginHistory",
    "PluginList",
    "PluginStats",
    "QuarantineReset",
    "Removed",
]


class InstallBody(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Install by ``entry_point`` (from the catalogue) or ``module`` (``pkg.mod:Class``)."""

    entry_point: str | None = None
    module: ModulePath | None = None
    name: PluginName | None = None
    enabled: bool = False
    description: str | None = None
    config: dict[str, Any] | None = None


class ConfigBody(msgspec.Struct, forbid_unknown_fields=True):
    """The new config; it replaces the old one and is validated against the plugin's schema."""

    config: dict[str, Any]


class HookPayload(msgspec.Struct):
    """Documentation stand-in: the body of ``/hooks/{hook}`` is any JSON object (the payload)."""


class PluginList(msgspec.Struct):
    """Every plugin's metadata, in manifest order, the registry revision, why the manifest
    file as it stands now could not be applied (empty when it was), and whose figures the
    stats, windows and health are (``figures``)."""

    plugins: list[PluginInfo]
    revision: int
    config_errors: list[str] = msgspec.field(default_factory=list)
    figures: FigureScope = msgspec.field(default_factory=FigureScope)


class PluginEnvelope(msgspec.Struct):
    """One plugin's metadata."""

    plugin: PluginInfo


class PluginHistory(msgspec.Struct):
    """Recorded hook samples of one plugin, per hook, oldest first."""

    plugin: str
    history: dict[str, list[HistoryEntry]]


class HookSeries(msgspec.Struct):
    """One hook over the window: totals, the series, and its health and breaker now; in a
    cluster's sum, ``nodes`` breaks the totals down per node."""

    stats: WindowStats
    series: list[WindowPoint]
    health: PluginHealth | None = None
    quarantine: QuarantineInfo | None = None
    nodes: dict[str, WindowStats] = msgspec.field(default_factory=dict)


class PluginStats(msgspec.Struct):
    """Windowed telemetry of one plugin's hooks, each cut into ``points`` points, and whose
    figures they are (``figures``)."""

    plugin: str
    window: WindowName
    points: int
    health: PluginHealth
    hooks: dict[str, HookSeries]
    figures: FigureScope = msgspec.field(default_factory=FigureScope)


class QuarantineReset(msgspec.Struct, forbid_unknown_fields=True):
    """Optional body of a quarantine reset: only this hook's breaker (all without it)."""

    hook: HookName | None = None


class IsolationBody(msgspec.Struct, forbid_unknown_fields=True):
    """Where to move a plugin: ``process`` (its own worker) or back ``inline``; runtime state,
    the manifest is not written."""

    mode: Literal["inline", "process"]


class Catalogue(msgspec.Struct):
    """The installed ``agent_pm.plugins`` entry points."""

    entry_points: list[CatalogueEntry]


class Removed(msgspec.Struct):
    """The name of the plugin whose entry was removed."""

    removed: str


class HookResults(msgspec.Struct):
    """One result per active plugin subscribed to the hook."""

    results: list[HookResult]


class BusHealth(msgspec.Struct):
    """The telemetry bus: ``embedded`` (this process only) or ``redis`` (shared by a cluster).

    For Redis, ``state`` is the link's (``up``, ``connecting``, ``down``) and the counters say
    how many messages this node forwarded to the stream, received from other nodes, dropped,
    and published locally while Redis was away.
    """

    backend: Literal["embedded", "redis"] = "embedded"
    state: Literal["up", "connecting", "down"] = "up"
    node: str | None = None
    forwarded: int = 0
    received: int = 0
    dropped: int = 0
    local: int = 0
    pending: int = 0
    reconnects: int = 0


class Health(msgspec.Struct):
    """The server is up; ``degraded`` while its cluster bus is not connected."""

    status: Literal["ok", "degraded"] = "ok"
    bus: BusHealth = msgspec.field(default_factory=BusHealth)
