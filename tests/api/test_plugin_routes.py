"""Plugin routes appear and disappear with their plugin, behind auth unless public."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette
from starlette.routing import Mount, Route
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from agent_pm.api._app import create_app
from agent_pm.api._plugin_routes import PluginRoutes, is_public_route
from agent_pm.plugins import PluginRegistry, public
from agent_pm.plugins.mounts import RESERVED_PREFIXES, check_route_prefix, mount_prefix
from agent_pm.settings import Settings
from tests.api.conftest import ADMIN, READ
from tests.fixtures.route_plugins import SQUATTER_PREFIXES, Prefixed, Routed

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


@pytest.mark.parametrize("squatter", sorted(SQUATTER_PREFIXES))
async def test_install_refuses_a_route_prefix_inside_a_core_path(
    client: httpx.AsyncClient, manifest_path: Path, squatter: str
) -> None:
    before = manifest_path.read_bytes()
    body = {"module": f"tests.fixtures.route_plugins:{squatter}", "enabled": True}
    response = await client.post("/plugins/install", headers=ADMIN, json=body)
    assert response.status_code == 409, response.text
    assert "route_prefix" in response.json()["detail"]
    assert manifest_path.read_bytes() == before
    prefix = SQUATTER_PREFIXES[squatter].strip("/").split("/")[0] or "free"
    for method in ("GET", "POST"):
        answer = await client.request(method, f"/{prefix}/anything")
        assert answer.status_code != 200 and "hijacked" not in answer.text, (method, prefix)


async def test_a_reserved_prefix_in_the_manifest_loads_invalid_and_cannot_be_enabled(
    write_manifest: Callable[[str], Path], api_settings: Settings
) -> None:
    manifest = write_manifest(
        "- name: squatter\n  module: tests.fixtures.route_plugins:DashboardSquatter\n"
        "  enabled: true\n"
    )
    async with PluginRegistry(manifest, api_settings) as registry:
        app = create_app(api_settings, registry=registry)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            meta = (await client.get("/plugins/squatter", headers=READ)).json()["plugin"]
            assert meta["state"] == "invalid" and "inside the core path" in meta["error"]
            enabled = await client.post("/plugins/squatter/enable", headers=ADMIN)
            assert enabled.status_code == 409, enabled.text
            assert "route_prefix '/dashboard/x' is inside the core path" in enabled.text
            for method in ("GET", "POST"):
                answer = await client.request(method, "/dashboard/x/steal")
                assert "hijacked" not in answer.text


async def test_dashboard_paths_are_open_only_where_a_dashboard_route_answers(
    client: httpx.AsyncClient,
) -> None:
    assert (await client.get("/dashboard/not-a-page")).status_code == 401
    assert (await client.get("/login")).status_code == 200
    assert (await client.get("/dashboard")).status_code == 303


async def test_reserved_prefixes_cover_every_core_route(app: Starlette) -> None:
    firsts = {"/" + getattr(route, "path", "").strip("/").split("/")[0] for route in app.routes}
    assert firsts <= set(RESERVED_PREFIXES)


def test_a_plain_custom_prefix_is_accepted() -> None:
    check_route_prefix(Prefixed)
    assert mount_prefix("prefixed", Prefixed) == "/custom"
    assert mount_prefix("routed", Routed) == "/plugins/routed"


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
