"""The activity feed against the real app: who did what from where, filters, live rows."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from agent_pm.api._app import create_app
from agent_pm.api.dashboard._activity import ActivityFilters, record_changes
from tests.api.dashboard.conftest import csrf_of, guard, login
from tests.api.dashboard_app import ADMIN_KEY, READ_KEY, SECRET_VALUE, dashboard_settings

ADMIN = {"X-API-Key": ADMIN_KEY}


@pytest.fixture
def app_client(manifest: Path) -> Iterator[TestClient]:
    """The real app (REST, dashboard, audit log), without the manifest watcher."""
    app = create_app(dashboard_settings(manifest), manifest_path=manifest, watch=False)
    with TestClient(app) as client:
        yield client


def rows(page: str) -> list[str]:
    body = page[page.index('id="activity-body"') : page.index("</tbody>")]
    return re.findall(r"<tr data-audit=.*?</tr>", body, re.S)


def test_feed_shows_who_from_where_what_changed_and_the_outcome(app_client: TestClient) -> None:
    client = app_client
    config = {"config": {"channel": "#rest", "retries": 4}}
    assert client.post("/plugins/configured/config", json=config, headers=ADMIN).status_code == 200
    bad = {"config": {"retries": "many"}}
    assert client.post("/plugins/configured/config", json=bad, headers=ADMIN).status_code == 422
    secret = {"config": {"secrets": {"API_TOKEN": "n3w-s3cr3t-value"}}}
    client.post("/plugins/secretive/config", json=secret, headers=ADMIN)
    login(client)
    form = guard(client, "echo").form(enabled="false")
    client.post("/dashboard/plugins/echo/enabled", data=form)
    page = client.get("/dashboard/activity")
    assert page.status_code == 200 and page.headers["cache-control"] == "no-store"
    found = rows(page.text)
    assert len(found) == 4
    newest, secret_row, failed, first = found
    assert "dashboard" in newest and "session" in newest and "disabled" in newest
    assert ">echo</code>" in newest and "<code>enabled</code>: <code>true</code>" in newest
    assert "ADMIN_API_KEY" in first and ">REST<" in first and "changed the config of" in first
    assert (
        "<code>config.channel</code>: <code>&#34;#ops&#34;</code> → <code>&#34;#rest&#34;</code>"
        in first
    )
    assert "status-success" in first and re.search(r"revision \d+ → \d+", first)
    assert "status-error" in failed and "retries" in failed
    assert "n3w-s3cr3t-value" not in page.text and SECRET_VALUE not in page.text
    # A new secret is masked on both sides: the row names the action and the revision it made.
    assert ">secretive</code>" in secret_row and re.search(r"revision \d+ → \d+", secret_row)
    assert re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", first)
    assert 'href="/dashboard/activity"' in page.text  # the admin nav links the feed


def test_feed_filters_live_in_the_url(app_client: TestClient) -> None:
    client = app_client
    client.post("/plugins/configured/config", json={"config": {"retries": 5}}, headers=ADMIN)
    client.post("/plugins/ghost/enable", headers=ADMIN)
    login(client)
    form = guard(client, "echo").form(enabled="false")
    client.post("/dashboard/plugins/echo/enabled", data=form)
    assert len(rows(client.get("/dashboard/activity?source=rest").text)) == 2
    errors = client.get("/dashboard/activity?outcome=error").text
    assert len(rows(errors)) == 1 and "ghost" in errors and 'value="error" selected' in errors
    assert len(rows(client.get("/dashboard/activity?plugin=ech").text)) == 1
    none = client.get("/dashboard/activity?source=watcher").text
    assert rows(none) == [] and "No record matches these filters." in none
    assert ActivityFilters.from_query({"source": "evil", "outcome": "x"}).query() == ""


def test_feed_is_for_admins(app_client: TestClient) -> None:
    assert app_client.get("/dashboard/activity", follow_redirects=False).status_code in (303, 401)
    login(app_client, READ_KEY)
    page = app_client.get("/dashboard/activity")
    assert page.status_code == 403 and "admin key" in page.text
    assert 'href="/dashboard/activity"' not in app_client.get("/dashboard").text


def test_live_channel_prepends_new_records_as_they_are_written(app_client: TestClient) -> None:
    client = app_client
    client.post("/plugins/configured/config", json={"config": {"retries": 5}}, headers=ADMIN)
    login(client)
    page = client.get("/dashboard/activity").text
    view = json.loads(re.search(r'data-view="([^"]+)"', page).group(1).replace("&#34;", '"'))  # type: ignore[union-attr]
    assert view["page"] == "activity" and view["after"] == 1
    registry = client.app.state.registry  # type: ignore[attr-defined]
    with client.websocket_connect("/dashboard/live") as ws:
        hello = {"type": "hello", "since": registry.bus.seq, "epoch": registry.bus.epoch}
        ws.send_text(json.dumps({**hello, "view": view}))
        client.post("/plugins/configured/config", json={"config": {"retries": 7}}, headers=ADMIN)
        message: dict[str, Any] = {}
        while "activity-body" not in message.get("prepend", {}):
            message = json.loads(ws.receive_text())
    html = message["prepend"]["activity-body"]
    assert html.count("<tr data-audit=") == 1 and 'data-audit="2"' in html
    assert "<code>config.retries</code>: <code>5</code> → <code>7</code>" in html


def test_changes_are_listed_per_setting_and_long_values_cut() -> None:
    from datetime import UTC, datetime

    from agent_pm.audit import AuditRecord

    record = AuditRecord(
        id=1, time=datetime.now(UTC), actor="a", role="admin", source="rest",
        action="update_config", plugin="p", before={"config.x": 1},
        after={"config.x": 2, "config.long": "y" * 500}, revision_before=1,
        revision_after=2, outcome="ok",
    )  # fmt: skip
    changes = record_changes(record)
    assert [(c.path, c.before, c.after[:3]) for c in changes] == [
        ("config.long", "(unset)", '"yy'),
        ("config.x", "1", "2"),
    ]
    assert len(changes[0].after) == 120 and changes[0].after.endswith("…")


def test_csrf_is_in_the_feed_page_for_logout(app_client: TestClient) -> None:
    login(app_client)
    assert csrf_of(app_client.get("/dashboard/activity").text)
