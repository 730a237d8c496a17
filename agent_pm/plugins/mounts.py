"""Where a plugin's routes are mounted, and the path prefixes reserved for the service itself.

A plugin's routes live under ``/plugins/<name>`` unless its class sets ``route_prefix``. A custom
prefix may not be, or sit inside, a path the service answers itself (:data:`RESERVED_PREFIXES`):
there a plugin route could shadow a core page or borrow its authentication rules. It must also
be plain: ``/``-separated segments of letters, digits and ``._~-``, none of them ``.`` or
``..``, and nothing that decodes differently (no ``%``), so no spelling of the same path escapes
the check. Such a class is refused when it is loaded, so it can neither be installed nor enabled.
"""

from __future__ import annotations

import re

from agent_pm.errors import PluginLoadError
from agent_pm.plugins.base import PluginBase

__all__ = ["RESERVED_PREFIXES", "check_route_prefix", "mount_prefix"]

RESERVED_PREFIXES = (
    "/audit",
    "/cluster",
    "/dashboard",
    "/health",
    "/hooks",
    "/login",
    "/logout",
    "/metrics",
    "/openapi.json",
    "/plugins",
    "/static",
)
_SEGMENT = re.compile(r"[A-Za-z0-9._~-]+")
MAX_PREFIX_LENGTH = 200


def check_route_prefix(cls: type[PluginBase]) -> None:
    """Refuse ``cls`` (``PluginLoadError``) when its ``route_prefix`` is malformed or reserved."""
    prefix = cls.route_prefix
    if prefix is None:
        return
    where = f"{cls.__module__}.{cls.__qualname__}.route_prefix"
    if not isinstance(prefix, str) or not prefix.startswith("/") or len(prefix) > MAX_PREFIX_LENGTH:
        raise PluginLoadError(f"{where} must be a path starting with '/', got {prefix!r}")
    segments = prefix.strip("/").split("/")
    if segments == [""]:
        raise PluginLoadError(f"{where} '/' would put the plugin's routes over every core path")
    if any(not _SEGMENT.fullmatch(s) or s in (".", "..") for s in segments):
        raise PluginLoadError(
            f"{where} {prefix!r}: use segments of letters, digits and ._~- (no '.', '..', '%')"
        )
    first = "/" + segments[0].lower()
    if first in RESERVED_PREFIXES:
        raise PluginLoadError(
            f"{where} {prefix!r} is inside the core path {first}; choose another prefix "
            "(without one, the routes go under /plugins/<name>)"
        )


def mount_prefix(name: str, cls: type[PluginBase]) -> str:
    """The path ``cls``'s routes are mounted at for the plugin called ``name``."""
    check_route_prefix(cls)
    if cls.route_prefix is None:
        return f"/plugins/{name}"
    return "/" + cls.route_prefix.strip("/")
