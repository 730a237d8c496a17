"""create_app: the lifespan owns the registry unless one is given."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from agent_pm.api._app import create_app
from agent_pm.settings import Settings
from tests.fixtures.plugins import Lifecycle

pytestmark = pytest.mark.anyio


async def test_lifespan_opens_and_closes_the_registry(
    write_manifest: Callable[[str], Path], settings: Settings
) -> None:
    path = write_manifest(
        "- name: lifecycle\n  module: tests.fixtures.plugins:Lifecycle\n  enabled: true\n"
    )
    Lifecycle.calls.clear()
    app = create_app(settings, manifest_path=path)
    key = app.state.api_keys.admin
    assert app.state.api_keys.generated
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            response = await client.get("/plugins", headers={"X-API-Key": key})
            assert [p["name"] for p in response.json()["plugins"]] == ["lifecycle"]
    assert [method for _, method in Lifecycle.calls] == ["on_enable", "on_disable"]


async def test_app_starts_on_the_bundled_manifest(tmp_path: Path, monkeypatch) -> None:
    bundled = Path(__file__).parents[2] / "config" / "plugins.yaml"
    monkeypatch.chdir(tmp_path)  # the built-in plugins keep their data under ./var
    app = create_app(
        Settings.from_env({"API_KEY": "app-test-key-0123456789"}), manifest_path=bundled
    )
    async with app.router.lifespan_context(app):
        assert app.state.registry.config_errors == []
        states = {m.name: m.state for m in app.state.registry.list_metadata()}
    assert set(states.values()) == {"enabled"} and len(states) == 4


async def test_app_records_the_watcher_flag(settings: Settings) -> None:
    assert create_app(settings, watch=False).state.watch is False
    assert create_app(settings).state.watch is True


def test_api_package_exports_create_app() -> None:
    import agent_pm.api

    assert "create_app" in agent_pm.api.__all__
    assert agent_pm.api.create_app is create_app
