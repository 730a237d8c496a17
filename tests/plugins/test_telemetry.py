"""Telemetry keeps per-hook stats, the last 100 samples per hook and the last 10 errors."""

from __future__ import annotations

import pytest
from msgspec import to_builtins as plain

from agent_pm.plugins.telemetry import ERROR_LIMIT, HISTORY_LIMIT, HookSample, PluginTelemetry, now

pytestmark = pytest.mark.anyio


def sample(seq: int, status: str = "success", hook: str = "h", ms: float = 1.0) -> HookSample:
    return HookSample(seq, "p", hook, now(), status, ms, None if status == "success" else "boom")


def test_telemetry_history_keeps_the_newest_100_per_hook() -> None:
    telemetry = PluginTelemetry()
    for seq in range(1, 251):
        telemetry.add(sample(seq))
    telemetry.add(sample(251, hook="other"))
    history = plain(telemetry.samples())
    assert len(history["h"]) == HISTORY_LIMIT == 100
    assert [s["seq"] for s in history["h"]][:2] == [151, 152]
    assert [s["seq"] for s in history["other"]] == [251]
    assert [s["seq"] for s in plain(telemetry.samples("h", limit=3))["h"]] == [248, 249, 250]
    assert plain(telemetry.samples("h", limit=0)) == {"h": []}


def test_telemetry_history_read_between_adds_stays_in_order_and_is_the_callers() -> None:
    telemetry = PluginTelemetry()
    seqs: list[int] = []
    for seq in range(1, 231):
        telemetry.add(sample(seq))
        if seq % 70 == 0:
            seqs = [s["seq"] for s in plain(telemetry.samples("h"))["h"]]
    assert seqs == list(range(111, 211))
    first = plain(telemetry.samples())["h"]
    first[0]["status"] = "edited"
    assert [s["seq"] for s in first] == list(range(131, 231))
    assert plain(telemetry.samples())["h"][0]["status"] == "success"
    assert plain(telemetry.samples("missing")) == {"missing": []}


def test_telemetry_stats_count_each_status() -> None:
    telemetry = PluginTelemetry()
    statuses = ["success", "error", "timeout", "skipped", "deadline", "success"]
    for seq, status in enumerate(statuses, 1):
        telemetry.add(sample(seq, status, ms=2.0 * seq))
    stats = plain(telemetry.stats["h"].info())
    assert stats == {
        "invocations": 6,
        "failures": 1,
        "timeouts": 1,
        "skipped": 1,
        "quarantined": 0,
        "deadlines": 1,
        "total_duration_ms": 42.0,
        "last_duration_ms": 12.0,
        "avg_duration_ms": 7.0,
    }


def test_telemetry_error_ring_keeps_the_last_10() -> None:
    telemetry = PluginTelemetry()
    for seq in range(1, 16):
        telemetry.add(sample(seq, "error"))
    telemetry.add_error("on_enable", "latest")
    assert len(telemetry.errors) == ERROR_LIMIT == 10
    assert telemetry.errors[-1].stage == "on_enable" and telemetry.errors[-1].message == "latest"
    assert telemetry.errors[0].stage == "hook:h"


async def test_telemetry_hook_history_is_capped_through_the_registry(registry_factory, entry):
    async with registry_factory(entry("Echo")) as registry:
        for _ in range(105):
            await registry.fire("pre_plan")
        history = registry.history("echo", "pre_plan")["pre_plan"]
        stats = plain(registry.metadata_for("echo"))["hook_stats"]["pre_plan"]
    assert len(history) == 100 and stats["invocations"] == 105
    assert [s.seq for s in history] == sorted(s.seq for s in history)
