"""Routes contributed by active plugins, mounted under their prefix while they are active.

:class:`PluginRoutes` is an ASGI app the main router falls through to. Before each request it
compares the registry's revision with the one its table was built for and rebuilds when they
differ: every enable, disable, reload or removal bumps the revision, so a plugin's routes appear
and vanish with it, without a restart. The rebuild is synchronous, so no request ever sees a
half-built table.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from starlette.routing import BaseRoute, Match, Mount, Router
from starlette.types import Receive, Scope, Send

from agent_pm.plugins.mounts import mount_prefix
from agent_pm.plugins.registry import PluginRegistry

__all__ = ["PluginRoutes", "is_public_route"]

logger = logging.getLogger(__name__)


def is_public_route(route: BaseRoute, scope: Scope) -> bool:
    """Whether ``scope`` fully matches ``route`` and the route (or its mount) is ``public``."""
    match, child = route.matches(scope)
    if match != Match.FULL:
        return False
    if getattr(route, "agent_pm_public", False):
        return True
    if isinstance(route, Mount):
        inner = {**scope, **child}
        return any(is_public_route(sub, inner) for sub in route.routes)
    return False


class PluginRoutes:
    """The plugin route table, kept in step with ``registry.revision``."""

    def __init__(self, registry: Callable[[], PluginRegistry]) -> None:
        self._registry = registry
        self._revision: int | None = None
        self._router = Router()

    @property
    def mounts(self) -> Sequence[BaseRoute]:
        """The current mounts, one per active plugin with routes."""
        self._refresh()
        return self._router.routes

    def _refresh(self) -> None:
        registry = self._registry()
        if registry.revision == self._revision:
            return
        mounts: list[BaseRoute] = []
        for name, plugin in registry.active_plugins():
            try:
                plugin_routes = list(plugin.routes())
                prefix = mount_prefix(name, type(plugin))
            except Exception:
                logger.exception("plugin %s: its routes are not mounted", name)
                continue
            if plugin_routes:
                mounts.append(Mount(prefix, routes=plugin_routes, name=name))
        self._router = Router(mounts)
        self._revision = registry.revision

    def is_public(self, scope: Scope) -> bool:
        """Whether a public plugin route would answer ``scope``."""
        return any(is_public_route(mount, scope) for mount in self.mounts)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self._refresh()
        await self._router(scope, receive, send)
