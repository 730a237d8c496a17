"""Health on every surface: REST listing and stats, 304s, quarantine reset, stream, dashboard,
CLI and metrics, driven by a test clock."""

from __future__ import annotations

import io
import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from starlette.applications import Starlette

from agent_pm.api._app import create_app
from agent_pm.api.dashboard._regions import metas_of, overview_body
from agent_pm.api.dashboard._view import Filters, sorted_rows
from agent_pm.plugins import PluginRegistry
from agent_pm.plugins.bus import StateChange
from agent_pm.settings import Settings
from tests.api.conftest import ADMIN, ADMIN_KEY, READ_KEY
from tests.fixtures.clock import FakeClock
from tests.fixtures.servers import live_server

pytestmark = pytest.mark.anyio

T0 = 1_800_000_000.0 - (1_800_000_000 % 600)
READ = {"X-API-Key": READ_KEY}
MANIFEST = """\
- name: flaky
  module: tests.fixtures.plugins:Flaky
  enabled: true
  quarantine: {min_calls: 50, failure_ratio: 0.9}
- name: guarded
  module: tests.fixtures.plugins:Flaky
  enabled: true
  hooks: [post_plan]
  quarantine: {min_calls: 4, failure_ratio: 0.5, cooldown_seconds: 30}
"""


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(T0)


@pytest.fixture
async def registry(
    write_manifest: Any, api_settings: Settings, clock: FakeClock
) -> AsyncIterator[PluginRegistry]:
    async with PluginRegistry(write_manifest(MANIFEST), api_settings, clock=clock) as registry:
        yield registry


@pytest.fixture
async def app(registry: PluginRegistry, api_settings: Settings) -> AsyncIterator[Starlette]:
    app = create_app(api_settings, registry=registry, watch=False)
    async with app.router.lifespan_context(app):
        yield app


@pytest.fixture
async def client(app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        yield client


async def fire(client: httpx.AsyncClient, failed: int, ok: int) -> None:
    for _ in range(failed):
        await client.post("/hooks/post_plan", json={"fail": True}, headers=ADMIN)
    for _ in range(ok):
        await client.post("/hooks/post_plan", json={}, headers=ADMIN)


def cli(*argv: str) -> tuple[int, str, str]:
    from agent_pm.admin_client import AdminError, HttpClient
    from agent_pm.cli import build_parser
    from agent_pm.plugin_commands import run

    args = build_parser().parse_args(["plugins", *argv])
    out, err = io.StringIO(), io.StringIO()
    client = HttpClient(args.url, args.api_key)
    try:
        code = run(args, client, out, err)
    except AdminError as exc:
        return 1, out.getvalue(), str(exc)
    finally:
        client.close()
    return code, out.getvalue(), err.getvalue()


def overview(registry: PluginRegistry) -> str:
    """The console overview's table body, as the page and its live updates render it."""
    return str(overview_body(sorted_rows(metas_of(registry), Filters()), False))


def health_of(body: dict[str, Any], name: str) -> str:
    [plugin] = [p for p in body["plugins"] if p["name"] == name]
    state: str = plugin["health"]["state"]
    return state


async def test_a_plugin_failing_80_percent_is_failing_everywhere_then_healthy(
    app: Starlette, client: httpx.AsyncClient, registry: PluginRegistry, clock: FakeClock
) -> None:
    async with live_server(app) as url:
        with registry.bus.subscribe(plugins=["flaky"]) as stream:
            await fire(client, failed=16, ok=4)
            body = (await client.get("/plugins", headers=READ)).json()
            assert health_of(body, "flaky") == "failing"
            flaky = next(p for p in body["plugins"] if p["name"] == "flaky")
            assert flaky["hook_windows"]["post_plan"]["error_ratio"] == 0.8
            assert flaky["window"] == "5m" and "hook_history" not in flaky
            changes = [m for m in stream.drain() if isinstance(m, StateChange)]
            assert changes[-1].plugin.health.state == "failing"
            assert json.loads(registry.bus.encode(changes[-1]))["plugin"]["health"]["state"] == (
                "failing"
            )

            assert "badge-failing" in overview(registry)
            assert "16 of 20 calls failed" in overview(registry)

            code, out, _ = await anyio.to_thread.run_sync(
                cli, "--url", url, "--api-key", READ_KEY, "list"
            )
            row = next(line.split() for line in out.splitlines() if line.startswith("flaky"))
            assert code == 0 and row[2] == "failing" and row[-2] == "80%"

            clock.advance(310)
            await fire(client, failed=0, ok=20)
            body = (await client.get("/plugins", headers=READ)).json()
            assert health_of(body, "flaky") == "healthy"
            assert [
                m.plugin.health.state for m in stream.drain() if isinstance(m, StateChange)
            ] == ["healthy"]
            code, out, _ = await anyio.to_thread.run_sync(
                cli, "--url", url, "--api-key", READ_KEY, "list"
            )
            row = next(line.split() for line in out.splitlines() if line.startswith("flaky"))
            assert row[2] == "healthy" and row[-2] == "0%"
        assert "badge-healthy" in overview(registry)


async def test_plugins_listing_answers_304_until_something_changes(
    client: httpx.AsyncClient, clock: FakeClock
) -> None:
    first = await client.get("/plugins", headers=READ)
    etag = first.headers["etag"]
    again = await client.get("/plugins", headers={**READ, "If-None-Match": etag})
    assert again.status_code == 304 and again.headers["etag"] == etag and not again.content
    await fire(client, failed=0, ok=1)
    changed = await client.get("/plugins", headers={**READ, "If-None-Match": etag})
    assert changed.status_code == 200 and changed.headers["etag"] != etag
    etag = changed.headers["etag"]
    clock.advance(10)  # a new bucket: windowed figures moved without a call
    moved = await client.get("/plugins", headers={**READ, "If-None-Match": etag})
    assert moved.status_code == 200
    # The listing's ETag still names the revision for If-Match.
    toggled = await client.post(
        "/plugins/flaky/disable", headers={**ADMIN, "If-Match": moved.headers["etag"]}
    )
    assert toggled.status_code == 200


async def test_plugins_listing_windows_and_history_on_request(client: httpx.AsyncClient) -> None:
    await fire(client, failed=1, ok=2)
    body = (await client.get("/plugins?window=1h&history=2", headers=READ)).json()
    flaky = next(p for p in body["plugins"] if p["name"] == "flaky")
    assert flaky["window"] == "1h"
    assert flaky["hook_windows"]["post_plan"]["calls"] == 3
    assert [e["status"] for e in flaky["hook_history"]["post_plan"]] == ["success", "success"]
    assert flaky["hook_stats"]["post_plan"]["invocations"] == 3
    full = (await client.get("/plugins/flaky", headers=READ)).json()["plugin"]
    assert len(full["hook_history"]["post_plan"]) == 3


@pytest.mark.parametrize(
    "path, allowed",
    [
        ("/plugins?window=2h", "1m, 5m, 1h, 24h, all"),
        ("/plugins/flaky/stats?window=week", "1m, 5m, 1h, 24h, all"),
        ("/plugins/flaky/stats?window=5m&points=31", "between 1 and 30"),
        ("/plugins/flaky/stats?points=0", "between 1 and 30"),
        ("/plugins/flaky/stats?points=many", "non-negative integer"),
        ("/plugins?history=-1", "non-negative integer"),
    ],
)
async def test_bad_window_or_points_get_400_naming_the_allowed_values(
    client: httpx.AsyncClient, path: str, allowed: str
) -> None:
    response = await client.get(path, headers=READ)
    assert response.status_code == 400
    assert allowed in response.json()["detail"]


async def test_plugin_stats_returns_windowed_series(
    client: httpx.AsyncClient, clock: FakeClock
) -> None:
    await fire(client, failed=2, ok=2)
    clock.advance(100)
    await fire(client, failed=0, ok=4)
    response = await client.get("/plugins/flaky/stats?hook=post_plan&points=3", headers=READ)
    assert response.status_code == 200
    body = response.json()
    assert (body["plugin"], body["window"], body["points"]) == ("flaky", "5m", 3)
    view = body["hooks"]["post_plan"]
    assert view["stats"]["calls"] == 8 and view["stats"]["counts"]["error"] == 2
    assert [p["calls"] for p in view["series"]] == [0, 4, 4]
    assert view["health"]["state"] == "degraded"
    assert view["stats"]["p95_ms"] is not None
    missing = await client.get("/plugins/flaky/stats?hook=nope", headers=READ)
    assert missing.status_code == 404
    everything = (await client.get("/plugins/flaky/stats?window=24h", headers=READ)).json()
    assert len(everything["hooks"]["post_plan"]["series"]) == 144


async def test_quarantine_reset_from_rest_is_admin_only_and_closes_the_breaker(
    client: httpx.AsyncClient, registry: PluginRegistry
) -> None:
    await fire(client, failed=4, ok=0)
    plugin = registry.get("guarded")
    assert plugin is not None and plugin.calls == 4  # type: ignore[attr-defined]
    results = (await client.post("/hooks/post_plan", json={}, headers=ADMIN)).json()["results"]
    quarantined = next(r for r in results if r["plugin"] == "guarded")
    assert quarantined["status"] == "quarantined" and "next probe at" in quarantined["error"]
    assert plugin.calls == 4  # type: ignore[attr-defined]
    refused = await client.post("/plugins/guarded/quarantine/reset", headers=READ)
    assert refused.status_code == 403
    unknown = await client.post("/plugins/guarded/quarantine/reset?hook=nope", headers=ADMIN)
    assert unknown.status_code == 404
    reset = await client.post(
        "/plugins/guarded/quarantine/reset", json={"hook": "post_plan"}, headers=ADMIN
    )
    assert reset.status_code == 200
    assert reset.json()["plugin"]["quarantine"]["post_plan"]["state"] == "closed"
    await fire(client, failed=0, ok=1)
    assert plugin.calls == 5  # type: ignore[attr-defined]


async def test_quarantine_reset_from_the_console_is_admin_only_and_audited(
    client: httpx.AsyncClient, registry: PluginRegistry
) -> None:
    await fire(client, failed=4, ok=0)
    await client.post("/login", data={"api_key": READ_KEY})
    page = (await client.get("/dashboard/plugins/guarded")).text
    assert "badge-quarantined" in page and 'id="quarantine-reset"' not in page
    await client.post("/login", data={"api_key": ADMIN_KEY})
    page = (await client.get("/dashboard/plugins/guarded")).text
    assert 'id="quarantine-reset"' in page and "Quarantined: post_plan" in page
    match = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert match is not None
    url = "/dashboard/plugins/guarded/quarantine/reset"
    assert (await client.post(url, data={"csrf_token": "forged"})).status_code == 403
    reset = await client.post(url, data={"csrf_token": match.group(1)})
    assert reset.status_code == 303
    assert registry.metadata_for("guarded").quarantine["post_plan"].state == "closed"
    assert 'id="quarantine-reset"' not in (await client.get("/dashboard/plugins/guarded")).text
    records = (await client.get("/audit", headers=ADMIN)).json()["records"]
    [record] = [r for r in records if r["action"] == "reset_quarantine"]
    assert (record["plugin"], record["source"], record["outcome"]) == ("guarded", "dashboard", "ok")
    assert record["after"] == {"quarantine.post_plan": "closed"}


async def test_quarantine_reset_and_stats_from_the_cli(
    app: Starlette, client: httpx.AsyncClient, registry: PluginRegistry
) -> None:
    await fire(client, failed=4, ok=0)
    async with live_server(app) as url:
        code, out, err = await anyio.to_thread.run_sync(
            cli, "--url", url, "--api-key", READ_KEY, "stats", "guarded", "--window", "1m"
        )
        assert code == 0 and "window 1m" in out
        row = next(line.split() for line in out.splitlines() if line.startswith("post_plan"))
        assert row[1] == "quarantined" and "open" in row
        assert "guarded.post_plan quarantined" in err
        code, out, _ = await anyio.to_thread.run_sync(
            cli,
            "--url",
            url,
            "--api-key",
            ADMIN_KEY,
            "quarantine",
            "reset",
            "guarded",
            "--hook",
            "post_plan",
        )
        assert code == 0 and "reset quarantine of guarded.post_plan" in out
    assert registry.metadata_for("guarded").quarantine["post_plan"].state == "closed"


def test_stats_and_quarantine_need_a_server(tmp_path: Path) -> None:
    from agent_pm.admin_client import AdminError, FileClient

    client = FileClient(tmp_path / "plugins.yaml", Settings.from_env({}))
    for call in (lambda: client.stats("x", "5m", None), lambda: client.reset_quarantine("x", None)):
        with pytest.raises(AdminError, match="pass --url"):
            call()


async def test_metrics_expose_health_and_quarantine_gauges(
    client: httpx.AsyncClient,
) -> None:
    await fire(client, failed=4, ok=0)
    text = (await client.get("/metrics", headers=READ)).text
    assert 'agent_pm_plugin_health{plugin="guarded",state="quarantined"} 1' in text
    assert 'agent_pm_plugin_health{plugin="guarded",state="healthy"} 0' in text
    assert 'agent_pm_hook_health{plugin="flaky",hook="post_plan",state="degraded"} 1' in text
    assert 'agent_pm_hook_quarantine{plugin="guarded",hook="post_plan",state="open"} 1' in text
    assert 'agent_pm_hook_quarantine_trips{plugin="guarded",hook="post_plan"} 1' in text
    await fire(client, failed=0, ok=1)
    text = (await client.get("/metrics", headers=READ)).text
    assert 'agent_pm_hook_quarantined_total{plugin="guarded",hook="post_plan"} 1' in text
    assert "# TYPE agent_pm_hook_invocations_total counter" in text


async def test_openapi_documents_every_metadata_field(client: httpx.AsyncClient) -> None:
    schema = (await client.get("/openapi.json", headers=READ)).json()
    info = schema["components"]["schemas"]["PluginInfo"]["properties"]
    assert {"health", "hook_health", "quarantine", "hook_windows", "hook_stats"} <= set(info)
    assert "/plugins/{name}/stats" in schema["paths"]
    assert "/plugins/{name}/quarantine/reset" in schema["paths"]
