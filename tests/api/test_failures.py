"""The flight recorder's REST endpoints: listing, replaying and discarding recorded failures."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from agent_pm.api._app import create_app
from agent_pm.plugins import PluginRegistry
from agent_pm.settings import Settings
from tests.api.conftest import ADMIN, READ
from tests.fixtures.recording import (  # noqa: F401 (a fixture)
    BAD_TOKEN,
    GOOD_TOKEN,
    Bystander,
    Exporter,
    fresh_deliveries,
)

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("fresh_deliveries")]

MANIFEST = f"""\
- name: exporter
  module: tests.fixtures.recording:Exporter
  enabled: true
  record_failures: true
  config:
    secrets:
      EXPORT_TOKEN: {BAD_TOKEN}
- name: bystander
  module: tests.fixtures.recording:Bystander
  enabled: true
- name: echo
  module: tests.fixtures.plugins:Echo
  enabled: true
"""


@pytest.fixture
async def client(tmp_path: Path, api_settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    path = tmp_path / "recorded.yaml"
    path.write_text(MANIFEST)
    async with PluginRegistry(path, api_settings) as registry:
        app: Starlette = create_app(api_settings, registry=registry)
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                yield client


async def fail(client: httpx.AsyncClient, count: int, hook: str = "post_plan") -> None:
    for number in range(count):
        body = {"ticket": {"key": f"OPS-{number}", "auth": f"Bearer {BAD_TOKEN}"}}
        response = await client.post(f"/hooks/{hook}", json=body, headers=ADMIN)
        assert response.status_code == 200
        statuses = {r["plugin"]: r["status"] for r in response.json()["results"]}
        assert statuses["exporter"] == "error"


async def listing(client: httpx.AsyncClient, headers: dict[str, str], query: str = "") -> Any:
    response = await client.get(f"/plugins/exporter/failures{query}", headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


async def test_admin_keys_see_redacted_payloads_read_keys_none(
    client: httpx.AsyncClient,
) -> None:
    await fail(client, 2)
    admin = await listing(client, ADMIN)
    assert [f["payload"]["ticket"]["key"] for f in admin["failures"]] == ["OPS-1", "OPS-0"]
    assert admin["failures"][0]["payload"]["ticket"]["auth"] == "Bearer ***"
    assert admin["failures"][0]["error"] == "PermissionError: export rejected token ***"
    assert admin["matched"] == 2 and admin["store"]["count"] == 2

    read = await listing(client, READ)
    assert [f["id"] for f in read["failures"]] == [f["id"] for f in admin["failures"]]
    for failure in read["failures"]:
        assert "payload" not in failure and failure["payload_stored"] is True
    one = await client.get(f"/plugins/exporter/failures/{read['failures'][0]['id']}", headers=READ)
    assert one.status_code == 200 and "payload" not in one.json()["failure"]
    one = await client.get(f"/plugins/exporter/failures/{read['failures'][0]['id']}", headers=ADMIN)
    assert one.json()["failure"]["payload"]["ticket"]["key"] == "OPS-1"
    everything = (await client.get("/plugins/exporter/failures", headers=ADMIN)).text
    assert BAD_TOKEN not in everything


async def test_fix_the_config_then_replay_all_once(client: httpx.AsyncClient) -> None:
    await fail(client, 3)
    assert len(Bystander.calls) == 3
    response = await client.post(
        "/plugins/exporter/config",
        json={"config": {"secrets": {"EXPORT_TOKEN": GOOD_TOKEN}}},
        headers=ADMIN,
    )
    assert response.status_code == 200

    dry = await client.post("/plugins/exporter/failures/replay?dry_run=true", headers=ADMIN)
    assert dry.status_code == 200
    assert (dry.json()["matched"], dry.json()["outcomes"]) == (3, [])
    assert Exporter.delivered == {}

    done = await client.post("/plugins/exporter/failures/replay", json={}, headers=ADMIN)
    assert done.status_code == 200
    report = done.json()
    assert (report["matched"], report["succeeded"], report["failed"]) == (3, 3, 0)
    assert {o["result"]["status"] for o in report["outcomes"]} == {"success"}
    assert [key for _, p in Exporter.delivered["exporter"] for key in [p["ticket"]["key"]]] == [
        "OPS-0",
        "OPS-1",
        "OPS-2",
    ]
    assert len(Bystander.calls) == 3

    again = await client.post("/plugins/exporter/failures/replay", headers=ADMIN)
    assert again.json()["matched"] == 0
    assert len(Exporter.delivered["exporter"]) == 3
    states = {f["state"] for f in (await listing(client, READ))["failures"]}
    assert states == {"replayed"}
    assert (await listing(client, READ, "?state=pending"))["failures"] == []


async def test_replay_one_then_again_needs_force(client: httpx.AsyncClient) -> None:
    await fail(client, 1)
    (failure,) = (await listing(client, READ))["failures"]
    await client.post(
        "/plugins/exporter/config",
        json={"config": {"secrets": {"EXPORT_TOKEN": GOOD_TOKEN}}},
        headers=ADMIN,
    )
    url = f"/plugins/exporter/failures/{failure['id']}/replay"
    first = await client.post(url, headers=ADMIN)
    assert first.status_code == 200
    assert first.json()["result"]["status"] == "success"
    assert first.json()["result"]["value"] == "exported"
    second = await client.post(url, headers=ADMIN)
    assert second.status_code == 409
    assert second.json()["error"] == "replay_refused"
    forced = await client.post(url + "?force=true", headers=ADMIN)
    assert forced.status_code == 200
    assert [r for r, _ in Exporter.delivered["exporter"]] == [failure["id"]] * 2


async def test_replay_shows_in_history(client: httpx.AsyncClient) -> None:
    await fail(client, 1)
    (failure,) = (await listing(client, READ))["failures"]
    await client.post(f"/plugins/exporter/failures/{failure['id']}/replay", headers=ADMIN)
    history = (await client.get("/plugins/exporter/history?hook=post_plan", headers=READ)).json()
    assert [s["status"] for s in history["history"]["post_plan"]] == ["error", "error"]


async def test_read_keys_cannot_replay_or_discard(client: httpx.AsyncClient) -> None:
    await fail(client, 1)
    (failure,) = (await listing(client, READ))["failures"]
    for method, path in [
        ("POST", "/plugins/exporter/failures/replay"),
        ("POST", f"/plugins/exporter/failures/{failure['id']}/replay"),
        ("DELETE", "/plugins/exporter/failures"),
        ("DELETE", f"/plugins/exporter/failures/{failure['id']}"),
    ]:
        response = await client.request(method, path, headers=READ)
        assert response.status_code == 403, (method, path)
    assert (await listing(client, READ))["matched"] == 1


async def test_discard_one_and_by_filter(client: httpx.AsyncClient) -> None:
    await fail(client, 2)
    await fail(client, 1, hook="pre_plan")
    newest = (await listing(client, READ))["failures"][0]
    gone = await client.delete(f"/plugins/exporter/failures/{newest['id']}", headers=ADMIN)
    assert gone.json() == {"plugin": "exporter", "discarded": 1}
    missing = await client.delete(f"/plugins/exporter/failures/{newest['id']}", headers=ADMIN)
    assert missing.status_code == 404 and missing.json()["error"] == "not_found"
    by_hook = await client.delete("/plugins/exporter/failures?hook=post_plan", headers=ADMIN)
    assert by_hook.json()["discarded"] == 2
    assert (await listing(client, READ))["store"]["count"] == 0


async def test_filters_by_hook_since_and_limit(client: httpx.AsyncClient) -> None:
    await fail(client, 3)
    await fail(client, 1, hook="pre_plan")
    assert (await listing(client, READ, "?hook=pre_plan"))["matched"] == 1
    limited = await listing(client, READ, "?limit=2")
    assert len(limited["failures"]) == 2 and limited["matched"] == 4
    assert (await listing(client, READ, "?since=1h"))["matched"] == 4
    assert (await listing(client, READ, "?since=2999-01-01T00:00:00"))["matched"] == 0
    dry = await client.post(
        "/plugins/exporter/failures/replay",
        json={"hook": "pre_plan", "dry_run": True},
        headers=ADMIN,
    )
    assert dry.json()["matched"] == 1


@pytest.mark.parametrize(
    ("method", "path", "detail"),
    [
        (
            "GET",
            "/plugins/exporter/failures?limit=0",
            "limit must be a whole number from 1 to 1000",
        ),
        (
            "GET",
            "/plugins/exporter/failures?limit=x",
            "limit must be a whole number from 1 to 1000",
        ),
        ("GET", "/plugins/exporter/failures?since=yesterday", "since must be an ISO 8601 time"),
        ("GET", "/plugins/exporter/failures?hook=no-such!", "is not a valid hook name"),
        ("GET", "/plugins/exporter/failures?state=lost", "state must be pending or replayed"),
        ("GET", "/plugins/exporter/failures/abc", "a failure id is a positive whole number"),
        (
            "POST",
            "/plugins/exporter/failures/replay?dry_run=maybe",
            "dry_run must be true or false",
        ),
        ("POST", "/plugins/exporter/failures/replay?limit=5000", "limit must be a whole number"),
        (
            "POST",
            "/plugins/exporter/failures/1/replay?force=perhaps",
            "force must be true or false",
        ),
        ("DELETE", "/plugins/exporter/failures?since=soon", "since must be an ISO 8601 time"),
    ],
)
async def test_bad_input_is_a_400_naming_the_problem(
    client: httpx.AsyncClient, method: str, path: str, detail: str
) -> None:
    response = await client.request(method, path, headers=ADMIN)
    assert response.status_code == 400
    assert response.json()["error"] == "bad_request"
    assert detail in response.json()["detail"]


async def test_bad_bulk_replay_bodies_are_400(client: httpx.AsyncClient) -> None:
    for body in (b"[", b'{"surprise": 1}', b'{"limit": "many"}', b'{"state": "replayed"}'):
        response = await client.post(
            "/plugins/exporter/failures/replay", content=body, headers=ADMIN
        )
        assert response.status_code == 400, body
        assert response.json()["detail"]


async def test_unknown_plugins_and_failures_are_404(client: httpx.AsyncClient) -> None:
    for method, path in [
        ("GET", "/plugins/nobody/failures"),
        ("DELETE", "/plugins/nobody/failures"),
        ("POST", "/plugins/nobody/failures/replay"),
        ("POST", "/plugins/nobody/failures/3/replay"),
        ("GET", "/plugins/exporter/failures/99"),
        ("POST", "/plugins/exporter/failures/99/replay"),
    ]:
        response = await client.request(method, path, headers=ADMIN)
        assert response.status_code == 404, (method, path)
        assert response.json()["error"] == "not_found"


async def test_replaying_a_disabled_plugin_is_409(client: httpx.AsyncClient) -> None:
    await fail(client, 1)
    (failure,) = (await listing(client, READ))["failures"]
    await client.post("/plugins/exporter/disable", headers=ADMIN)
    response = await client.post(
        f"/plugins/exporter/failures/{failure['id']}/replay", headers=ADMIN
    )
    assert response.status_code == 409
    assert response.json() == {
        "error": "replay_refused",
        "detail": "plugin 'exporter' is not active",
    }


async def test_openapi_documents_the_failure_endpoints(client: httpx.AsyncClient) -> None:
    document = (await client.get("/openapi.json", headers=READ)).json()
    paths = document["paths"]
    listing_op = paths["/plugins/{name}/failures"]["get"]
    assert {p["name"] for p in listing_op["parameters"]} >= {"hook", "since", "limit", "name"}
    assert {"400", "404"} <= set(listing_op["responses"])
    assert "dry_run" in {
        p["name"] for p in paths["/plugins/{name}/failures/replay"]["post"]["parameters"]
    }
    assert "409" in paths["/plugins/{name}/failures/{id}/replay"]["post"]["responses"]
    assert "delete" in paths["/plugins/{name}/failures"]
    assert "delete" in paths["/plugins/{name}/failures/{id}"]
    schemas = document["components"]["schemas"]
    assert "payload" in schemas["Failure"]["properties"]
    assert "FailureList" in schemas and "ReplayReport" in schemas


async def test_bulk_replays_are_rate_limited_but_dry_runs_are_not(
    client: httpx.AsyncClient,
) -> None:
    url = "/plugins/exporter/failures/replay"
    for _ in range(10):
        assert (await client.post(url + "?dry_run=true", headers=ADMIN)).status_code == 200
    for _ in range(6):  # REPLAY_BULK_PER_MINUTE's default
        assert (await client.post(url, headers=ADMIN)).status_code == 200
    refused = await client.post(url, headers=ADMIN)
    assert refused.status_code == 429
    assert refused.json()["error"] == "too_many_requests"
    assert refused.json()["detail"].startswith("too many bulk replays of 'exporter'")
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    assert (await client.post(url + "?dry_run=true", headers=ADMIN)).status_code == 200


async def test_replays_and_discards_are_audited_but_dry_runs_are_not(
    client: httpx.AsyncClient,
) -> None:
    await fail(client, 2)
    failure = (await listing(client, READ))["failures"][0]
    await client.post(f"/plugins/exporter/failures/{failure['id']}/replay", headers=ADMIN)
    await client.post("/plugins/exporter/failures/replay?dry_run=true", headers=ADMIN)
    await client.post("/plugins/exporter/failures/replay", headers=ADMIN)
    await client.delete("/plugins/exporter/failures", headers=ADMIN)
    records = (await client.get("/audit", headers=ADMIN)).json()["records"]
    assert [(r["action"], r["plugin"], r["outcome"]) for r in records] == [
        ("replay", "exporter", "ok"),
        ("replay_all", "exporter", "ok"),
        ("discard", "exporter", "ok"),
    ]
    # What each action did to the failures: the token is still wrong, so the replays fail.
    assert [r["after"] for r in records] == [
        {f"failures.{failure['id']}.replay": "error"},
        {
            f"failures.{failure['id'] - 1}.replay": "error",
            f"failures.{failure['id']}.replay": "error",
        },
        {"failures.discarded": 2},
    ]
    assert BAD_TOKEN not in str(records)
