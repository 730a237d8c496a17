"""Admin actions from the console: guards, revisions and conflicts, config forms, install."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest
from msgspec import to_builtins as plain
from starlette.testclient import TestClient

from tests.api.dashboard.conftest import HX, guard, login, registry
from tests.api.dashboard_app import ADMIN_KEY, READ_KEY, SECRET_VALUE

ENABLED = "/dashboard/plugins/{}/enabled"
CONFIG = "/dashboard/plugins/{}/config"


def test_admin_post_without_csrf_or_session_or_origin_is_refused(client: TestClient) -> None:
    login(client)
    form = guard(client, "echo").form(enabled="false")
    del form["csrf_token"]
    assert client.post(ENABLED.format("echo"), data=form).status_code == 403
    assert client.post(ENABLED.format("echo"), data={**form, "csrf_token": "x"}).status_code == 403
    origin = {"Origin": "http://evil.example"}
    good = guard(client, "echo").form(enabled="false")
    assert client.post(ENABLED.format("echo"), data=good, headers=origin).status_code == 403
    client.cookies.clear()
    assert client.post(ENABLED.format("echo"), data=good).status_code in (401, 403)
    assert plain(registry(client).metadata_for("echo"))["state"] == "enabled"


def test_read_only_session_cannot_act_even_with_csrf(client: TestClient) -> None:
    csrf = login(client, READ_KEY)
    for action in ["enabled", "reload", "config", "remove"]:
        response = client.post(f"/dashboard/plugins/echo/{action}", data={"csrf_token": csrf})
        assert response.status_code == 403, action
    assert client.post("/dashboard/install", data={"csrf_token": csrf}).status_code == 403
    assert plain(registry(client).metadata_for("echo"))["state"] == "enabled"


def test_a_form_without_its_revision_is_refused(client: TestClient) -> None:
    csrf = login(client)
    response = client.post(ENABLED.format("echo"), data={"csrf_token": csrf, "enabled": "false"})
    assert response.status_code == 400
    assert plain(registry(client).metadata_for("echo"))["state"] == "enabled"


def test_toggle_disables_with_a_timestamped_notice(client: TestClient, manifest: Path) -> None:
    login(client)
    form = guard(client, "echo").form(enabled="false")
    response = client.post(ENABLED.format("echo"), data=form, headers=HX)
    assert response.status_code == 200
    assert 'id="admin-echo"' in response.text and ">Enable <span" in response.text
    notice = re.search(
        r"data-notice data-expires=\"\d+\"><time datetime=\"[^\"]+Z\">"
        r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC)</time> · Disabled echo.",
        response.text,
    )
    assert notice is not None
    assert plain(registry(client).metadata_for("echo"))["state"] == "disabled"
    assert "enabled: false" in manifest.read_text()


def test_stale_form_for_a_changed_plugin_gets_412_with_what_changed(
    client: TestClient, manifest: Path
) -> None:
    login(client)
    opened = guard(client, "configured")
    client.post("/plugins/configured/disable", headers={"X-API-Key": ADMIN_KEY})
    text = json.dumps({"channel": "#mine", "retries": 2})
    response = client.post(CONFIG.format("configured"), data=opened.form(config=text), headers=HX)
    assert response.status_code == 412
    assert "Not saved: configured was changed by someone else" in response.text
    diff = re.search(r'<table class="diff">.*?</table>', response.text, re.S)
    assert diff is not None
    assert "<code>enabled</code>" in diff.group(0) and "<code>true</code>" in diff.group(0)
    assert "<code>state</code>" in diff.group(0)
    assert "#mine" in response.text  # the operator's edit is kept
    assert 'hx-get="/dashboard/admin/cards/configured"' in response.text
    assert "#mine" not in manifest.read_text()
    # Submitting again carries the current revision and base: it applies over them.
    again = re.search(r'name="revision" value="(\d+)"', response.text)
    assert again is not None and int(again.group(1)) == registry(client).revision
    fresh = guard(client, "configured").form(config=text)
    assert client.post(CONFIG.format("configured"), data=fresh, headers=HX).status_code == 200
    assert "#mine" in manifest.read_text()


def test_stale_revision_from_another_plugins_change_is_not_a_conflict(client: TestClient) -> None:
    login(client)
    opened = guard(client, "configured")
    client.post("/plugins/echo/disable", headers={"X-API-Key": ADMIN_KEY})
    assert int(opened.revision) != registry(client).revision
    text = json.dumps({"channel": "#fine", "retries": 1})
    response = client.post(CONFIG.format("configured"), data=opened.form(config=text), headers=HX)
    assert response.status_code == 200 and "Saved the config of configured." in response.text
    assert plain(registry(client).metadata_for("configured"))["config"]["channel"] == "#fine"


def test_invalid_config_shows_the_field_error_and_saves_nothing(
    client: TestClient, manifest: Path
) -> None:
    login(client)
    before = manifest.read_text()
    text = json.dumps({"channel": "#ops", "retries": "many"})
    form = guard(client, "configured").form(config=text, editor="json")
    response = client.post(CONFIG.format("configured"), data=form, headers=HX)
    assert response.status_code == 422
    field = re.search(r'<div class="field invalid">.*?</div>', response.text, re.S)
    assert field is not None and "retries" in field.group(0)
    assert "Expected `int`, got `str`" in field.group(0) and "nothing was saved" in field.group(0)
    assert "&#34;many&#34;" in response.text
    assert manifest.read_text() == before


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{\n  "channel": "#x",\n  "retries" 2\n}', "line 3, column 13: Expecting &#39;:&#39;"),
        ("[1, 2]", "the config must be a JSON object"),
    ],
)
def test_json_errors_name_line_and_column(
    client: TestClient, manifest: Path, text: str, message: str
) -> None:
    login(client)
    before = manifest.read_text()
    form = guard(client, "configured").form(config=text, editor="json")
    response = client.post(CONFIG.format("configured"), data=form, headers=HX)
    assert response.status_code == 422 and message in response.text
    assert 'aria-invalid="true"' in response.text
    assert manifest.read_text() == before


def test_unknown_config_key_is_reported_next_to_the_editor(client: TestClient) -> None:
    login(client)
    form = guard(client, "configured").form(config=json.dumps({"colour": "red"}))
    response = client.post(CONFIG.format("configured"), data=form, headers=HX)
    assert response.status_code == 422
    assert "<code>colour</code>: unknown config key" in response.text


def test_schema_form_saves_typed_values(client: TestClient, manifest: Path) -> None:
    login(client)
    card = client.get("/dashboard/admin/cards/configured", headers=HX).text
    assert 'name="field.retries"' in card and "integer" in card
    form = guard(client, "configured").form(
        **{"editor": "fields", "field.channel": "#typed", "field.retries": "7"}
    )
    response = client.post(CONFIG.format("configured"), data=form, headers=HX)
    assert response.status_code == 200, response.text
    assert plain(registry(client).metadata_for("configured"))["config"] == {
        "channel": "#typed",
        "retries": 7,
    }
    bad = guard(client, "configured").form(
        **{"editor": "fields", "field.channel": "#t", "field.retries": "seven"}
    )
    response = client.post(CONFIG.format("configured"), data=bad, headers=HX)
    assert response.status_code == 422 and 'value="seven"' in response.text


def test_schema_form_renders_from_metadata_without_the_plugin_module(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    login(client)
    # Rendering neither imports the plugin's module nor looks it up: the schema is metadata.
    monkeypatch.setitem(sys.modules, "tests.fixtures.plugins", None)
    card = client.get("/dashboard/admin/cards/configured", headers=HX).text
    assert 'name="field.channel"' in card and 'name="field.retries"' in card


def test_masked_secrets_keep_their_value(client: TestClient, manifest: Path) -> None:
    login(client)
    masked = json.dumps({"secrets": {"API_TOKEN": "***"}})
    form = guard(client, "secretive").form(config=masked)
    assert client.post(CONFIG.format("secretive"), data=form, headers=HX).status_code == 200
    assert SECRET_VALUE in manifest.read_text()


def test_action_without_htmx_returns_the_admin_page(client: TestClient) -> None:
    login(client)
    response = client.post("/dashboard/plugins/echo/reload", data=guard(client, "echo").form())
    assert response.status_code == 200
    assert "<!doctype html>" in response.text and "Reloaded echo." in response.text


def test_remove_needs_the_typed_name(client: TestClient) -> None:
    login(client)
    form = guard(client, "echo").form(confirm="nope")
    response = client.post("/dashboard/plugins/echo/remove", data=form, headers=HX)
    assert response.status_code == 422 and "Type echo to confirm" in response.text
    form = guard(client, "echo").form(confirm="echo")
    response = client.post("/dashboard/plugins/echo/remove", data=form, headers=HX)
    assert response.status_code == 200 and "Removed echo." in response.text
    assert "echo" not in registry(client).names()


def test_action_on_unknown_or_invalid_plugin_reports_the_error(client: TestClient) -> None:
    login(client)
    form = guard(client, "broken").form()
    response = client.post("/dashboard/plugins/ghost/reload", data=form, headers=HX)
    assert response.status_code == 404 and "no plugin named" in response.text
    response = client.post("/dashboard/plugins/broken/reload", data=form, headers=HX)
    assert response.status_code == 409 and "is not a PluginBase subclass" in response.text


def test_install_from_a_module_path_and_refusals(client: TestClient) -> None:
    csrf = login(client)
    revision = str(registry(client).revision)
    data = {
        "module": "tests.fixtures.plugins:Configured",
        "name": "second",
        "csrf_token": csrf,
        "revision": revision,
    }
    response = client.post("/dashboard/install", data=data, headers=HX)
    assert response.status_code == 200 and "Installed second" in response.text
    assert plain(registry(client).metadata_for("second"))["state"] == "disabled"
    empty = {"csrf_token": csrf, "revision": revision}
    response = client.post("/dashboard/install", data=empty, headers=HX)
    assert response.status_code == 409 and "choose an entry point" in response.text
    response = client.post("/dashboard/install", data={**empty, "module": "os.path:join"})
    assert response.status_code == 409 and "not allowed" in response.text
    assert "<!doctype html>" in response.text


def test_install_trusts_discovered_entry_points(client: TestClient) -> None:
    csrf = login(client)
    data = {"entry_point": "hello", "name": "hello2", "csrf_token": csrf, "revision": "0"}
    response = client.post("/dashboard/install", data=data, headers=HX)
    assert response.status_code == 200, response.text
    assert (
        plain(registry(client).metadata_for("hello2"))["module"]
        == "hello_plugin.plugin:HelloPlugin"
    )


def test_oversized_form_is_refused(client: TestClient) -> None:
    csrf = login(client)
    data = {"config": "x" * 300_000, "csrf_token": csrf}
    assert client.post(CONFIG.format("echo"), data=data).status_code == 413


def test_config_the_manifest_could_not_load_is_refused_inline(
    client: TestClient, manifest: Path
) -> None:
    login(client)
    before = manifest.read_text()
    for config in ('{"note": "caf\\ud800"}', '{"deep": ' + '{"k": ' * 40 + "1" + "}" * 41):
        form = guard(client, "echo").form(config=config)
        response = client.post(CONFIG.format("echo"), data=form, headers=HX)
        assert response.status_code == 422 and "cannot load" in response.text
        assert "nothing was saved" in response.text
    assert manifest.read_text() == before


def test_changes_list_each_setting_that_differs() -> None:
    from agent_pm.api.dashboard._actions import changes

    before = {"enabled": True, "config": {"a": 1, "b": {"c": 2}, "gone": "x"}}
    after = {"enabled": False, "config": {"a": 1, "b": {"c": 3}, "new": {}}}
    assert [(c.path, c.before, c.after) for c in changes(before, after)] == [
        ("config.b.c", "2", "3"),
        ("config.gone", '"x"', "(unset)"),
        ("config.new", "(unset)", "{}"),
        ("enabled", "true", "false"),
    ]
    assert changes({}, {}) == []
