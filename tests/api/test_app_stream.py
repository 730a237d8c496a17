"""The telemetry stream inside the real app: its auth middleware, the dashboard session, and a
"going away" close when the server stops."""

from __future__ import annotations

import json
from pathlib import Path

import anyio
import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from agent_pm.api._app import create_app
from agent_pm.demo.loopback import serve_on_loopback
from agent_pm.server import Server
from agent_pm.settings import Settings

pytestmark = pytest.mark.anyio
READ_KEY, ADMIN_KEY = "stream-read-key-0123", "stream-admin-key-0123"


@pytest.fixture
async def served(tmp_path: Path):
    manifest = tmp_path / "plugins.yaml"
    manifest.write_text("- name: echo\n  module: tests.fixtures.plugins:Echo\n  enabled: true\n")
    settings = Settings.from_env({"API_KEY": READ_KEY, "ADMIN_API_KEY": ADMIN_KEY})
    app = create_app(settings, manifest_path=manifest, watch=False)
    async with (
        app.router.lifespan_context(app),
        serve_on_loopback(app, ws="websockets-sansio", server_class=Server) as url,
    ):
        yield url


def ws_url(url: str) -> str:
    return url.replace("http://", "ws://") + "/plugins/stream"


async def frames(ws, count: int) -> list[dict]:
    messages: list[dict] = []
    with anyio.fail_after(10):
        while len(messages) < count:
            messages.extend(json.loads(await ws.recv()))
    return messages


async def test_app_stream_with_read_key_gets_hello_then_samples(served: str) -> None:
    async with connect(ws_url(served), additional_headers={"X-API-Key": READ_KEY}) as ws:
        [hello] = await frames(ws, 1)
        assert hello["type"] == "hello"
        async with httpx.AsyncClient(base_url=served) as client:
            response = await client.post(
                "/hooks/post_plan", json={"plan": {}}, headers={"X-API-Key": ADMIN_KEY}
            )
            assert response.status_code == 200
        [sample] = await frames(ws, 1)
    assert (sample["type"], sample["plugin"], sample["status"]) == ("sample", "echo", "success")
    assert sample["seq"] > hello["seq"]


@pytest.mark.parametrize(("headers", "status"), [({}, 401), ({"X-API-Key": "wrong"}, 403)])
async def test_app_stream_refuses_missing_or_wrong_keys(
    served: str, headers: dict[str, str], status: int
) -> None:
    with pytest.raises(InvalidStatus) as refused:
        async with connect(ws_url(served), additional_headers=headers):
            pass
    assert refused.value.response.status_code == status


async def dashboard_cookie(url: str) -> str:
    async with httpx.AsyncClient(base_url=url) as client:
        response = await client.post("/login", data={"api_key": READ_KEY})
        assert response.status_code == 303
        return "; ".join(f"{name}={value}" for name, value in client.cookies.items())


async def test_app_stream_accepts_the_dashboard_session_from_its_own_origin(served: str) -> None:
    cookie = await dashboard_cookie(served)
    headers = {"Cookie": cookie, "Origin": served}
    async with connect(ws_url(served), additional_headers=headers) as ws:
        [hello] = await frames(ws, 1)
    assert hello["type"] == "hello"
    with pytest.raises(InvalidStatus) as refused:
        foreign = {"Cookie": cookie, "Origin": "http://127.0.0.2:8000"}
        async with connect(ws_url(served), additional_headers=foreign):
            pass
    assert refused.value.response.status_code == 403


async def test_app_stream_closes_with_going_away_when_the_server_stops(tmp_path: Path) -> None:
    manifest = tmp_path / "plugins.yaml"
    manifest.write_text("[]\n")
    app = create_app(Settings.from_env({"API_KEY": READ_KEY}), manifest_path=manifest, watch=False)
    async with app.router.lifespan_context(app):
        async with serve_on_loopback(app, ws="websockets-sansio", server_class=Server) as url:
            ws = await connect(ws_url(url), additional_headers={"X-API-Key": READ_KEY})
            await frames(ws, 1)
        with pytest.raises(ConnectionClosed) as closed, anyio.fail_after(10):
            await ws.recv()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001
