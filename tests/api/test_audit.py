"""Audit records from every surface of the app, ``GET /audit``, and the stream's audit message."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import msgspec
import pytest
from starlette.applications import Starlette
from websockets.asyncio.client import connect

from agent_pm.api._app import create_app
from agent_pm.api._security import named_key_line
from agent_pm.audit import AuditMessage
from agent_pm.plugins import PluginRegistry
from agent_pm.settings import Settings
from tests.api.conftest import ADMIN, ADMIN_KEY, READ, READ_KEY

pytestmark = pytest.mark.anyio

CI_KEY = "ci-bot-key-0123456789abcdef"


async def records(client: httpx.AsyncClient, query: str = "") -> list[dict[str, Any]]:
    response = await client.get(f"/audit{query}", headers=ADMIN)
    assert response.status_code == 200, response.text
    found: list[dict[str, Any]] = response.json()["records"]
    return found


async def test_every_rest_admin_action_is_recorded(client: httpx.AsyncClient) -> None:
    await client.post("/plugins/strict/enable", headers=ADMIN)
    await client.post("/plugins/strict/config", headers=ADMIN, json={"config": {"channel": "#x"}})
    await client.post("/plugins/strict/reload", headers=ADMIN)
    await client.post("/plugins/strict/disable", headers=ADMIN)
    body = {"module": "tests.fixtures.plugins:Ping", "name": "ping"}
    await client.post("/plugins/install", headers=ADMIN, json=body)
    await client.delete("/plugins/ping", headers=ADMIN)
    await client.post("/plugins/reload", headers=ADMIN)
    await client.post("/plugins/ghost/enable", headers=ADMIN)
    found = await records(client)
    assert [(r["action"], r["plugin"], r["outcome"]) for r in found] == [
        ("enable", "strict", "ok"),
        ("update_config", "strict", "ok"),
        ("reload", "strict", "ok"),
        ("disable", "strict", "ok"),
        ("install", "ping", "ok"),
        ("remove", "ping", "ok"),
        ("reload_all", None, "ok"),
        ("enable", "ghost", "error"),
    ]
    assert {(r["actor"], r["role"], r["source"]) for r in found} == {
        ("ADMIN_API_KEY", "admin", "rest")
    }
    assert found[1]["before"] == {"config": {}}  # the class default is not configuration
    assert found[1]["after"] == {"config.channel": "#x"}
    assert all(r["request_id"] for r in found)
    assert [r["id"] for r in found] == sorted(r["id"] for r in found)


async def test_reads_and_refused_requests_write_nothing(client: httpx.AsyncClient) -> None:
    await client.get("/plugins", headers=ADMIN)
    await client.post("/hooks/post_plan", headers=ADMIN, json={})
    await client.post("/plugins/strict/enable", headers=READ)  # 403 before any operation
    await client.post("/plugins/strict/config", headers=ADMIN, content=b"{")  # 400
    assert await records(client) == []


async def test_audit_is_for_admins_and_validates_its_query(client: httpx.AsyncClient) -> None:
    assert (await client.get("/audit")).status_code == 401
    denied = await client.get("/audit", headers=READ)
    assert (
        denied.status_code == 403
        and denied.json()["detail"] == "this operation needs the admin key"
    )
    for query in ("?limit=0", "?limit=1001", "?limit=-1", "?since=yesterday", "?since=" + "9" * 50):
        response = await client.get(f"/audit{query}", headers=ADMIN)
        assert response.status_code == 400, query


async def test_audit_pages_with_since_and_limit(client: httpx.AsyncClient) -> None:
    for _ in range(3):
        await client.post("/plugins/strict/enable", headers=ADMIN)
        await client.post("/plugins/strict/disable", headers=ADMIN)
    every = await records(client)
    assert len(every) == 6
    assert await records(client, "?limit=2") == every[-2:]
    first = await records(client, "?since=0&limit=4")
    assert first == every[:4]
    assert await records(client, f"?since={first[-1]['id']}") == every[4:]
    assert await records(client, f"?since={every[2]['time']}") == every[3:]


async def test_dashboard_actions_are_recorded_as_the_session(client: httpx.AsyncClient) -> None:
    await client.post("/login", data={"api_key": ADMIN_KEY})
    page = (await client.get("/dashboard")).text
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert csrf is not None
    card = (await client.get("/dashboard/admin/cards/strict")).text
    revision = re.search(r'name="revision" value="(\d+)"', card)
    assert revision is not None
    form = {"enabled": "true", "csrf_token": csrf[1], "revision": revision[1]}
    response = await client.post("/dashboard/plugins/strict/enabled", data=form)
    assert response.status_code == 200
    form = {"config": "{not json", "csrf_token": csrf[1], "revision": str(int(revision[1]) + 1)}
    await client.post("/dashboard/plugins/strict/config", data=form)  # refused before the registry
    [record] = await records(client)
    assert (record["actor"], record["source"], record["action"]) == (
        "ADMIN_API_KEY",
        "dashboard",
        "enable",
    )


async def test_the_stream_carries_audit_messages(live_url: str) -> None:
    url = live_url.replace("http", "ws", 1) + "/plugins/stream?plugins=strict"
    async with connect(url, additional_headers=READ) as websocket:
        await websocket.recv()  # the hello
        async with httpx.AsyncClient(base_url=live_url) as client:
            await client.post("/plugins/strict/enable", headers=ADMIN)
        found: list[dict[str, Any]] = []
        with anyio.fail_after(10):
            while not any(m["type"] == "audit" for m in found):
                found += msgspec.json.decode(await websocket.recv())
    [audit] = [m for m in found if m["type"] == "audit"]
    assert audit["record"]["action"] == "enable" and audit["record"]["plugin"] == "strict"
    assert audit["seq"] > 0


@pytest.fixture
def keys_file(tmp_path: Path) -> Path:
    path = tmp_path / "keys"
    path.write_text(named_key_line("ci-bot", "admin", CI_KEY) + "\n")
    return path


@pytest.fixture
async def named_app(
    registry: PluginRegistry, api_settings: Settings, keys_file: Path
) -> AsyncIterator[Starlette]:
    settings = Settings.from_env({**api_settings.environ, "API_KEYS_FILE": str(keys_file)})
    app = create_app(settings, registry=registry)
    async with app.router.lifespan_context(app):
        yield app


async def test_named_keys_act_under_their_name_and_can_be_revoked_live(
    named_app: Starlette, keys_file: Path
) -> None:
    transport = httpx.ASGITransport(app=named_app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        ci = {"X-API-Key": CI_KEY}
        assert (await client.post("/plugins/strict/enable", headers=ci)).status_code == 200
        [record] = await records(client)
        assert (record["actor"], record["role"]) == ("ci-bot", "admin")
        keys_file.write_text("# ci-bot revoked\n")
        await anyio.to_thread.run_sync(named_app.state.api_keys.named.refresh)
        assert (await client.post("/plugins/strict/disable", headers=ci)).status_code == 403
        assert (await client.get("/plugins", headers=READ)).status_code == 200


async def test_the_watcher_records_applied_edits(
    api_settings: Settings, manifest_path: Path
) -> None:
    app = create_app(api_settings, manifest_path=manifest_path)
    async with app.router.lifespan_context(app):
        registry: PluginRegistry = app.state.registry
        with registry.bus.subscribe() as subscription:
            text = manifest_path.read_text().replace("enabled: false", "enabled: true", 1)
            manifest_path.write_text(text)
            with anyio.fail_after(20):
                audits: list[AuditMessage] = []
                while not audits:
                    batch = await subscription.receive()
                    audits = [m for m in batch if isinstance(m, AuditMessage)]
    record = audits[0].record
    assert (record.source, record.action, record.outcome) == ("watcher", "reload_all", "ok")
    assert record.actor == f"file:{manifest_path}"
    assert record.after["strict.enabled"] is True


async def test_the_watcher_records_rejected_edits(
    api_settings: Settings, manifest_path: Path
) -> None:
    app = create_app(api_settings, manifest_path=manifest_path)
    async with app.router.lifespan_context(app):
        registry: PluginRegistry = app.state.registry
        with registry.bus.subscribe() as subscription:
            audits: list[AuditMessage] = []
            for bad in ["- name: [unclosed\n", "#" * (1024 * 1024 + 1)]:
                manifest_path.write_text(bad)
                with anyio.fail_after(20):
                    while len(audits) < 2 - (bad.startswith("-")):
                        batch = await subscription.receive()
                        audits += [m for m in batch if isinstance(m, AuditMessage)]
    yaml_error, too_large = (message.record for message in audits)
    for record in (yaml_error, too_large):
        assert (record.source, record.action, record.outcome) == ("watcher", "reload_all", "error")
        assert record.before == record.after == {}
    assert yaml_error.error is not None and "not valid YAML" in yaml_error.error
    assert too_large.error is not None and "larger than" in too_large.error


# -- keys: throttling, query strings, sessions ----------------------------------------------


def from_address(app: Starlette, address: str) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=(address, 40000))
    return httpx.AsyncClient(transport=transport, base_url="http://t")


async def test_wrong_keys_are_throttled_per_address(app: Starlette) -> None:
    async with from_address(app, "10.1.1.1") as guesser, from_address(app, "10.1.1.2") as other:
        statuses = [
            (await guesser.get("/plugins", headers={"X-API-Key": f"guess-{i:012d}"})).status_code
            for i in range(12)
        ]
        assert statuses[:10] == [403] * 10 and statuses[10:] == [429, 429]
        throttled = await guesser.get("/plugins", headers=READ)  # even the right key
        assert throttled.status_code == 429
        assert 1 <= int(throttled.headers["retry-after"]) <= 60
        assert throttled.json()["error"] == "too_many_attempts"
        assert (await other.get("/plugins", headers=READ)).status_code == 200
        assert (await guesser.get("/health")).status_code == 200  # no key, nothing to throttle


async def test_wrong_logins_are_throttled_per_address(app: Starlette) -> None:
    async with from_address(app, "10.2.2.1") as guesser, from_address(app, "10.2.2.2") as other:
        for _ in range(10):
            assert (await guesser.post("/login", data={"api_key": "nope"})).status_code == 401
        blocked = await guesser.post("/login", data={"api_key": ADMIN_KEY})
        assert blocked.status_code == 429 and int(blocked.headers["retry-after"]) >= 1
        assert "Too many wrong keys" in blocked.text
        assert (await other.post("/login", data={"api_key": ADMIN_KEY})).status_code == 303


@pytest.mark.parametrize("name", ["api_key", "apikey", "X-API-Key", "x_api_key"])
async def test_keys_are_never_accepted_in_the_query_string(
    client: httpx.AsyncClient, name: str
) -> None:
    for headers in ({}, ADMIN):
        response = await client.get(f"/plugins?{name}={ADMIN_KEY}", headers=headers)
        assert response.status_code == 400
        assert response.json()["error"] == "key_in_query"


async def test_logout_revokes_the_session_on_the_server(client: httpx.AsyncClient) -> None:
    await client.post("/login", data={"api_key": READ_KEY})
    cookie = client.cookies["agent_pm_session"]
    page = (await client.get("/dashboard")).text
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert csrf is not None
    assert (await client.post("/logout", data={"csrf_token": csrf[1]})).status_code == 303
    client.cookies.set("agent_pm_session", cookie)  # a copy kept by whoever stole it
    replay = await client.get("/dashboard")
    assert replay.status_code == 303 and replay.headers["location"] == "/login"
