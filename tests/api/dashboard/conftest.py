"""The console served in-process on a real registry, logged in through its own login form."""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from agent_pm.settings import Settings
from tests.api.dashboard_app import ADMIN_KEY, MANIFEST, build_app, dashboard_settings
from tests.fixtures.clock import FakeClock

HX = {"HX-Request": "true"}


@pytest.fixture
def manifest(tmp_path: Path) -> Path:
    path = tmp_path / "plugins.yaml"
    path.write_text(MANIFEST)
    return path


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def client(manifest: Path) -> Iterator[TestClient]:
    settings = dashboard_settings(manifest)
    environ = {**settings.environ, "PLUGIN_INSTALL_ALLOW": "tests.fixtures"}
    with TestClient(build_app(manifest, Settings.from_env(environ))) as test_client:
        yield test_client


@pytest.fixture
def clocked(manifest: Path, clock: FakeClock) -> Iterator[TestClient]:
    """The console on a registry whose windows, health and quarantine follow ``clock``."""
    with TestClient(build_app(manifest, dashboard_settings(manifest), clock)) as test_client:
        yield test_client


def login(client: TestClient, key: str = ADMIN_KEY) -> str:
    response = client.post("/login", data={"api_key": key}, follow_redirects=False)
    assert response.status_code == 303
    return csrf_of(client.get("/dashboard").text)


def csrf_of(text: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', text)
    assert match is not None
    return match.group(1)


def registry(client: TestClient) -> Any:
    return client.app.state.registry  # type: ignore[attr-defined]


def fire(client: TestClient, hook: str = "post_plan", times: int = 1) -> None:
    for _ in range(times):
        client.post(f"/hooks/{hook}", headers={"X-API-Key": ADMIN_KEY}).raise_for_status()


@dataclass
class Guard:
    """The hidden fields an admin card's forms carry."""

    csrf: str
    revision: str
    base: str

    def form(self, **fields: str) -> dict[str, str]:
        return {"csrf_token": self.csrf, "revision": self.revision, "base": self.base, **fields}


def guard(client: TestClient, name: str) -> Guard:
    """The guard fields of ``name``'s card as the admin page shows it now."""
    text = client.get(f"/dashboard/admin/cards/{name}", headers=HX).text
    revision = re.search(r'name="revision" value="(\d+)"', text)
    base = re.search(r'name="base" value="([^"]*)"', text)
    assert revision is not None and base is not None
    return Guard(csrf_of(text), revision.group(1), html.unescape(base.group(1)))
