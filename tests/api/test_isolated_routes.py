"""An isolated plugin over HTTP: its routes answer from its worker, its worker shows in metadata
and metrics."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette

from agent_pm.api._app import create_app
from agent_pm.plugins import PluginRegistry
from agent_pm.settings import Settings
from tests.api.conftest import ADMIN, READ
from tests.fixtures.servers import live_server

pytestmark = pytest.mark.anyio

MANIFEST = """\
- name: webhooks
  module: tests.fixtures.isolated_plugins:Webhooks
  enabled: true
  isolation: process
  limits:
    memory_mb: 512
"""


@pytest.fixture
async def isolated_app(tmp_path: Path, api_settings: Settings) -> AsyncIterator[Starlette]:
    path = tmp_path / "plugins.yaml"
    path.write_text(MANIFEST)
    async with PluginRegistry(path, api_settings) as registry:
        app = create_app(api_settings, registry=registry)
        async with app.router.lifespan_context(app):
            yield app


async def test_isolated_routes_answer_from_the_worker_without_the_service_keys(
    isolated_app: Starlette,
) -> None:
    async with live_server(isolated_app) as url, httpx.AsyncClient(base_url=url) as client:
        reply = await client.post("/plugins/webhooks/hello?q=7", headers=ADMIN, content=b"hi")
        assert reply.status_code == 200, reply.text
        body = reply.json()
        assert body["pid"] != os.getpid()
        assert (body["path"], body["query"], body["body"]) == ("/hello", "7", "hi")
        assert body["key_seen"] is False

        assert (await client.get("/plugins/webhooks/hello")).status_code == 401
        public = await client.get("/plugins/webhooks/in")
        assert public.status_code == 202 and public.json() == {"received": True}
        assert (await client.delete("/plugins/webhooks/hello", headers=ADMIN)).status_code == 405


async def test_isolated_worker_shows_in_metadata_and_metrics(isolated_app: Starlette) -> None:
    transport = httpx.ASGITransport(app=isolated_app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        meta = (await client.get("/plugins/webhooks", headers=ADMIN)).json()
        isolation = meta["plugin"]["isolation"] if "plugin" in meta else meta["isolation"]
        assert isolation["mode"] == "process" and isolation["state"] == "running"
        assert isolation["memory_mb"] == 512 and isinstance(isolation["pid"], int)
        metrics = (await client.get("/metrics", headers=READ)).text
        assert 'agent_pm_plugin_isolated{plugin="webhooks"} 1' in metrics
        assert 'agent_pm_plugin_worker_restarts_total{plugin="webhooks"} 0' in metrics
