"""A plugin page's recorded failures: listing, replay one, replay all since."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from agent_pm.api._app import create_app
from agent_pm.settings import Settings
from tests.api.conftest import ADMIN, ADMIN_KEY, READ_KEY
from tests.api.test_failures import MANIFEST
from tests.fixtures.recording import (  # noqa: F401 (a fixture)
    BAD_TOKEN,
    GOOD_TOKEN,
    Exporter,
    fresh_deliveries,
)

HX = {"HX-Request": "true"}
PAGE = "/dashboard/plugins/exporter"
pytestmark = pytest.mark.usefixtures("fresh_deliveries")


@pytest.fixture
def client(tmp_path: Path, api_settings: Settings) -> Iterator[TestClient]:
    path = tmp_path / "recorded.yaml"
    path.write_text(MANIFEST)
    with TestClient(create_app(api_settings, manifest_path=path, watch=False)) as test_client:
        yield test_client


def login(client: TestClient, key: str) -> str:
    response = client.post("/login", data={"api_key": key}, follow_redirects=False)
    assert response.status_code == 303
    match = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/dashboard").text)
    assert match is not None
    return match.group(1)


def fail_and_fix(client: TestClient, count: int) -> None:
    for number in range(count):
        client.post(
            "/hooks/post_plan", json={"key": f"OPS-{number}", "auth": BAD_TOKEN}, headers=ADMIN
        )
    fixed = {"config": {"secrets": {"EXPORT_TOKEN": GOOD_TOKEN}}}
    assert client.post("/plugins/exporter/config", json=fixed, headers=ADMIN).status_code == 200


def section(html: str) -> str:
    start = html.index('<section id="failures"')
    return html[start : html.index("</section>", start)]


def test_read_sessions_see_failures_without_controls_or_payloads(client: TestClient) -> None:
    fail_and_fix(client, 2)
    login(client, READ_KEY)
    html = section(client.get(PAGE).text)
    assert 'id="failures-exporter"' in html
    assert "2 recorded failures, 2 pending replay" in html
    assert "PermissionError: export rejected token ***" in html
    assert "<form" not in html and "OPS-" not in html and BAD_TOKEN not in html
    echo = section(client.get("/dashboard/plugins/echo").text)
    assert "echo does not record its failures" in echo  # echo does not record


def test_admin_replays_one_then_all_since(client: TestClient) -> None:
    fail_and_fix(client, 3)
    csrf = login(client, ADMIN_KEY)
    html = section(client.get(PAGE).text)
    ids = sorted({int(i) for i in re.findall(r"/failures/(\d+)/replay", html)})
    assert len(ids) == 3 and "Replay all since" in html

    one = client.post(
        f"/dashboard/plugins/exporter/failures/{ids[-1]}/replay",
        data={"csrf_token": csrf},
        headers=HX,
    )
    assert one.status_code == 200
    assert f"Replayed failure {ids[-1]}: success." in one.text
    assert re.search(
        r"data-notice .*?\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC</time> · Replayed", one.text
    )
    assert one.text.startswith('<article class="card" id="failures-exporter"')
    assert "1 recorded failure" not in one.text and "3 recorded failures, 2 pending" in one.text

    bulk = client.post(
        "/dashboard/plugins/exporter/failures/replay",
        data={"csrf_token": csrf, "since": "1h"},
        headers=HX,
    )
    assert bulk.status_code == 200
    assert "Replayed 2 of 2: 2 succeeded, 0 failed." in bulk.text
    assert "0 pending" in bulk.text and "Replay all since" not in bulk.text
    assert sorted(r for r, _ in Exporter.delivered["exporter"]) == sorted(ids)

    again = client.post(
        f"/dashboard/plugins/exporter/failures/{ids[0]}/replay",
        data={"csrf_token": csrf},
        headers=HX,
    )
    assert again.status_code == 409 and "was replayed already" in again.text


def test_replay_needs_admin_csrf_and_a_known_plugin(client: TestClient) -> None:
    fail_and_fix(client, 1)
    csrf = login(client, READ_KEY)
    url = "/dashboard/plugins/exporter/failures/replay"
    assert client.post(url, data={"csrf_token": csrf, "since": ""}).status_code == 403
    csrf = login(client, ADMIN_KEY)
    assert client.post(url, data={"since": ""}).status_code == 403
    assert client.post(url, data={"csrf_token": csrf, "since": "3y"}).status_code == 400
    missing = "/dashboard/plugins/nobody/failures/replay"
    assert client.post(missing, data={"csrf_token": csrf, "since": ""}).status_code == 404
    not_an_id = "/dashboard/plugins/exporter/failures/abc/replay"
    assert client.post(not_an_id, data={"csrf_token": csrf}).status_code == 404
    assert Exporter.delivered == {}


def test_without_recording_plugins_the_section_says_how_to_start(
    tmp_path: Path, api_settings: Settings
) -> None:
    path = tmp_path / "plain.yaml"
    path.write_text("- {name: echo, module: 'tests.fixtures.plugins:Echo', enabled: true}\n")
    with TestClient(create_app(api_settings, manifest_path=path, watch=False)) as client:
        login(client, READ_KEY)
        html = section(client.get("/dashboard/plugins/echo").text)
    assert "echo does not record its failures: set <code>record_failures: true</code>" in html
