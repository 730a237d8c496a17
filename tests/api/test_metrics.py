"""Prometheus exposition of hook telemetry."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import anyio
import httpx
import pytest
from msgspec import to_builtins as plain

from agent_pm.api._metrics import BUCKETS, HookHistograms, render
from agent_pm.plugins import HookSample, Lagged, PluginRegistry
from tests.api.conftest import ADMIN, READ


def sample_line(text: str, name: str, **labels: str) -> float:
    rendered = ",".join(f'{k}="{v}"' for k, v in labels.items())
    match = re.search(rf"^{re.escape(name)}{{{re.escape(rendered)}}} (\S+)$", text, re.MULTILINE)
    assert match, f"{name}{{{rendered}}} not in metrics"
    return float(match.group(1))


@pytest.mark.anyio
async def test_metrics_count_invocations_failures_and_durations(
    client: httpx.AsyncClient,
) -> None:
    await client.post("/plugins/strict/enable", headers=ADMIN)
    for _ in range(3):
        await client.post("/hooks/post_plan", headers=ADMIN, json={})
    response = await client.get("/metrics", headers=READ)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    text = response.text
    labels = {"plugin": "echo", "hook": "post_plan"}
    assert sample_line(text, "agent_pm_hook_invocations_total", **labels) == 3
    assert sample_line(text, "agent_pm_hook_failures_total", **labels) == 0
    assert (
        sample_line(text, "agent_pm_hook_skipped_total", plugin="secretive", hook="post_plan") == 3
    )
    assert sample_line(text, "agent_pm_hook_duration_seconds_count", **labels) == 3
    assert sample_line(text, "agent_pm_hook_duration_seconds_bucket", **labels, le="+Inf") == 3
    assert sample_line(text, "agent_pm_plugin_active", plugin="echo") == 1
    assert sample_line(text, "agent_pm_plugin_active", plugin="broken") == 0
    assert "# TYPE agent_pm_hook_duration_seconds histogram" in text


@pytest.mark.anyio
async def test_metrics_count_timeouts_and_failures(registry: PluginRegistry) -> None:
    for module in ("Failing", "Hanging"):
        plain(await registry.install(f"tests.fixtures.plugins:{module}", enabled=True))
    histograms = HookHistograms()
    async with anyio.create_task_group() as group:
        await group.start(histograms.run, registry.bus)
        await registry.fire("post_plan")
        text = render(registry, histograms)
        group.cancel_scope.cancel()
    hook = {"hook": "post_plan"}
    assert sample_line(text, "agent_pm_hook_failures_total", plugin="failing", **hook) == 1
    assert sample_line(text, "agent_pm_hook_timeouts_total", plugin="hanging", **hook) == 1
    assert sample_line(text, "agent_pm_hook_duration_seconds_count", plugin="hanging", **hook) == 1


def test_histogram_buckets_are_cumulative_and_labels_escaped() -> None:
    histograms = HookHistograms()
    now = datetime.now(UTC)
    histograms.fold(
        [
            HookSample(1, 'we"ird\\name\n', "h", now, "success", 0.5),
            HookSample(2, 'we"ird\\name\n', "h", now, "success", 2000.0),
            Lagged(missed=4, seq=6),
        ]
    )

    class NoPlugins:
        revision = 9

        def list_metadata(self, views: object = None) -> list[object]:
            return []

    text = render(NoPlugins(), histograms)  # type: ignore[arg-type]
    labels = {"plugin": 'we\\"ird\\\\name\\n', "hook": "h"}
    assert sample_line(text, "agent_pm_hook_duration_seconds_bucket", **labels, le="0.001") == 1
    assert sample_line(text, "agent_pm_hook_duration_seconds_bucket", **labels, le="1.0") == 1
    assert sample_line(text, "agent_pm_hook_duration_seconds_bucket", **labels, le="2.5") == 2
    assert sample_line(text, "agent_pm_hook_duration_seconds_sum", **labels) == pytest.approx(
        2.0005
    )
    assert len(BUCKETS) + 1 == text.count("agent_pm_hook_duration_seconds_bucket{")
    assert "agent_pm_metrics_dropped_samples_total 4" in text
    assert "agent_pm_registry_revision 9" in text
