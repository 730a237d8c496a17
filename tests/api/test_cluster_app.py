"""Two apps sharing one Redis: each one's stream carries the other's samples; /health tells."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import anyio
import httpx
import pytest
from websockets.asyncio.client import connect

from agent_pm.api import stream
from agent_pm.api.app import create_app
from agent_pm.demo.loopback import serve_on_loopback
from agent_pm.settings import Settings

pytestmark = pytest.mark.anyio
KEY = "cluster-admin-key"
ECHO = "- name: echo\n  module: tests.fixtures.plugins:Echo\n  enabled: true\n"


@asynccontextmanager
async def served(settings: Settings, manifest: Path, node: str) -> AsyncIterator[str]:
    settings = dataclasses.replace(settings, admin_api_key=KEY, node_name=node)
    app = create_app(settings, manifest_path=manifest, watch=False)
    async with (
        app.router.lifespan_context(app),
        serve_on_loopback(app, ws="websockets-sansio", server_class=stream.Server) as url,
    ):
        yield url


@pytest.fixture
async def pair(redis_settings: Settings, tmp_path: Path) -> AsyncIterator[tuple[str, str]]:
    urls = []
    async with AsyncExitStack() as stack:
        for node in ("a", "b"):
            manifest = tmp_path / node / "plugins.yaml"
            manifest.parent.mkdir()
            manifest.write_text(ECHO)
            urls.append(await stack.enter_async_context(served(redis_settings, manifest, node)))
        yield urls[0], urls[1]


async def frames(ws, count: int, kind: str | None = None) -> list[dict]:
    """The next ``count`` messages (of type ``kind`` only, if given)."""
    messages: list[dict] = []
    with anyio.fail_after(10):
        while len(messages) < count:
            received = json.loads(await ws.recv())
            messages.extend(m for m in received if kind is None or m["type"] == kind)
    return messages


async def test_cluster_app_stream_on_a_receives_samples_fired_on_b(
    pair: tuple[str, str],
) -> None:
    a, b = pair
    url = a.replace("http://", "ws://") + "/plugins/stream?hooks=post_plan"
    async with connect(url, additional_headers={"X-API-Key": KEY}) as ws:
        [hello] = await frames(ws, 1)
        async with httpx.AsyncClient(base_url=b, headers={"X-API-Key": KEY}) as client:
            response = await client.post("/hooks/post_plan", json={"plan": {}})
        assert response.status_code == 200
        # The other node's start-up state messages may come first.
        [sample] = await frames(ws, 1, "sample")
    assert (sample["type"], sample["plugin"], sample["node"]) == ("sample", "echo", "b")
    assert sample["seq"] > hello["seq"]


async def test_cluster_app_health_reports_the_redis_bus(pair: tuple[str, str]) -> None:
    async with httpx.AsyncClient(base_url=pair[0]) as client:
        health = (await client.get("/health")).json()
    assert health["status"] == "ok"
    bus = health["bus"]
    assert (bus["backend"], bus["state"], bus["node"]) == ("redis", "up", "a")
    # Each node announced its plugins' state at start: A forwarded its own, received B's.
    assert bus["forwarded"] >= 1
