"""``serve --demo``: stand-ins on loopback, and every built-in plugin comes alive."""

from __future__ import annotations

import shutil
from pathlib import Path

import anyio
import httpx
import pytest
from msgspec import to_builtins as plain

from agent_pm.demo.run import DemoApp
from agent_pm.settings import Settings

pytestmark = pytest.mark.anyio
BUNDLED = Path(__file__).parents[2] / "config" / "plugins.yaml"
HOOK_PLUGINS = {"ticket_automation", "slack_followup_alerts", "warehouse_export"}

DEMO_KEY = "demo-admin-key-0123456789"


async def test_demo_makes_every_builtin_plugin_succeed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    manifest = shutil.copy(BUNDLED, tmp_path / "plugins.yaml")
    before = Path(manifest).read_bytes()
    settings = Settings.from_env({"ADMIN_API_KEY": DEMO_KEY, "DATA_DIR": str(tmp_path / "data")})
    demo = DemoApp(settings, manifest_path=manifest, rate=50, watch=False)
    succeeded: set[str] = set()
    async with demo.router.lifespan_context(demo):
        app = demo.state.app
        registry = app.state.registry
        assert {m["name"]: m["secrets"]["missing"] for m in plain(registry.list_metadata())} == {
            "ticket_automation": [],
            "slack_followup_alerts": [],
            "feedback_collector": [],
            "warehouse_export": [],
        }
        with registry.bus.subscribe() as subscription, anyio.fail_after(60):
            while succeeded != HOOK_PLUGINS or not await _feedback_stored(demo):
                for message in await subscription.receive():
                    if getattr(message, "status", None) == "success":
                        succeeded.add(message.plugin)
        issues = plain(registry.metadata_for("ticket_automation"))["hook_stats"]["post_plan"]
    assert issues["invocations"] >= 1
    assert Path(manifest).read_bytes() == before  # the demo never writes the operator's manifest


async def _feedback_stored(app) -> bool:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        response = await client.get(
            "/plugins/feedback_collector/feedback",
            headers={"X-API-Key": "demo-admin-key-0123456789"},
        )
    return response.status_code == 200 and response.json()["total"] > 0
