"""The msgspec structs of the REST API: request bodies and response envelopes.

The OpenAPI document is generated from these, so their docstrings are the API's descriptions.
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec

from agent_pm.plugins.discovery import CatalogueEntry
from agent_pm.plugins.dispatch import HookResult
from agent_pm.plugins.manifest import ModulePath, PluginName

__all__ = [
    "Catalogue",
    "ConfigBody",
    "Health",
    "HookPayload",
    "HookResults",
    "InstallBody",
    "PluginEnvelope",
    "PluginHistory",
    "PluginList",
    "Removed",
]

Metadata = Annotated[dict[str, Any], msgspec.Meta(description="A plugin's registry metadata")]


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
    """Every plugin's metadata, in manifest order, the registry revision, and why the manifest
    file as it stands now could not be applied (empty when it was)."""

    plugins: list[Metadata]
    revision: int
    config_errors: list[str] = msgspec.field(default_factory=list)


class PluginEnvelope(msgspec.Struct):
    """One plugin's metadata."""

    plugin: Metadata


class PluginHistory(msgspec.Struct):
    """Recorded hook samples of one plugin, per hook, oldest first."""

    plugin: str
    history: dict[str, list[dict[str, Any]]]


class Catalogue(msgspec.Struct):
    """The installed ``agent_pm.plugins`` entry points."""

    entry_points: list[CatalogueEntry]


class Removed(msgspec.Struct):
    """The name of the plugin whose entry was removed."""

    removed: str


class HookResults(msgspec.Struct):
    """One result per active plugin subscribed to the hook."""

    results: list[HookResult]


class Health(msgspec.Struct):
    """The server is up."""

    status: str = "ok"
