"""A stand-in application for dashboard tests: dashboard routes, a tiny auth layer, a registry.

The real application (``create_app``) adds the REST API and its own auth middleware; this one
reads the same two credentials (``X-API-Key`` and the session cookie) the way that middleware is
expected to, and offers test-only endpoints that stand in for the REST API (firing a hook,
toggling a plugin) and one that drops every live subscription.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from agent_pm.api import dashboard
from agent_pm.api._security import Throttle
from agent_pm.api._security_headers import SecurityHeadersMiddleware
from agent_pm.api._session import caller_from_session, sessions_for
from agent_pm.audit import AuditLog
from agent_pm.plugins import PluginRegistry
from agent_pm.settings import Settings

READ_KEY = "read-key-0123456789"
ADMIN_KEY = "admin-key-0123456789"
SECRET_VALUE = "s3cr3t-token-value"
PUBLIC_PREFIXES = ("/login", "/static/")

MANIFEST = f"""\
- name: echo
  module: tests.fixtures.plugins:Echo
  enabled: true
- name: configured
  module: tests.fixtures.plugins:Configured
  enabled: true
  config:
    channel: "#ops"
    retries: 2
- name: failing
  module: tests.fixtures.plugins:Failing
  enabled: true
- name: secretive
  module: tests.fixtures.plugins:Secretive
  enabled: true
  config:
    secrets:
      API_TOKEN: {SECRET_VALUE}
- name: needs_token
  module: tests.fixtures.plugins:Secretive
  enabled: true
- name: broken
  module: tests.fixtures.plugins:NotAPlugin
  enabled: true
"""

# One plugin failing on two hooks, each quarantined after three calls, and a healthy one.
TWICE = """\
- name: twice
  module: tests.fixtures.plugins:FailingTwice
  enabled: true
  quarantine: {min_calls: 3, cooldown_seconds: 600}
- name: echo
  module: tests.fixtures.plugins:Echo
  enabled: true
"""


def dashboard_settings(manifest: Path) -> Settings:
    return Settings.from_env(
        {
            "PLUGIN_CONFIG_PATH": str(manifest),
            "API_KEY": READ_KEY,
            "ADMIN_API_KEY": ADMIN_KEY,
            "SESSION_SECRET": "test-session-secret",
            "DATA_DIR": str(manifest.parent / "data"),
        }
    )


class CredentialMiddleware:
    """Deny by default; the role comes from ``X-API-Key`` or, failing that, the session cookie."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        caller = None
        for name, value in scope.get("headers", ()):
            if name == b"x-api-key":
                caller = sessions_for(scope["app"]).keys.caller_for(value.decode("latin-1"))
        caller = caller or caller_from_session(scope)
        role = caller.role if caller else None
        scope.setdefault("state", {})["role"] = role
        path = scope["path"]
        if role is None and not path.startswith(PUBLIC_PREFIXES):
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1008, "reason": ""})
                return
            if path == "/dashboard":
                response: Any = RedirectResponse("/login", 303)
            else:
                response = PlainTextResponse("unauthorized", 401)
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


async def fire_hook(request: Request) -> JSONResponse:
    results = await request.app.state.registry.fire(request.path_params["hook"], plan={"n": 1})
    return JSONResponse([r.status for r in results])


async def toggle(request: Request) -> JSONResponse:
    if request.scope["state"]["role"] != "admin":
        return JSONResponse({"error": "admin only"}, 403)
    enabled = request.path_params["action"] == "enable"
    meta = await request.app.state.registry.set_enabled(request.path_params["name"], enabled)
    return JSONResponse({"state": meta.state})


async def drop_live(request: Request) -> JSONResponse:
    """End every bus subscription, as a restarting bus backend would: live pages must reconnect."""
    request.app.state.registry.bus.close()
    return JSONResponse({"dropped": True})


def build_app(
    manifest: Path, settings: Settings | None = None, clock: Callable[[], float] = time.time
) -> Starlette:
    settings = settings or dashboard_settings(manifest)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with PluginRegistry(manifest, settings, clock=clock) as registry:
            app.state.registry = registry
            yield

    app = Starlette(
        routes=[
            *dashboard.routes(),
            Route("/hooks/{hook}", fire_hook, methods=["POST"]),
            Route("/plugins/{name}/{action:str}", toggle, methods=["POST"]),
            Route("/test/drop-live", drop_live, methods=["POST"]),
        ],
        middleware=[Middleware(SecurityHeadersMiddleware), Middleware(CredentialMiddleware)],
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.throttle = Throttle()
    app.state.audit = AuditLog(settings.data_dir / "audit")
    return app
