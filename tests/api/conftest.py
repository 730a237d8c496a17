"""API fixtures: a registry on a test manifest, the app around it, clients and a live server."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette
from starlette.routing import Mount, Route, WebSocketRoute

from agent_pm.api import dashboard as dashboard_routes
from agent_pm.api._app import create_app
from agent_pm.plugins import PluginRegistry
from agent_pm.settings import Settings
from tests.fixtures.servers import live_server

READ_KEY = "read-key-for-tests"
ADMIN_KEY = "admin-key-for-tests"
READ = {"X-API-Key": READ_KEY}
ADMIN = {"X-API-Key": ADMIN_KEY}

MANIFEST = """\
# operators' comment
- name: echo
  module: tests.fixtures.plugins:Echo
  enabled: true
- name: strict
  module: tests.fixtures.route_plugins:Strict
  enabled: false
- name: routed
  module: tests.fixtures.route_plugins:Routed
  enabled: true
- name: secretive
  module: tests.fixtures.plugins:Secretive
  enabled: true
- name: unencodable
  module: tests.fixtures.route_plugins:Unencodable
  enabled: false
- name: broken
  module: tests.fixtures.does_not_exist:Nothing
"""


@pytest.fixture
def api_settings(tmp_path: Path) -> Settings:
    return Settings.from_env(
        {
            "PLUGIN_CONFIG_PATH": str(tmp_path / "plugins.yaml"),
            "DATA_DIR": str(tmp_path / "data"),
            "API_KEY": READ_KEY,
            "ADMIN_API_KEY": ADMIN_KEY,
            "PLUGIN_INSTALL_ALLOW": "tests.fixtures.plugins,tests.fixtures.route_plugins",
        }
    )


@pytest.fixture
def manifest_path(write_manifest: Callable[[str], Path]) -> Path:
    return write_manifest(MANIFEST)


@pytest.fixture
async def registry(manifest_path: Path, api_settings: Settings) -> AsyncIterator[PluginRegistry]:
    async with PluginRegistry(manifest_path, api_settings) as registry:
        yield registry


@pytest.fixture
async def app(registry: PluginRegistry, api_settings: Settings) -> AsyncIterator[Starlette]:
    """The app around ``registry``, its lifespan running (ASGITransport does not run it)."""
    app = create_app(api_settings, registry=registry)
    async with app.router.lifespan_context(app):
        yield app


@pytest.fixture
async def client(app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        yield client


@pytest.fixture
async def live_url(app: Starlette) -> AsyncIterator[str]:
    """The app served by a real uvicorn on a free loopback port."""
    async with live_server(app) as url:
        yield url


PARAMS = {"name": "echo", "hook": "post_plan", "id": "1", "digest": "0", "path": "dashboard.css"}
DASHBOARD_PATHS = frozenset(getattr(route, "path", "") for route in dashboard_routes.routes())


def is_dashboard(path: str) -> bool:
    """Whether ``path`` is one of the dashboard's own routes."""
    return path in DASHBOARD_PATHS


def every_endpoint(app: Starlette, *, dashboard: bool = False) -> list[tuple[str, str]]:
    """(method, concrete path) for every HTTP route of the API (or, with ``dashboard``, of the
    dashboard, which authenticates with its own session), HEAD aside."""
    endpoints = []
    for route in app.routes:
        if isinstance(route, Mount):
            assert route.path == "/static"  # the dashboard's assets, public by design
            continue
        assert isinstance(route, Route | WebSocketRoute)
        if isinstance(route, Route) and is_dashboard(route.path) == dashboard:
            path = re.sub(r"{(\w+)(?::\w+)?}", lambda m: PARAMS[m.group(1)], route.path)
            endpoints.extend(
                (method, path) for method in sorted(route.methods or ()) if method != "HEAD"
            )
    return endpoints
