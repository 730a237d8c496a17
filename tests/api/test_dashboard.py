"""Dashboard pages, admin actions and the live channel, served in-process."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from agent_pm.settings import Settings
from tests.api.dashboard_app import (
    ADMIN_KEY,
    MANIFEST,
    READ_KEY,
    SECRET_VALUE,
    build_app,
    dashboard_settings,
)

HX = {"HX-Request": "true"}


@pytest.fixture
def manifest(tmp_path: Path) -> Path:
    path = tmp_path / "plugins.yaml"
    path.write_text(MANIFEST)
    return path


@pytest.fixture
def client(manifest: Path) -> Iterator[TestClient]:
    settings = dashboard_settings(manifest)
    environ = {**settings.environ, "PLUGIN_INSTALL_ALLOW": "tests.fixtures"}
    with TestClient(build_app(manifest, Settings.from_env(environ))) as test_client:
        yield test_client


def login(client: TestClient, key: str = ADMIN_KEY) -> str:
    response = client.post("/login", data={"api_key": key}, follow_redirects=False)
    assert response.status_code == 303
    return csrf_of(client.get("/dashboard").text)


def csrf_of(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match is not None
    return match.group(1)


def registry(client: TestClient) -> Any:
    return client.app.state.registry  # type: ignore[attr-defined]


# -- login, logout and the page --------------------------------------------------------------


def test_dashboard_without_session_redirects_to_login(client: TestClient) -> None:
    response = client.get("/dashboard", follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"] == "/login"


def test_login_page_has_security_headers_and_no_inline_script(client: TestClient) -> None:
    response = client.get("/login")
    assert response.status_code == 200
    csp = response.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "style-src 'self'" in csp
    assert "unsafe-inline" not in csp
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert "<script>" not in response.text and "style=" not in response.text


def test_login_with_wrong_key_is_refused(client: TestClient) -> None:
    response = client.post("/login", data={"api_key": "nope"})
    assert response.status_code == 401
    assert "That key is not valid." in response.text
    assert "agent_pm_session" not in response.headers.get("set-cookie", "")


def test_login_sets_a_strict_http_only_cookie(client: TestClient) -> None:
    response = client.post("/login", data={"api_key": READ_KEY}, follow_redirects=False)
    cookie = response.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Secure" not in cookie
    assert client.get("/login", follow_redirects=False).headers["location"] == "/dashboard"


def test_login_over_https_sets_a_secure_cookie(manifest: Path) -> None:
    with TestClient(build_app(manifest), base_url="https://testserver") as https:
        response = https.post("/login", data={"api_key": READ_KEY}, follow_redirects=False)
    assert "Secure" in response.headers["set-cookie"]


def test_login_from_another_origin_is_refused(client: TestClient) -> None:
    headers = {"Origin": "http://evil.example"}
    response = client.post("/login", data={"api_key": ADMIN_KEY}, headers=headers)
    assert response.status_code == 403


def test_dashboard_shows_every_plugin_and_the_invalid_entry(client: TestClient) -> None:
    login(client)
    page = client.get("/dashboard").text
    for name in ["echo", "configured", "failing", "secretive", "needs_token", "broken"]:
        assert f'id="row-{name}"' in page
    assert "Invalid entry:" in page and "is not a PluginBase subclass" in page
    assert "⚠</span> API_TOKEN" in page
    assert "No hooks fired yet — run with <code>--demo</code>" in page
    assert 'id="admin"' in page and "Install a plugin" in page
    assert "Discovered entry point" in page


def test_dashboard_never_renders_a_secret(client: TestClient) -> None:
    login(client)
    client.post("/hooks/post_plan", headers={"X-API-Key": ADMIN_KEY})
    page = client.get("/dashboard?pair=secretive:post_plan").text
    assert SECRET_VALUE not in page
    assert ADMIN_KEY not in page and READ_KEY not in page
    assert "&#34;API_TOKEN&#34;: &#34;***&#34;" in page
    assert "upstream refused token ***" in page


def test_dashboard_shows_metrics_chart_and_history_after_hooks(client: TestClient) -> None:
    login(client)
    for _ in range(3):
        client.post("/hooks/post_plan", headers={"X-API-Key": ADMIN_KEY})
    page = client.get("/dashboard?pair=failing:post_plan").text
    assert "No hooks fired yet" not in page
    assert 'id="hook-chart"' in page and "post_plan: 15 invocations" in page
    assert page.count('class="mark m-error"') == 3
    assert page.count('<span class="status status-error">error</span>') == 3
    assert 'value="failing:post_plan" selected' in page


def test_read_only_session_sees_no_admin_controls(client: TestClient) -> None:
    login(client, READ_KEY)
    page = client.get("/dashboard").text
    assert 'id="admin"' not in page and "Save config" not in page and "/enabled" not in page
    assert "read access" in page


def test_logout_needs_csrf_and_clears_the_session(client: TestClient) -> None:
    csrf = login(client, READ_KEY)
    assert client.post("/logout").status_code == 403
    response = client.post("/logout", data={"csrf_token": csrf}, follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == "/login"
    assert 'agent_pm_session=""' in response.headers["set-cookie"]
    assert client.get("/dashboard", follow_redirects=False).status_code == 303


def test_static_assets_are_served(client: TestClient) -> None:
    assets = ["vendor/htmx.min.js", "vendor/hx-ws.min.js", "dashboard.js"]
    for path in [f"/static/{asset}" for asset in assets]:
        response = client.get(path)
        assert response.status_code == 200, path
    assert client.get("/static/dashboard.css").headers["content-type"].startswith("text/css")


# -- admin actions ---------------------------------------------------------------------------


def test_admin_post_without_csrf_is_refused(client: TestClient) -> None:
    login(client)
    response = client.post("/dashboard/plugins/echo/enabled", data={"enabled": "false"})
    assert response.status_code == 403
    wrong = {"enabled": "false", "csrf_token": "forged"}
    assert client.post("/dashboard/plugins/echo/enabled", data=wrong).status_code == 403
    assert registry(client).metadata_for("echo")["state"] == "enabled"


def test_admin_post_without_session_is_refused(client: TestClient) -> None:
    response = client.post("/dashboard/plugins/echo/enabled", headers={"X-API-Key": ADMIN_KEY})
    assert response.status_code == 403


def test_admin_post_from_another_origin_is_refused(client: TestClient) -> None:
    csrf = login(client)
    response = client.post(
        "/dashboard/plugins/echo/enabled",
        data={"enabled": "false", "csrf_token": csrf},
        headers={"Origin": "http://evil.example"},
    )
    assert response.status_code == 403


def test_read_only_session_cannot_act_even_with_csrf(client: TestClient) -> None:
    csrf = login(client, READ_KEY)
    for action in ["enabled", "reload", "config", "remove"]:
        response = client.post(f"/dashboard/plugins/echo/{action}", data={"csrf_token": csrf})
        assert response.status_code == 403, action
    assert client.post("/dashboard/install", data={"csrf_token": csrf}).status_code == 403
    assert registry(client).metadata_for("echo")["state"] == "enabled"


def test_admin_toggle_disables_and_enables(client: TestClient, manifest: Path) -> None:
    csrf = login(client)
    response = client.post(
        "/dashboard/plugins/echo/enabled", data={"enabled": "false", "csrf_token": csrf}, headers=HX
    )
    assert response.status_code == 200
    assert 'id="admin-echo"' in response.text and ">Enable</button>" in response.text
    assert "Disabled." in response.text
    assert registry(client).metadata_for("echo")["state"] == "disabled"
    assert "enabled: false" in manifest.read_text()
    data = {"enabled": "true", "csrf_token": csrf}
    client.post("/dashboard/plugins/echo/enabled", data=data, headers=HX)
    assert registry(client).metadata_for("echo")["state"] == "enabled"


def test_admin_action_without_htmx_returns_the_page(client: TestClient) -> None:
    csrf = login(client)
    response = client.post("/dashboard/plugins/echo/reload", data={"csrf_token": csrf})
    assert response.status_code == 200
    assert "<!doctype html>" in response.text and "Reloaded." in response.text


def test_invalid_config_shows_inline_error_and_saves_nothing(
    client: TestClient, manifest: Path
) -> None:
    csrf = login(client)
    before = manifest.read_text()
    data = {"config": json.dumps({"channel": "#ops", "retries": "many"}), "csrf_token": csrf}
    response = client.post("/dashboard/plugins/configured/config", data=data, headers=HX)
    assert response.status_code == 422
    row = re.search(r'<tr class="invalid"><td><code>(\w+)</code>.*?</tr>', response.text, re.S)
    assert row is not None and row.group(1) == "retries"
    assert "Expected `int`, got `str`" in row.group(0) and "nothing was saved" in row.group(0)
    assert "&#34;many&#34;" in response.text  # the operator's input is kept for fixing
    assert manifest.read_text() == before
    assert registry(client).metadata_for("configured")["config"]["retries"] == 2


def test_unknown_config_key_is_reported_next_to_the_editor(client: TestClient) -> None:
    csrf = login(client)
    data = {"config": json.dumps({"colour": "red"}), "csrf_token": csrf}
    response = client.post("/dashboard/plugins/configured/config", data=data, headers=HX)
    assert response.status_code == 422
    assert "<code>colour</code>: unknown config key" in response.text


@pytest.mark.parametrize(
    ("text", "message"),
    [("{not json", "not valid JSON"), ("[1, 2]", "must be a JSON object")],
)
def test_config_that_is_not_an_object_is_refused(
    client: TestClient, manifest: Path, text: str, message: str
) -> None:
    csrf = login(client)
    before = manifest.read_text()
    data = {"config": text, "csrf_token": csrf}
    response = client.post("/dashboard/plugins/configured/config", data=data, headers=HX)
    assert response.status_code == 422 and message in response.text
    assert manifest.read_text() == before


def test_valid_config_is_saved_and_masked_secrets_are_kept(
    client: TestClient, manifest: Path
) -> None:
    csrf = login(client)
    data = {"config": json.dumps({"channel": "#new", "retries": 5}), "csrf_token": csrf}
    response = client.post("/dashboard/plugins/configured/config", data=data, headers=HX)
    assert response.status_code == 200 and "Config saved." in response.text
    assert "#new" in manifest.read_text()
    masked = {"config": json.dumps({"secrets": {"API_TOKEN": "***"}}), "csrf_token": csrf}
    response = client.post("/dashboard/plugins/secretive/config", data=masked, headers=HX)
    assert response.status_code == 200
    assert SECRET_VALUE in manifest.read_text()


def test_remove_needs_the_typed_name(client: TestClient) -> None:
    csrf = login(client)
    data = {"confirm": "nope", "csrf_token": csrf}
    response = client.post("/dashboard/plugins/echo/remove", data=data, headers=HX)
    assert response.status_code == 422 and "Type echo to confirm" in response.text
    data["confirm"] = "echo"
    response = client.post("/dashboard/plugins/echo/remove", data=data, headers=HX)
    assert response.status_code == 200 and "Removed echo." in response.text
    assert "echo" not in registry(client).names()


def test_action_on_unknown_or_invalid_plugin_reports_the_error(client: TestClient) -> None:
    csrf = login(client)
    response = client.post("/dashboard/plugins/ghost/reload", data={"csrf_token": csrf}, headers=HX)
    assert response.status_code == 404 and "no plugin named" in response.text
    response = client.post(
        "/dashboard/plugins/broken/reload", data={"csrf_token": csrf}, headers=HX
    )
    assert response.status_code == 409 and "is not a PluginBase subclass" in response.text


def test_install_from_a_module_path(client: TestClient) -> None:
    csrf = login(client)
    data = {"module": "tests.fixtures.plugins:Configured", "name": "second", "csrf_token": csrf}
    response = client.post("/dashboard/install", data=data, headers=HX)
    assert response.status_code == 200 and "Installed second" in response.text
    assert 'id="admin-second"' in response.text
    assert registry(client).metadata_for("second")["state"] == "disabled"


def test_install_refusals_are_shown(client: TestClient) -> None:
    csrf = login(client)
    response = client.post("/dashboard/install", data={"csrf_token": csrf}, headers=HX)
    assert response.status_code == 409 and "choose an entry point" in response.text
    data = {"module": "os.path:join", "csrf_token": csrf}
    response = client.post("/dashboard/install", data=data)
    assert response.status_code == 409 and "not allowed" in response.text
    assert "<!doctype html>" in response.text


def test_install_lists_and_trusts_discovered_entry_points(client: TestClient) -> None:
    csrf = login(client)
    page = client.get("/dashboard").text
    assert "hello — hello_plugin.plugin:HelloPlugin" in page  # the example package, installed
    data = {"entry_point": "hello", "name": "hello2", "csrf_token": csrf}
    response = client.post("/dashboard/install", data=data, headers=HX)
    assert response.status_code == 200, response.text
    assert registry(client).metadata_for("hello2")["module"] == "hello_plugin.plugin:HelloPlugin"
    data = {"entry_point": "not-installed", "csrf_token": csrf}
    response = client.post("/dashboard/install", data=data, headers=HX)
    assert response.status_code == 409 and "not-installed" in response.text


def test_oversized_form_is_refused(client: TestClient) -> None:
    csrf = login(client)
    data = {"config": "x" * 300_000, "csrf_token": csrf}
    assert client.post("/dashboard/plugins/echo/config", data=data).status_code == 413


# -- the live channel ------------------------------------------------------------------------


def receive(ws: Any) -> dict[str, Any]:
    return json.loads(ws.receive_text())


def receive_until(ws: Any, needle: str, limit: int = 10) -> str:
    """Messages are coalesced per tick, so one change may arrive in the first or a later one."""
    seen = ""
    for _ in range(limit):
        seen += receive(ws)["content"]
        if needle in seen:
            return seen
    raise AssertionError(f"{needle!r} never arrived")


def test_live_channel_refuses_without_session(client: TestClient) -> None:
    with (
        pytest.raises(WebSocketDisconnect) as e,
        client.websocket_connect("/dashboard/live") as ws,
    ):
        ws.receive_text()
    assert e.value.code == 1008


def test_live_channel_closes_for_a_session_the_middleware_let_through(manifest: Path) -> None:
    from starlette.applications import Starlette

    from agent_pm.api import dashboard

    app = Starlette(routes=dashboard.routes())
    app.state.settings = dashboard_settings(manifest)
    with (
        TestClient(app) as bare,
        pytest.raises(WebSocketDisconnect) as e,
        bare.websocket_connect("/dashboard/live") as ws,
    ):
        ws.receive_text()
    assert e.value.code == 4401


def test_live_channel_refuses_another_origin(client: TestClient) -> None:
    login(client)
    headers = {"Origin": "http://evil.example"}
    with (
        pytest.raises(WebSocketDisconnect) as e,
        client.websocket_connect("/dashboard/live", headers=headers) as ws,
    ):
        ws.receive_text()
    assert e.value.code == 1008


def test_live_channel_after_unknown_epoch_sends_everything(client: TestClient) -> None:
    login(client)
    with client.websocket_connect("/dashboard/live") as ws:
        ws.send_text(json.dumps({"type": "resume", "since": 0, "epoch": "old"}))
        message = receive(ws)
    content = message["content"]
    for region in ["summary-body", "hooks-panel", "selection", "timeline-panel", "admin-list"]:
        assert f'id="{region}"' in content
    assert message["epoch"] == registry(client).bus.epoch
    assert SECRET_VALUE not in content


def test_live_channel_resumes_and_pushes_changed_rows(client: TestClient) -> None:
    login(client)
    bus = registry(client).bus
    hello = {"type": "resume", "since": bus.seq, "epoch": bus.epoch, "pair": "echo:post_plan"}
    with client.websocket_connect("/dashboard/live") as ws:
        ws.send_text(json.dumps(hello))
        client.post("/hooks/post_plan", headers={"X-API-Key": ADMIN_KEY})
        content = receive_until(ws, 'class="mark m-success"')
        assert 'id="row-echo"' in content and 'id="hooks-panel"' in content
        assert 'id="timeline-panel"' in content
        assert 'id="admin-list"' not in content
        client.post("/plugins/echo/disable", headers={"X-API-Key": ADMIN_KEY})
        message = receive(ws)
        assert message["seq"] == bus.seq
        content = message["content"]
        assert 'id="admin-state-echo"' in content and "○</span> disabled" in content


def test_live_channel_replays_what_was_missed(client: TestClient) -> None:
    login(client)
    bus = registry(client).bus
    since = bus.seq
    client.post("/hooks/pre_plan", headers={"X-API-Key": ADMIN_KEY})
    with client.websocket_connect("/dashboard/live") as ws:
        ws.send_text(json.dumps({"type": "resume", "since": since, "epoch": bus.epoch}))
        content = receive(ws)["content"]
    assert 'id="row-echo"' in content and "pre_plan" in content
    assert 'id="admin-list"' not in content


def test_live_channel_selection_pushes_the_timeline(client: TestClient) -> None:
    login(client, READ_KEY)
    client.post("/hooks/post_plan", headers={"X-API-Key": ADMIN_KEY})
    bus = registry(client).bus
    with client.websocket_connect("/dashboard/live") as ws:
        hello = {"since": bus.seq, "epoch": bus.epoch, "pair": "echo:post_plan"}
        ws.send_text(json.dumps(hello))
        ws.send_text(json.dumps({"pair": "failing:post_plan", "headers": {}}))
        content = receive(ws)["content"]
        assert 'data-pair="failing:post_plan"' in content and "m-error" in content
        ws.send_text("not json")
        client.post("/plugins/echo/disable", headers={"X-API-Key": ADMIN_KEY})
        content = receive(ws)["content"]
    assert 'id="row-echo"' in content and "admin-state" not in content


def test_config_the_manifest_could_not_load_is_refused_inline(
    client: TestClient, manifest: Path
) -> None:
    csrf = login(client)
    before = manifest.read_text()
    for config in ('{"note": "caf\\ud800"}', '{"deep": ' + '{"k": ' * 40 + "1" + "}" * 41):
        data = {"config": config, "csrf_token": csrf}
        response = client.post("/dashboard/plugins/echo/config", data=data, headers=HX)
        assert response.status_code == 422 and "cannot load" in response.text
        assert "nothing was saved" in response.text
    assert manifest.read_text() == before
