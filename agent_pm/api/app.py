"""The Starlette application: routes, middleware and the lifespan that runs the registry."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from importlib import metadata
from pathlib import Path

import anyio
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import Match
from starlette.types import Scope

from agent_pm.api import dashboard, metrics, openapi, rest, stream
from agent_pm.api.auth import ApiKeys, AuthMiddleware, CredentialReader, api_key_reader
from agent_pm.api.errors import CatchAllMiddleware, exception_handlers
from agent_pm.api.plugin_routes import PluginRoutes
from agent_pm.plugins.registry import PluginRegistry
from agent_pm.settings import Settings

__all__ = ["PUBLIC_PATHS", "create_app"]

PUBLIC_PATHS = frozenset({"/health"})


def _route_path(scope: Scope) -> str:
    """The path below the app's mount point (``root_path``), as routing sees it."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    return path[len(root) :] if root and path.startswith(root) else path


def _version() -> str:
    try:
        return metadata.version("agent-pm")
    except metadata.PackageNotFoundError:
        return "0"


def create_app(
    settings: Settings | None = None,
    *,
    manifest_path: Path | str | None = None,
    registry: PluginRegistry | None = None,
    keys: ApiKeys | None = None,
    readers: Sequence[CredentialReader] = (),
    demo: bool = False,
    watch: bool = True,
) -> Starlette:
    """Build the operator app.

    Without ``registry`` the lifespan opens one on ``manifest_path`` (default: the settings'
    manifest) and closes it at shutdown; a given registry is the caller's to enter and leave.
    ``keys`` defaults to the settings' keys (a generated admin key when none is configured);
    ``readers`` are extra credential readers tried after the API key. ``demo`` and ``watch``
    are recorded on ``app.state`` for the traffic source and the manifest watcher.
    """
    settings = settings or Settings.from_env()
    keys = keys or ApiKeys.from_settings(settings)
    histograms = metrics.HookHistograms()
    plugin_routes = PluginRoutes(lambda: app.state.registry)

    def is_public(scope: Scope) -> bool:
        if _route_path(scope) in PUBLIC_PATHS:
            return True
        # A plugin's public route never opens a path a core route answers: core routes win.
        core = any(route.matches(scope)[0] != Match.NONE for route in app.router.routes)
        return not core and plugin_routes.is_public(scope)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            if registry is None:
                opened = PluginRegistry(manifest_path, settings)
                app.state.registry = await stack.enter_async_context(opened)
            async with anyio.create_task_group() as group:
                await group.start(histograms.run, app.state.registry.bus)
                yield
                group.cancel_scope.cancel()

    operations = (*rest.OPERATIONS, metrics.OPERATION)
    app = Starlette(
        routes=[
            *rest.routes(),
            *metrics.routes(histograms),
            *openapi.routes(operations, _version()),
            *stream.routes(),
            *dashboard.routes(),
        ],
        middleware=[
            Middleware(CatchAllMiddleware),
            Middleware(
                AuthMiddleware, readers=[api_key_reader(keys), *readers], is_public=is_public
            ),
        ],
        exception_handlers=exception_handlers(),
        lifespan=lifespan,
    )
    # Whatever no core route matches falls through to the routes of the active plugins.
    app.router.default = plugin_routes
    app.state.registry = registry
    app.state.settings = settings
    app.state.api_keys = keys
    app.state.plugin_routes = plugin_routes
    app.state.demo = demo
    app.state.watch = watch
    return app
