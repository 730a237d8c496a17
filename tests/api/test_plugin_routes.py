"""Plugin routes appear and disappear with their plugin, behind auth unless public."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from starlette.routing import Mount, Route
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from agent_pm.api.plugin_routes import PluginRoutes, is_public_route
from agent_pm.plugins import PluginRegistry, public
from tests.api.conftest import ADMIN, READ

pytestmark = pytest.mark.anyio


async def test_active_plugin_routes_answer_under_their_prefix(client: httpx.AsyncClient) -> None:
    response = await client.get("/plugins/routed/hello", headers=READ)
    assert response.status_code == 200
    assert response.json() == {"hello": "routed", "role": "read"}


async def test_plugin_routes_need_a_key_unless_public(client: httpx.AsyncClient) -> None:
    assert (await client.get("/plugins/routed/hello")).status_code == 401
    webhook = await client.post("/plugins/routed/webhook")
    assert webhook.status_code == 200 and webhook.json() == {"received": True}
    # Public means that route and method only.
    assert (await client.get("/plugins/routed/webhook")).status_code == 401
    assert (await client.post("/plugins/routed/hello")).status_code == 401


async def test_routes_vanish_on_disable_and_return_on_enable(client: httpx.AsyncClient) -> None:
    await client.post("/plugins/routed/disable", headers=ADMIN)
    gone = await client.get("/plugins/routed/hello", headers=ADMIN)
    assert gone.status_code == 404 and gone.json()["error"] == "not_found"
    assert (await client.post("/plugins/routed/webhook")).status_code == 401
    await client.post("/plugins/routed/enable", headers=ADMIN)
    assert (await client.get("/plugins/routed/hello", headers=ADMIN)).status_code == 200


async def test_routes_vanish_on_remove(client: httpx.AsyncClient) -> None:
    await client.delete("/plugins/routed", headers=ADMIN)
    assert (await client.get("/plugins/routed/hello", headers=ADMIN)).status_code == 404


async def test_routes_vanish_when_reloaded_away(
    client: httpx.AsyncClient, manifest_path: Path
) -> None:
    manifest_path.write_text("- name: echo\n  module: tests.fixtures.plugins:Echo\n")
    await client.post("/plugins/reload", headers=ADMIN)
    assert (await client.get("/plugins/routed/hello", headers=ADMIN)).status_code == 404


async def test_route_prefix_and_broken_routes(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    for module in ("Prefixed", "BrokenRoutes"):
        body = {"module": f"tests.fixtures.route_plugins:{module}", "enabled": True}
        assert (await client.post("/plugins/install", headers=ADMIN, json=body)).status_code == 201
    assert (await client.get("/custom/ping", headers=ADMIN)).json() == {"pong": True}
    assert (await client.get("/plugins/prefixed/ping", headers=ADMIN)).status_code == 404
    assert "routes() broke" in caplog.text
    assert (await client.get("/plugins/routed/hello", headers=ADMIN)).status_code == 200


async def test_core_routes_win_over_plugin_routes(client: httpx.AsyncClient) -> None:
    response = await client.get("/plugins/routed", headers=ADMIN)
    assert response.json()["plugin"]["name"] == "routed"


async def test_public_plugin_routes_cannot_open_core_paths(client: httpx.AsyncClient) -> None:
    body = {"module": "tests.fixtures.route_plugins:Hijacker", "enabled": True}
    assert (await client.post("/plugins/install", headers=ADMIN, json=body)).status_code == 201
    assert (await client.get("/free")).json() == {"hijacked": True}
    assert (await client.get("/plugins")).status_code == 401
    assert (await client.post("/hooks/post_plan")).status_code == 401
    assert (await client.put("/hooks/post_plan")).status_code == 401


async def test_table_is_rebuilt_only_when_the_revision_changes(registry: PluginRegistry) -> None:
    table = PluginRoutes(lambda: registry)
    first = table.mounts
    assert [m.path for m in first if isinstance(m, Mount)] == ["/plugins/routed"]
    assert table.mounts is first
    await registry.set_enabled("routed", False)
    assert table.mounts == []


def test_is_public_route_follows_marks_through_mounts() -> None:
    async def endpoint(request: object) -> None: ...

    private = Mount("/p", routes=[Route("/a", endpoint)])
    public_child = Mount("/p", routes=[public(Route("/a", endpoint))])
    public_mount = public(Mount("/p", routes=[Route("/a", endpoint)]))
    scope = {"type": "http", "path": "/p/a", "method": "GET", "root_path": ""}
    assert not is_public_route(private, scope)
    assert is_public_route(public_child, scope)
    assert is_public_route(public_mount, scope)
    assert not is_public_route(public_child, {**scope, "path": "/q/a"})


async def test_websocket_routes_are_authenticated_over_a_real_server(live_url: str) -> None:
    url = live_url.replace("http", "ws", 1) + "/plugins/routed/ws"
    with pytest.raises(InvalidStatus) as denied:
        async with connect(url):
            pass
    assert denied.value.response.status_code == 401
    assert b'"error":"unauthorized"' in denied.value.response.body
    async with connect(url, additional_headers=READ) as websocket:
        assert await websocket.recv() == "read"
