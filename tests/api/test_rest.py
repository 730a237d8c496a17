"""The REST endpoints: every row of the table and every error status."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import httpx
import pytest
from msgspec import to_builtins as plain
from starlette.applications import Starlette

from agent_pm.api._reading import MAX_BODY_BYTES
from agent_pm.plugins import PluginRegistry
from tests.api.conftest import ADMIN, MANIFEST, every_endpoint

pytestmark = pytest.mark.anyio


async def test_list_plugins_returns_metadata_and_revision(
    client: httpx.AsyncClient, registry: PluginRegistry
) -> None:
    response = await client.get("/plugins", headers=ADMIN)
    assert response.status_code == 200
    body = response.json()
    assert body["revision"] == registry.revision
    assert response.headers["etag"].startswith(f'"{registry.revision}.')
    assert [p["name"] for p in body["plugins"]] == [
        "echo",
        "strict",
        "routed",
        "secretive",
        "unencodable",
        "broken",
    ]
    assert body["plugins"] == plain(registry.list_metadata())
    assert body["config_errors"] == []


async def test_list_plugins_reports_a_manifest_edit_that_was_not_applied(
    client: httpx.AsyncClient, registry: PluginRegistry, manifest_path
) -> None:
    manifest_path.write_text("- name: [not yaml\n")
    response = await client.post("/plugins/reload", headers=ADMIN)
    assert response.status_code == 409
    body = (await client.get("/plugins", headers=ADMIN)).json()
    assert "not valid YAML" in body["config_errors"][0]
    assert "echo" in [p["name"] for p in body["plugins"]]  # the running state is untouched


async def test_get_plugin_returns_its_metadata(client: httpx.AsyncClient) -> None:
    response = await client.get("/plugins/echo", headers=ADMIN)
    assert response.status_code == 200
    assert response.json()["plugin"]["state"] == "enabled"
    broken = (await client.get("/plugins/broken", headers=ADMIN)).json()["plugin"]
    assert broken["invalid"] and "does_not_exist" in broken["error"]


async def test_get_unknown_plugin_is_404(client: httpx.AsyncClient) -> None:
    response = await client.get("/plugins/nobody", headers=ADMIN)
    assert response.status_code == 404
    assert response.json() == {"error": "not_found", "detail": "no plugin named 'nobody'"}


async def test_history_filters_by_hook_and_limit(client: httpx.AsyncClient) -> None:
    for _ in range(3):
        await client.post("/hooks/post_plan", headers=ADMIN, json={})
    await client.post("/hooks/pre_plan", headers=ADMIN, json={})
    everything = (await client.get("/plugins/echo/history", headers=ADMIN)).json()
    assert everything["plugin"] == "echo"
    assert len(everything["history"]["post_plan"]) == 3
    assert len(everything["history"]["pre_plan"]) == 1
    response = await client.get("/plugins/echo/history?hook=post_plan&limit=2", headers=ADMIN)
    history = response.json()["history"]
    assert list(history) == ["post_plan"]
    assert [s["seq"] for s in history["post_plan"]] == [
        s["seq"] for s in everything["history"]["post_plan"][-2:]
    ]


async def test_history_rejects_bad_limit_and_unknown_plugin(client: httpx.AsyncClient) -> None:
    bad = await client.get("/plugins/echo/history?limit=-1", headers=ADMIN)
    assert bad.status_code == 400 and bad.json()["error"] == "bad_request"
    assert (await client.get("/plugins/nobody/history", headers=ADMIN)).status_code == 404


async def test_discover_lists_the_catalogue(plugin_site: Path, client: httpx.AsyncClient) -> None:
    response = await client.get("/plugins/discover", headers=ADMIN)
    assert response.status_code == 200
    entries = {e["entry_point"]: e for e in response.json()["entry_points"]}
    assert entries["echo-ep"]["configured"] is True
    assert entries["echo-ep"]["plugin_name"] == "echo"
    assert entries["strict-ep"]["configured"] is True
    assert entries["missing-ep"]["error"].startswith("cannot load")
    for key in ("module", "description", "hooks", "distribution"):
        assert key in entries["echo-ep"]


async def test_install_by_entry_point(
    plugin_site: Path, client: httpx.AsyncClient, manifest_path: Path
) -> None:
    body = {"entry_point": "echo-ep", "name": "echo2", "enabled": True, "description": "again"}
    response = await client.post("/plugins/install", headers=ADMIN, json=body)
    assert response.status_code == 201
    plugin = response.json()["plugin"]
    assert (plugin["name"], plugin["active"], plugin["description"]) == ("echo2", True, "again")
    assert "name: echo2" in manifest_path.read_text()
    assert manifest_path.read_text().startswith("# operators' comment")


async def test_install_unknown_or_broken_entry_point(
    plugin_site: Path, client: httpx.AsyncClient
) -> None:
    unknown = await client.post("/plugins/install", headers=ADMIN, json={"entry_point": "nope"})
    assert unknown.status_code == 404
    broken = await client.post(
        "/plugins/install", headers=ADMIN, json={"entry_point": "missing-ep", "name": "m"}
    )
    assert broken.status_code == 409 and broken.json()["error"] == "load_failed"


async def test_install_by_allowed_module_with_config(client: httpx.AsyncClient) -> None:
    body = {
        "module": "tests.fixtures.route_plugins:Strict",
        "name": "strict2",
        "config": {"channel": "#ops", "limits": {"per_minute": 5}},
    }
    response = await client.post("/plugins/install", headers=ADMIN, json=body)
    assert response.status_code == 201
    assert response.json()["plugin"]["config"]["limits"] == {"per_minute": 5}
    assert response.json()["plugin"]["enabled"] is False


async def test_install_refuses_module_outside_allowlist_before_importing(
    client: httpx.AsyncClient,
) -> None:
    body = {"module": "tests.fixtures.import_sentinel:Sentinel"}
    response = await client.post("/plugins/install", headers=ADMIN, json=body)
    assert response.status_code == 403
    assert response.json()["error"] == "install_refused"
    assert "tests.fixtures.import_sentinel" not in sys.modules


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        (b"{}", "exactly one"),
        (b'{"entry_point": "echo-ep", "module": "a.b:C"}', "exactly one"),
        (b"not json", "malformed"),
        (b"[1, 2]", "malformed"),
        (b'{"module": "no colon"}', "malformed"),
        (b'{"module": "a.b:C", "surprise": 1}', "malformed"),
        (b"", "required"),
    ],
)
async def test_install_rejects_malformed_bodies(
    client: httpx.AsyncClient, body: bytes, detail: str
) -> None:
    response = await client.post("/plugins/install", headers=ADMIN, content=body)
    assert response.status_code == 400
    assert detail in response.json()["detail"]


async def test_install_duplicate_name_is_409(client: httpx.AsyncClient) -> None:
    body = {"module": "tests.fixtures.plugins:Echo"}
    response = await client.post("/plugins/install", headers=ADMIN, json=body)
    assert response.status_code == 409
    assert response.json()["error"] == "plugin_exists"


async def test_install_invalid_config_is_422_with_path(client: httpx.AsyncClient) -> None:
    body = {
        "module": "tests.fixtures.route_plugins:Strict",
        "name": "strict3",
        "config": {"limits": {"per_minute": "many"}},
    }
    response = await client.post("/plugins/install", headers=ADMIN, json=body)
    assert response.status_code == 422
    assert response.json()["error"] == "invalid_config"
    assert response.json()["path"] == "$.limits.per_minute"


async def test_enable_and_disable(client: httpx.AsyncClient, registry: PluginRegistry) -> None:
    enabled = await client.post("/plugins/strict/enable", headers=ADMIN)
    assert enabled.status_code == 200
    assert enabled.json()["plugin"]["active"] is True
    assert registry.get("strict") is not None
    disabled = await client.post("/plugins/strict/disable", headers=ADMIN)
    assert disabled.json()["plugin"]["state"] == "disabled"
    assert registry.get("strict") is None


async def test_enable_unknown_or_invalid_plugin(client: httpx.AsyncClient) -> None:
    assert (await client.post("/plugins/nobody/enable", headers=ADMIN)).status_code == 404
    assert (await client.post("/plugins/nobody/disable", headers=ADMIN)).status_code == 404
    invalid = await client.post("/plugins/broken/enable", headers=ADMIN)
    assert invalid.status_code == 409 and "invalid" in invalid.json()["detail"]


async def test_reload_plugin(client: httpx.AsyncClient, registry: PluginRegistry) -> None:
    before = registry.get("echo")
    response = await client.post("/plugins/echo/reload", headers=ADMIN)
    assert response.status_code == 200
    assert response.json()["plugin"]["active"] is True
    assert registry.get("echo") is not before
    assert (await client.post("/plugins/nobody/reload", headers=ADMIN)).status_code == 404


@pytest.fixture
def hot_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Path]:
    """A plugin module of its own package, to break between loads."""
    package = tmp_path / "hot_reload_pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    module = package / "hot.py"
    module.write_text(
        "from agent_pm.plugins import PluginBase\n\n"
        "class Hot(PluginBase):\n    name = 'hot'\n    hooks = ('post_plan',)\n\n"
        "    async def post_plan(self, **payload):\n        return 'v1'\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    yield module
    for name in [n for n in sys.modules if n.startswith("hot_reload_pkg")]:
        del sys.modules[name]


async def test_reload_plugin_failure_is_409_and_keeps_old_version(
    hot_module: Path, client: httpx.AsyncClient, registry: PluginRegistry, manifest_path: Path
) -> None:
    manifest_path.write_text(
        MANIFEST + "- name: hot\n  module: hot_reload_pkg.hot:Hot\n  enabled: true\n"
    )
    assert (await client.post("/plugins/reload", headers=ADMIN)).status_code == 200
    hot_module.write_text("this is not python\n")
    response = await client.post("/plugins/hot/reload", headers=ADMIN)
    assert response.status_code == 409
    assert response.json()["error"] == "load_failed"
    results = (await client.post("/hooks/post_plan", headers=ADMIN, json={})).json()["results"]
    assert {"plugin": "hot", "value": "v1"}.items() <= next(
        r for r in results if r["plugin"] == "hot"
    ).items()


async def test_update_config_replaces_and_validates(
    client: httpx.AsyncClient, manifest_path: Path
) -> None:
    body = {"config": {"channel": "#ops"}}
    response = await client.post("/plugins/strict/config", headers=ADMIN, json=body)
    assert response.status_code == 200
    assert response.json()["plugin"]["config"] == {"channel": "#ops"}
    assert "channel: '#ops'" in manifest_path.read_text()


async def test_update_config_errors(client: httpx.AsyncClient) -> None:
    invalid = await client.post(
        "/plugins/strict/config", headers=ADMIN, json={"config": {"chanel": "#typo"}}
    )
    assert invalid.status_code == 422
    assert invalid.json()["path"] == "$.chanel"
    malformed = await client.post("/plugins/strict/config", headers=ADMIN, json={"conf": {}})
    assert malformed.status_code == 400
    unknown = await client.post("/plugins/nobody/config", headers=ADMIN, json={"config": {}})
    assert unknown.status_code == 404


async def test_delete_removes_the_entry(
    client: httpx.AsyncClient, registry: PluginRegistry, manifest_path: Path
) -> None:
    response = await client.delete("/plugins/echo", headers=ADMIN)
    assert response.status_code == 200
    assert response.json() == {"removed": "echo"}
    assert "echo" not in registry.names()
    assert "name: echo" not in manifest_path.read_text()
    assert (await client.delete("/plugins/echo", headers=ADMIN)).status_code == 404


async def test_reload_all_rereads_the_manifest(
    client: httpx.AsyncClient, registry: PluginRegistry, manifest_path: Path
) -> None:
    manifest_path.write_text("- name: echo\n  module: tests.fixtures.plugins:Echo\n")
    response = await client.post("/plugins/reload", headers=ADMIN)
    assert response.status_code == 200
    body = response.json()
    assert [p["name"] for p in body["plugins"]] == ["echo"]
    assert body["revision"] == registry.revision


async def test_reload_all_with_broken_manifest_is_409(
    client: httpx.AsyncClient, registry: PluginRegistry, manifest_path: Path
) -> None:
    manifest_path.write_text("{not: [a list")
    response = await client.post("/plugins/reload", headers=ADMIN)
    assert response.status_code == 409
    assert response.json()["error"] == "manifest_error"
    assert registry.get("echo") is not None


async def test_fire_hook_returns_results(client: httpx.AsyncClient) -> None:
    response = await client.post("/hooks/post_plan", headers=ADMIN, json={"plan": {"id": 7}})
    assert response.status_code == 200
    results = {r["plugin"]: r for r in response.json()["results"]}
    assert results["echo"]["value"] == {"echo": {"plan": {"id": 7}}}
    assert results["echo"]["status"] == "success"
    assert results["secretive"]["status"] == "skipped"
    empty = await client.post("/hooks/nobody_listens", headers=ADMIN)
    assert empty.json() == {"results": []}


async def test_fire_hook_turns_unencodable_values_into_text(client: httpx.AsyncClient) -> None:
    await client.post("/plugins/unencodable/enable", headers=ADMIN)
    for kind in ("object", "cyclic"):
        response = await client.post("/hooks/post_plan", headers=ADMIN, json={"kind": kind})
        assert response.status_code == 200
        result = next(r for r in response.json()["results"] if r["plugin"] == "unencodable")
        assert isinstance(result["value"], str)
        assert result["value"].startswith("{" if kind == "object" else "[")


DEEP = b'{"a":' + b"[" * 100_000 + b"]" * 100_000 + b"}"


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/hooks/post_plan", b"[1]"),
        ("/hooks/post_plan", b"{oops"),
        ("/hooks/bad-name!", b"{}"),
        ("/hooks/post_plan", DEEP),
        ("/plugins/strict/config", DEEP),
    ],
)
async def test_fire_hook_rejects_bad_requests(
    client: httpx.AsyncClient, path: str, body: bytes
) -> None:
    response = await client.post(path, headers=ADMIN, content=body)
    assert response.status_code == 400


async def test_health_needs_no_key(client: httpx.AsyncClient) -> None:
    response = await client.get("/health")
    assert response.status_code == 200
    assert response.json()["status"] == "ok"
    assert response.json()["bus"] == {
        "backend": "embedded",
        "state": "up",
        "node": None,
        "forwarded": 0,
        "received": 0,
        "dropped": 0,
        "local": 0,
        "pending": 0,
        "reconnects": 0,
    }


ADMIN_CALLS = [
    ("POST", "/plugins/install", {"module": "tests.fixtures.plugins:SyncEcho"}),
    ("POST", "/plugins/strict/enable", None),
    ("POST", "/plugins/echo/disable", None),
    ("POST", "/plugins/echo/reload", None),
    ("POST", "/plugins/strict/config", {"config": {}}),
    ("DELETE", "/plugins/echo", None),
    ("POST", "/plugins/reload", None),
    ("POST", "/hooks/post_plan", {}),
]


@pytest.mark.parametrize(("method", "path", "body"), ADMIN_CALLS)
async def test_stale_if_match_is_412_and_changes_nothing(
    client: httpx.AsyncClient,
    registry: PluginRegistry,
    manifest_path: Path,
    method: str,
    path: str,
    body: object,
) -> None:
    before = manifest_path.read_text()
    stale = {**ADMIN, "If-Match": f'"{registry.revision - 1}"'}
    response = await client.request(method, path, headers=stale, json=body)
    assert response.status_code == 412
    assert response.json()["error"] == "revision_conflict"
    assert manifest_path.read_text() == before


@pytest.mark.parametrize(("method", "path", "body"), ADMIN_CALLS)
async def test_current_if_match_is_accepted(
    client: httpx.AsyncClient, registry: PluginRegistry, method: str, path: str, body: object
) -> None:
    current = {**ADMIN, "If-Match": str(registry.revision)}
    response = await client.request(method, path, headers=current, json=body)
    assert response.status_code in (200, 201)


@pytest.mark.parametrize("value", ["yesterday", "-1", "\u00b2"])
async def test_if_match_must_be_a_revision(client: httpx.AsyncClient, value: str) -> None:
    headers = {**ADMIN, "If-Match": value.encode()}
    response = await client.post("/plugins/echo/disable", headers=headers)
    assert response.status_code == 400


async def test_fifty_concurrent_updates_with_one_revision_let_exactly_one_through(
    client: httpx.AsyncClient, registry: PluginRegistry, manifest_path: Path
) -> None:
    headers = {**ADMIN, "If-Match": str(registry.revision)}
    statuses: list[int] = []

    async def update(n: int) -> None:
        body = {"config": {"mode": f"update-{n}"}}
        response = await client.post("/plugins/echo/config", headers=headers, json=body)
        statuses.append(response.status_code)

    async with anyio.create_task_group() as group:
        for n in range(50):
            group.start_soon(update, n)
    assert sorted(statuses) == [200] + [412] * 49
    winner = plain(registry.metadata_for("echo"))["config"]["mode"]
    assert f"mode: {winner}" in manifest_path.read_text()


async def test_etag_round_trips_into_if_match(client: httpx.AsyncClient) -> None:
    etag = (await client.get("/plugins", headers=ADMIN)).headers["etag"]
    first = await client.post("/plugins/echo/disable", headers={**ADMIN, "If-Match": etag})
    assert first.status_code == 200
    second = await client.post("/plugins/echo/enable", headers={**ADMIN, "If-Match": etag})
    assert second.status_code == 412


async def test_body_over_the_limit_is_413_by_content_length(client: httpx.AsyncClient) -> None:
    body = b'{"config": {"x": "' + b"a" * MAX_BODY_BYTES + b'"}}'
    response = await client.post("/plugins/strict/config", headers=ADMIN, content=body)
    assert response.status_code == 413
    assert response.json()["error"] == "body_too_large"


async def test_body_over_the_limit_is_413_while_streaming(client: httpx.AsyncClient) -> None:
    sent = 0

    async def chunks() -> AsyncIterator[bytes]:
        nonlocal sent
        for _ in range(64):
            sent += 1
            yield b"x" * 65536

    response = await client.post("/hooks/post_plan", headers=ADMIN, content=chunks())
    assert response.status_code == 413
    assert sent < 64  # reading stopped at the limit


async def test_invalid_content_length_is_400(client: httpx.AsyncClient) -> None:
    headers = {**ADMIN, "Content-Length": "lots"}
    response = await client.post("/hooks/post_plan", headers=headers, content=b"{}")
    assert response.status_code == 400


async def test_unknown_route_and_method_are_json_errors(client: httpx.AsyncClient) -> None:
    missing = await client.get("/nothing/here", headers=ADMIN)
    assert missing.status_code == 404 and missing.json()["error"] == "not_found"
    wrong = await client.put("/plugins", headers=ADMIN)
    assert wrong.status_code == 405 and wrong.json()["error"] == "method_not_allowed"


async def test_unexpected_error_is_a_logged_json_500(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    response = await client.get("/plugins/routed/boom", headers=ADMIN)
    assert response.status_code == 500
    assert response.json() == {"error": "internal_error", "detail": "unexpected server error"}
    assert "route exploded" in caplog.text


async def test_rest_over_a_real_server(live_url: str) -> None:
    async with httpx.AsyncClient(base_url=live_url, headers=ADMIN) as live:
        assert (await live.get("/health")).json()["status"] == "ok"
        assert (await live.post("/plugins/strict/enable")).json()["plugin"]["active"] is True
        results = (await live.post("/hooks/post_plan", json={"n": 1})).json()["results"]
        assert {r["plugin"] for r in results} >= {"echo", "strict", "routed"}
        too_big = await live.post("/hooks/post_plan", content=b"x" * (MAX_BODY_BYTES + 1))
        assert too_big.status_code == 413


DIGITS = "9" * 5000  # past Python's 4,300-digit limit for int()
GARBAGE = [
    b"",
    b"null",
    b"\xff\xfe\x00",
    b"{}",
    b'{"config": null}',
    b"1e999999",
    b'{"": []}',
    b'{"config": {"a": "\xff"}}',
    b'{"config": {"a": "\xed\xa0\x80"}}',
    b'{"\xc3\x28": 1}',
    b'{"config": {"n": ' + DIGITS.encode() + b"}}",
]
QUERIES = ("", "?limit=%FF&hook=%00", f"?limit={DIGITS}&since={DIGITS}", "?since=%ED%A0%80")


async def test_no_malformed_request_yields_a_500(app: Starlette, client: httpx.AsyncClient) -> None:
    for method, path in every_endpoint(app):
        for body in GARBAGE:
            for url in [path + query for query in QUERIES] + [path.replace("echo", "%C3%28")]:
                response = await client.request(method, url, headers=ADMIN, content=body)
                assert response.status_code < 500, (method, url, body, response.text)
        headers = {**ADMIN, "If-Match": f'"{DIGITS}"'}
        response = await client.request(method, path, headers=headers, content=b"{}")
        assert response.status_code < 500, (method, path, "If-Match", response.text)


@pytest.mark.parametrize(
    "body",
    [b'{"config": {"a": "\xff"}}', b'{"config": {"a": "\xed\xa0\x80"}}', b'{"\xc3\x28": 1}'],
)
async def test_invalid_utf8_inside_json_is_a_400_naming_it(
    client: httpx.AsyncClient, body: bytes
) -> None:
    for path in ("/plugins/echo/config", "/hooks/post_plan"):
        response = await client.post(path, headers=ADMIN, content=body)
        assert response.status_code == 400, (path, response.text)
        assert "invalid UTF-8 at byte" in response.json()["detail"]


async def test_integers_past_the_digit_limit_are_a_400(client: httpx.AsyncClient) -> None:
    history = await client.get(f"/plugins/echo/history?limit={DIGITS}", headers=ADMIN)
    assert history.status_code == 400 and "limit" in history.json()["detail"]
    headers = {**ADMIN, "If-Match": f'"{DIGITS}"'}
    disable = await client.post("/plugins/echo/disable", headers=headers)
    assert disable.status_code == 400 and "If-Match" in disable.json()["detail"]
    audit = await client.get(f"/audit?since={DIGITS}", headers=ADMIN)
    assert audit.status_code == 400
    length = await client.post(
        "/hooks/post_plan", headers={**ADMIN, "Content-Length": DIGITS}, content=b"{}"
    )
    assert length.status_code in (400, 413)
