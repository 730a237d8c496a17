"""The bundled manifest loads cleanly on a fresh machine with no secrets set."""

from __future__ import annotations

import shutil
from importlib.metadata import entry_points
from pathlib import Path

import pytest
from msgspec import to_builtins as plain

from agent_pm.plugins import PluginRegistry
from agent_pm.settings import Settings

BUNDLED = Path(__file__).parents[1] / "config" / "plugins.yaml"


@pytest.mark.anyio
async def test_bundled_manifest_loads_with_missing_secrets_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # the plugins' data files go under data/ of the working directory
    manifest = shutil.copy(BUNDLED, tmp_path / "plugins.yaml")
    async with PluginRegistry(manifest, Settings.from_env({})) as registry:
        meta = {m["name"]: m for m in plain(registry.list_metadata())}
        results = await registry.fire("post_plan", plan={"title": "Ship the plugin platform"})
    assert {name: m["state"] for name, m in meta.items()} == {
        "ticket_automation": "enabled",
        "slack_followup_alerts": "enabled",
        "feedback_collector": "enabled",
        "warehouse_export": "enabled",
    }
    assert meta["ticket_automation"]["secrets"]["missing"] == [
        "JIRA_BASE_URL",
        "JIRA_EMAIL",
        "JIRA_API_TOKEN",
    ]
    assert meta["slack_followup_alerts"]["secrets"]["missing"] == ["SLACK_BOT_TOKEN"]
    assert [(r.plugin, r.status) for r in results] == [("ticket_automation", "skipped")]


def test_bundled_plugins_are_declared_as_entry_points() -> None:
    declared = {ep.name: ep.value for ep in entry_points(group="agent_pm.plugins")}
    modules = {
        line.split("module: ")[1].strip()
        for line in BUNDLED.read_text().splitlines()
        if line.strip().startswith("module: ")
    }
    assert modules <= set(declared.values())
