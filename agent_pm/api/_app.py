"""The Starlette application: routes, middleware and the lifespan that runs the registry."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING

import anyio
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.gzip import GZipMiddleware
from starlette.routing import Match
from starlette.types import Scope

from agent_pm.api import _audit as audit
from agent_pm.api import _cluster as cluster
from agent_pm.api import _failures as failures
from agent_pm.api import _metrics as metrics
from agent_pm.api import _openapi as openapi
from agent_pm.api import _rest as rest
from agent_pm.api import _stream as stream
from agent_pm.api import dashboard
from agent_pm.api._auth import ApiKeys, AuthMiddleware, CredentialReader, Verdict, api_key_reader
from agent_pm.api._errors import CatchAllMiddleware, exception_handlers
from agent_pm.api._plugin_routes import PluginRoutes
from agent_pm.api._request_id import RequestIdMiddleware
from agent_pm.api._security import Throttle
from agent_pm.api._security_headers import SecurityHeadersMiddleware
from agent_pm.api._session import caller_from_session, sessions_for
from agent_pm.api._shared_guards import share_guards
from agent_pm.audit import AuditLog
from agent_pm.plugins.registry import PluginRegistry
from agent_pm.plugins.watcher import watch_manifest
from agent_pm.settings import Settings

if TYPE_CHECKING:
    from agent_pm.plugins.cluster.node import ClusterNode

__all__ = ["PUBLIC_PATHS", "create_app", "open_cluster"]

PUBLIC_PATHS = frozenset({"/health"})
# Answers of 1 KB or more (HTML pages, JSON listings) travel gzipped; WebSockets never are.
GZIP_MIN_BYTES = 1024
STREAM_CLOSE_SECONDS = 5.0


def session_reader(scope: Scope) -> Verdict:
    """The dashboard session, accepted for WebSocket handshakes only (the telemetry stream).

    REST requests need the API key: a cookie there would make them forgeable cross-site.
    """
    if scope["type"] != "websocket":
        return None
    return caller_from_session(scope)


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


def open_cluster(settings: Settings, manifest_path: Path) -> ClusterNode:
    """This process's node of the cluster sharing ``settings.redis_url``."""
    try:
        from agent_pm.plugins.cluster.node import ClusterNode
    except ModuleNotFoundError as exc:
        raise RuntimeError(
            f"cluster mode needs the Redis client ({exc.name}): install agent-pm[redis]"
        ) from None
    return ClusterNode(settings, manifest_path)


def create_app(
    settings: Settings | None = None,
    *,
    manifest_path: Path | str | None = None,
    registry: PluginRegistry | None = None,
    keys: ApiKeys | None = None,
    readers: Sequence[CredentialReader] = (),
    watch: bool = True,
) -> Starlette:
    """Build the operator app.

    Without ``registry`` the lifespan opens one on ``manifest_path`` (default: the settings'
    manifest) and closes it at shutdown; a given registry is the caller's to enter and leave.
    ``keys`` defaults to the settings' keys (a generated admin key when none is configured);
    ``readers`` are extra credential readers tried after the API key. ``watch`` applies edits of
    the manifest file made outside the service (only for a registry the app opens itself).
    """
    settings = settings or Settings.from_env()
    keys = keys or ApiKeys.from_settings(settings)
    histograms = metrics.HookHistograms()
    plugin_routes = PluginRoutes(lambda: app.state.registry)
    # The dashboard authenticates its own requests: a signed session cookie, plus CSRF token and
    # Origin checks on everything that changes state (agent_pm.api.dashboard). Its login page
    # and assets are reachable without one, but only its own routes: never a plugin's.
    dashboard_routes = dashboard.routes()

    def is_public(scope: Scope) -> bool:
        path = _route_path(scope)
        if path in PUBLIC_PATHS:
            return True
        if any(route.matches(scope)[0] != Match.NONE for route in dashboard_routes):
            return True
        # A plugin's public route never opens a path a core route answers: core routes win.
        core = any(route.matches(scope)[0] != Match.NONE for route in app.router.routes)
        return not core and plugin_routes.is_public(scope)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            if registry is None:
                path = Path(manifest_path or settings.plugin_config_path)
                node = None
                if settings.redis_url:
                    node = open_cluster(settings, path)
                    guards = (sessions_for(app), throttle, settings.redis_prefix)
                    share_guards(node.events, *guards)
                    app.state.cluster = await stack.enter_async_context(node)
                opened = PluginRegistry(
                    path,
                    settings,
                    bus=node.bus if node else None,
                    store=node.control if node else None,
                    audit_log=audit_log,
                )
                app.state.registry = await stack.enter_async_context(opened)
                if node is not None:
                    node.attach(app.state.registry)
            async with anyio.create_task_group() as group:
                await group.start(histograms.run, app.state.registry.bus)
                # Only a registry this app opened on its manifest file is the app's to watch.
                if watch and registry is None:
                    await group.start(watch_manifest, app.state.registry, audit_log)
                if keys.named is not None:
                    await group.start(keys.named.watch)
                yield
                # Stream clients hear "going away" (1001) before the registry stops.
                with anyio.move_on_after(STREAM_CLOSE_SECONDS):
                    await stream.close_streams(app)
                group.cancel_scope.cancel()

    operations = (
        *rest.OPERATIONS,
        *failures.OPERATIONS,
        metrics.OPERATION,
        audit.OPERATION,
        cluster.OPERATION,
    )
    throttle = Throttle()
    audit_log = AuditLog(settings.data_dir / "audit")
    app = Starlette(
        routes=[
            *rest.routes(),
            *failures.routes(),
            *metrics.routes(histograms),
            *audit.routes(),
            *cluster.routes(),
            *openapi.routes(operations, _version()),
            *stream.routes(),
            *dashboard_routes,
        ],
        middleware=[
            Middleware(GZipMiddleware, minimum_size=GZIP_MIN_BYTES),
            Middleware(RequestIdMiddleware),
            Middleware(SecurityHeadersMiddleware),
            Middleware(CatchAllMiddleware),
            Middleware(
                AuthMiddleware,
                readers=[api_key_reader(keys), session_reader, *readers],
                is_public=is_public,
                throttle=throttle,
            ),
        ],
        exception_handlers=exception_handlers(),
        lifespan=lifespan,
    )
    # Whatever no core route matches falls through to the routes of the active plugins.
    app.router.default = plugin_routes
    app.state.registry = registry
    app.state.cluster = None
    app.state.settings = settings
    app.state.api_keys = keys
    app.state.throttle = throttle
    app.state.audit = audit_log
    app.state.plugin_routes = plugin_routes
    app.state.watch = watch
    return app
