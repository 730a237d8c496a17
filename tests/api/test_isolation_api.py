"""Promotion and moves in and out of process on every surface: REST, CLI, stream, metrics,
audit and OpenAPI, against a real uvicorn."""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from typing import Any

import anyio
import anyio.to_thread
import httpx
import pytest
from starlette.applications import Starlette

from agent_pm.api._app import create_app
from agent_pm.audit import AuditMessage
from agent_pm.cli import main
from agent_pm.plugins import PluginRegistry
from agent_pm.plugins.bus import StateChange
from agent_pm.settings import Settings
from tests.api.conftest import ADMIN, ADMIN_KEY, READ
from tests.fixtures.servers import live_server

pytestmark = pytest.mark.anyio

MANIFEST = """\
- name: blocker
  module: tests.fixtures.isolated_plugins:Blocker
  enabled: true
  isolation: auto
  promotion: {block_ms: 100, blocks: 2, hold_seconds: 600}
"""


@pytest.fixture
async def registry(write_manifest: Any, api_settings: Settings) -> AsyncIterator[PluginRegistry]:
    async with PluginRegistry(write_manifest(MANIFEST), api_settings) as registry:
        yield registry


@pytest.fixture
async def url(registry: PluginRegistry, api_settings: Settings) -> AsyncIterator[str]:
    app: Starlette = create_app(api_settings, registry=registry, watch=False)
    async with app.router.lifespan_context(app), live_server(app) as url:
        yield url


@pytest.fixture
async def client(url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        yield client


async def agent_pm(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """Run ``agent-pm ARGV`` (in a thread: it talks to the server on this loop)."""
    code = await anyio.to_thread.run_sync(main, list(argv))
    out, err = capsys.readouterr()
    return code, out, err


async def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    return await agent_pm(capsys, "plugins", *argv)


async def blocker(client: httpx.AsyncClient) -> dict[str, Any]:
    response = await client.get("/plugins/blocker", headers=READ)
    assert response.status_code == 200
    plugin: dict[str, Any] = response.json()["plugin"]
    return plugin


async def test_isolation_promotion_shows_on_every_surface_and_an_operator_moves_it_back(
    registry: PluginRegistry,
    url: str,
    client: httpx.AsyncClient,
    capsys: pytest.CaptureFixture[str],
) -> None:
    with registry.bus.subscribe(plugins=["blocker"]) as subscription:
        for _ in range(2):
            fired = await client.post("/hooks/post_plan", json={"ms": 150}, headers=ADMIN)
            assert fired.json()["results"][0]["value"] == os.getpid()
        changes: list[StateChange] = []
        with anyio.fail_after(120):
            while not any(isinstance(m, AuditMessage) for m in changes):
                changes += await subscription.receive()  # type: ignore[arg-type]
    promoted = [m for m in changes if isinstance(m, StateChange)][-1]
    wire = json.loads(registry.bus.encode(promoted))["plugin"]["isolation"]
    assert wire["mode"] == "process" and wire["promoted"] is True and wire["by"] == "platform"

    isolation = (await blocker(client))["isolation"]
    assert isolation["mode"] == "process" and isolation["declared"] == "auto"
    assert isolation["promoted"] is True and "held the event loop" in isolation["why"]
    assert isolation["when"].endswith("Z") or "+00:00" in isolation["when"]
    worker = isolation["pid"]
    fired = await client.post("/hooks/post_plan", json={}, headers=ADMIN)
    assert fired.json()["results"][0]["value"] == worker != os.getpid()

    metrics = (await client.get("/metrics", headers=READ)).text
    assert 'agent_pm_plugin_promoted{plugin="blocker"} 1' in metrics
    assert 'agent_pm_plugin_promotions_total{plugin="blocker"} 1' in metrics
    assert 'agent_pm_plugin_isolated{plugin="blocker"} 1' in metrics

    code, out, err = await cli(capsys, "--url", url, "--api-key", ADMIN_KEY, "list")
    row = next(line.split() for line in out.splitlines() if line.startswith("blocker"))
    assert code == 0 and row[3] == "auto:promoted"
    assert "blocker was moved to a worker process" in err and "--inline" in err

    code, out, _ = await agent_pm(capsys, "audit", "--url", url, "--api-key", ADMIN_KEY)
    assert code == 0 and "isolation.mode, isolation.promoted  held the event loop" in out
    [record] = (await client.get("/audit", headers=ADMIN)).json()["records"]
    assert (record["actor"], record["source"], record["action"]) == (
        "platform",
        "platform",
        "isolate",
    )
    assert record["reason"] == isolation["why"] and record["outcome"] == "ok"

    # Back inline over REST: audited as the caller, automatic promotion held off.
    moved = await client.post("/plugins/blocker/isolation", json={"mode": "inline"}, headers=ADMIN)
    assert moved.status_code == 200, moved.text
    back = moved.json()["plugin"]["isolation"]
    assert back["mode"] == "inline" and back["promoted"] is False and back["by"] == "operator"
    assert back["hold_until"] is not None and back["pid"] is None
    assert moved.headers["ETag"] == f'"{registry.revision}"'
    for _ in range(3):
        fired = await client.post("/hooks/post_plan", json={"ms": 150}, headers=ADMIN)
        assert fired.json()["results"][0]["value"] == os.getpid()
    assert (await blocker(client))["isolation"]["mode"] == "inline"

    # And out again, then back, with the CLI.
    code, out, _ = await cli(
        capsys, "--url", url, "--api-key", ADMIN_KEY, "isolate", "blocker", "--process"
    )
    assert code == 0 and "blocker runs a worker process (auto:process)" in out
    assert (await blocker(client))["isolation"]["pid"] not in (None, os.getpid())
    code, out, _ = await cli(
        capsys, "--url", url, "--api-key", ADMIN_KEY, "isolate", "blocker", "--inline"
    )
    assert code == 0 and "blocker runs inline (auto:inline)" in out
    assert "not promoted automatically before" in out

    records = (await client.get("/audit", headers=ADMIN)).json()["records"]
    assert [(r["source"], r["after"].get("isolation.mode")) for r in records] == [
        ("platform", "process"),
        ("rest", "inline"),
        ("cli", "process"),
        ("cli", "inline"),
    ]


async def test_isolation_endpoint_refuses_bad_requests_and_keeps_the_plugin_running(
    registry: PluginRegistry,
    client: httpx.AsyncClient,
    url: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = "/plugins/blocker/isolation"
    read_only = await client.post(path, json={"mode": "process"}, headers=READ)
    assert read_only.status_code == 403
    sideways = await client.post(path, json={"mode": "sideways"}, headers=ADMIN)
    assert sideways.status_code == 400 and "$.mode" in sideways.json()["detail"]
    empty = await client.post(path, headers=ADMIN)
    assert empty.status_code == 400 and "body is required" in empty.json()["detail"]
    extra = await client.post(path, json={"mode": "inline", "why": "x"}, headers=ADMIN)
    assert extra.status_code == 400 and "unknown field" in extra.json()["detail"]
    missing = await client.post("/plugins/nobody/isolation", json={"mode": "inline"}, headers=ADMIN)
    assert missing.status_code == 404 and "nobody" in missing.json()["detail"]
    stale = {**ADMIN, "If-Match": f'"{registry.revision + 5}"'}
    conflict = await client.post(path, json={"mode": "process"}, headers=stale)
    assert conflict.status_code == 412
    assert (await blocker(client))["isolation"]["mode"] == "inline"

    code, _, err = await cli(
        capsys, "--manifest", str(registry.manifest_path), "isolate", "blocker", "--process"
    )
    assert code != 0 and "pass --url" in err
    with pytest.raises(SystemExit):
        await cli(capsys, "--url", url, "isolate", "blocker")  # neither --inline nor --process


async def test_isolation_endpoint_is_in_the_openapi_document(client: httpx.AsyncClient) -> None:
    document = (await client.get("/openapi.json", headers=READ)).json()
    operation = document["paths"]["/plugins/{name}/isolation"]["post"]
    assert {"400", "404", "409", "412"} <= set(operation["responses"])
    schemas = document["components"]["schemas"]
    assert set(schemas["IsolationInfo"]["properties"]) >= {"mode", "promoted", "why", "when"}
