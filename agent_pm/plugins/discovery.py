"""The catalogue of installable plugins: the ``agent_pm.plugins`` entry-point group.

Loading an entry point imports its module, which is slow and may fail; every entry is loaded on
its own so one broken package never hides the others. The catalogue is cached until the set of
installed distributions changes (a ``pip install`` or uninstall), which is cheap to check.
"""

from __future__ import annotations

import inspect
import sys
import threading
from collections.abc import Collection
from importlib import metadata
from typing import Any

import msgspec

from agent_pm.plugins.base import PluginBase
from agent_pm.plugins.dispatch import describe
from agent_pm.plugins.loader import config_schema

__all__ = ["ENTRY_POINT_GROUP", "CatalogueEntry", "discover_plugins"]

ENTRY_POINT_GROUP = "agent_pm.plugins"


class CatalogueEntry(msgspec.Struct, kw_only=True):
    """One entry point of the catalogue; ``error`` says why it could not be loaded."""

    entry_point: str
    module: str
    plugin_name: str | None = None
    description: str = ""
    hooks: list[str] = msgspec.field(default_factory=list)
    required_secrets: list[str] = msgspec.field(default_factory=list)
    config_schema: dict[str, Any] | None = None
    distribution: str | None = None
    version: str | None = None
    configured: bool = False
    error: str | None = None


_lock = threading.Lock()
_cache: tuple[Any, list[CatalogueEntry]] | None = None


def _installed() -> Any:
    """A fingerprint of the installed distributions and where they were found."""
    dists = metadata.distributions()
    found = {(d.metadata["Name"], d.version, str(d.locate_file(""))) for d in dists}
    return tuple(sys.path), frozenset(found)


def _describe_entry(entry_point: metadata.EntryPoint) -> CatalogueEntry:
    dist = entry_point.dist
    entry = CatalogueEntry(
        entry_point=entry_point.name,
        module=entry_point.value,
        distribution=dist.metadata["Name"] if dist is not None else None,
        version=dist.version if dist is not None else None,
    )
    if not entry_point.attr:
        entry.error = "entry point must name a class (module:Class)"
        return entry
    try:
        cls = entry_point.load()
    except Exception as exc:
        entry.error = f"cannot load: {describe(exc)}"
        return entry
    if not (inspect.isclass(cls) and issubclass(cls, PluginBase)):
        entry.error = f"{entry_point.value} is not a PluginBase subclass"
        return entry
    entry.plugin_name = cls.name or None
    entry.description = cls.description
    entry.hooks = list(cls.hooks)
    entry.required_secrets = list(cls.required_secrets)
    entry.config_schema = config_schema(cls)
    return entry


def _catalogue() -> list[CatalogueEntry]:
    global _cache
    with _lock:
        fingerprint = _installed()
        if _cache is None or _cache[0] != fingerprint:
            entry_points = metadata.entry_points(group=ENTRY_POINT_GROUP)
            _cache = fingerprint, [_describe_entry(ep) for ep in entry_points]
        return _cache[1]


def discover_plugins(configured: Collection[str] = ()) -> list[CatalogueEntry]:
    """The catalogue, sorted by entry point.

    ``configured`` holds the manifest's plugin names and modules: an entry whose plugin name or
    module is among them is marked ``configured``.

    Blocking (imports, file system): call it from a worker thread in async code.
    """
    names = frozenset(configured)
    entries = sorted(_catalogue(), key=lambda e: (e.entry_point, e.module))
    return [
        msgspec.structs.replace(
            entry, configured=entry.plugin_name in names or entry.module in names
        )
        for entry in entries
    ]
