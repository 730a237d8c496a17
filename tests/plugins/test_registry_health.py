"""Health and quarantine through the registry: states from windows, breakers before dispatch."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import pytest

from agent_pm.errors import PluginNotFoundError
from agent_pm.plugins import PluginRegistry
from agent_pm.plugins.bus import StateChange
from tests.fixtures.clock import FakeClock

pytestmark = pytest.mark.anyio

T0 = 1_800_000_000.0 - (1_800_000_000 % 600)
FLAKY = """\
- name: flaky
  module: tests.fixtures.plugins:Flaky
  enabled: true
"""


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(T0)


@pytest.fixture
def flaky(
    registry_factory: Callable[..., AbstractAsyncContextManager[PluginRegistry]], clock: FakeClock
) -> Callable[[str], AbstractAsyncContextManager[PluginRegistry]]:
    """A registry with the ``flaky`` plugin, extra manifest lines appended to its entry."""

    def make(extra: str = "") -> AbstractAsyncContextManager[PluginRegistry]:
        return registry_factory(FLAKY + extra, clock=clock)

    return make


async def calls(registry: PluginRegistry, failed: int, ok: int) -> list[Any]:
    results = []
    for _ in range(failed):
        results += await registry.fire("post_plan", fail=True)
    for _ in range(ok):
        results += await registry.fire("post_plan")
    return results


async def test_health_of_a_plugin_failing_80_percent_is_failing_then_healthy_again(
    flaky: Any, clock: FakeClock
) -> None:
    async with flaky("  quarantine: false\n") as registry:
        info = registry.metadata_for("flaky")
        assert info.health.state == "idle"
        with registry.bus.subscribe() as subscription:
            await calls(registry, failed=16, ok=4)
            info = registry.metadata_for("flaky")
            assert info.health.state == "failing"
            assert info.health.reason == "16 of 20 calls failed in the last 5m (80%)"
            assert info.hook_health["post_plan"].state == "failing"
            published = [
                m.plugin.health.state for m in subscription.drain() if isinstance(m, StateChange)
            ]
            # Announced at once, each change once: the first call made it degraded (too few
            # calls to judge), the tenth made it failing.
            assert published == ["degraded", "failing"]

            clock.advance(310)  # a whole window later the failures have left it
            await calls(registry, failed=0, ok=20)
            info = registry.metadata_for("flaky")
            assert info.health.state == "healthy"
            assert info.hook_windows["post_plan"].error_ratio == 0.0
            assert info.hook_stats["post_plan"].failures == 16  # lifetime stays lifetime
            assert [
                m.plugin.health.state for m in subscription.drain() if isinstance(m, StateChange)
            ] == ["healthy"]


async def test_health_goes_idle_when_the_window_empties_without_calls(
    flaky: Any, clock: FakeClock
) -> None:
    async with flaky("  quarantine: false\n") as registry:
        await calls(registry, failed=10, ok=0)
        assert registry.metadata_for("flaky").health.state == "failing"
        assert registry.check_health() == []
        clock.advance(301)
        with registry.bus.subscribe() as subscription:
            assert registry.check_health() == ["flaky"]
            [change] = [m for m in subscription.drain() if isinstance(m, StateChange)]
        assert change.plugin.health.state == "idle"
        assert change.plugin.health.reason == "no calls in the last 5m"


async def test_health_is_degraded_when_p95_passes_the_share_of_the_timeout(
    registry_factory: Any, clock: FakeClock
) -> None:
    entry = """\
- name: flaky
  module: tests.fixtures.plugins:SyncEcho
  enabled: true
  timeout_seconds: 1
  health: {slow_timeout_ratio: 0.00001, min_calls: 2}
"""
    async with registry_factory(entry, clock=clock) as registry:
        # A 10 us share of a 1 s timeout: a call handed to a worker thread always takes longer
        # (an async one may finish in less, started eagerly).
        await calls(registry, failed=0, ok=3)
        info = registry.metadata_for("flaky")
        assert info.health.state == "degraded"
        assert info.health.reason.startswith("p95 above 0.01 ms")


async def test_health_of_a_plugin_missing_secrets_is_skipping(
    registry_factory: Any, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("API_TOKEN", raising=False)
    entry = "- name: secretive\n  module: tests.fixtures.plugins:Secretive\n  enabled: true\n"
    async with registry_factory(entry, clock=clock) as registry:
        assert registry.metadata_for("secretive").health.state == "skipping"
        [result] = await registry.fire("post_plan")
        assert result.status == "skipped"
        info = registry.metadata_for("secretive")
        assert info.health.state == "skipping"
        assert "missing secrets API_TOKEN" in info.health.reason
        assert info.hook_windows["post_plan"].counts.skipped == 1


async def test_health_of_disabled_and_invalid_entries_follows_their_state(
    registry_factory: Any, clock: FakeClock
) -> None:
    entries = FLAKY.replace("enabled: true", "enabled: false") + (
        "- name: ghost\n  module: tests.fixtures.does_not_exist:Nothing\n"
    )
    async with registry_factory(entries, clock=clock) as registry:
        states = {i.name: i.health.state for i in registry.list_metadata()}
        assert states == {"flaky": "disabled", "ghost": "invalid"}


@pytest.mark.parametrize(
    "health, problem",
    [
        ("{min_calls: 0}", "min_calls"),
        ("{failing_error_ratio: 1.5}", "failing_error_ratio"),
        ("{degraded_error_ratio: 0.6, failing_error_ratio: 0.5}", "failing_error_ratio"),
        ("{surprise: 1}", "surprise"),
    ],
)
async def test_health_thresholds_are_validated_like_any_config(
    flaky: Any, health: str, problem: str
) -> None:
    async with flaky(f"  health: {health}\n") as registry:
        info = registry.metadata_for("flaky")
        assert info.state == "invalid"
        assert problem in (info.error or "")
        assert info.health.state == "invalid"


@pytest.mark.parametrize(
    "quarantine, problem",
    [
        ("{min_calls: -1}", "min_calls"),
        ("{cooldown_seconds: 60, max_cooldown_seconds: 30}", "max_cooldown_seconds"),
        ("sometimes", "quarantine"),
    ],
)
async def test_quarantine_settings_are_validated_like_any_config(
    flaky: Any, quarantine: str, problem: str
) -> None:
    async with flaky(f"  quarantine: {quarantine}\n") as registry:
        info = registry.metadata_for("flaky")
        assert info.state == "invalid" and problem in (info.error or "")


QUARANTINE = "  quarantine: {min_calls: 4, failure_ratio: 0.5, cooldown_seconds: 30}\n"


async def test_quarantine_opens_at_its_threshold_and_never_runs_the_handler_while_open(
    flaky: Any, clock: FakeClock
) -> None:
    async with flaky(QUARANTINE) as registry:
        plugin = registry.get("flaky")
        await calls(registry, failed=1, ok=2)
        assert registry.metadata_for("flaky").quarantine["post_plan"].state == "closed"
        await calls(registry, failed=1, ok=0)  # 2 of 4 failed: the threshold
        info = registry.metadata_for("flaky")
        assert info.quarantine["post_plan"].state == "open"
        assert info.health.state == "quarantined"
        assert plugin.calls == 4

        results = await calls(registry, failed=0, ok=25)
        assert plugin.calls == 4  # the handler never ran
        assert {r.status for r in results} == {"quarantined"}
        assert "next probe at" in (results[0].error or "")
        probe_at = info.quarantine["post_plan"].next_probe_at
        assert probe_at is not None and probe_at.timestamp() == T0 + 30
        assert registry.metadata_for("flaky").hook_stats["post_plan"].quarantined == 25


async def test_quarantine_probe_closes_on_success(flaky: Any, clock: FakeClock) -> None:
    async with flaky(QUARANTINE) as registry:
        plugin = registry.get("flaky")
        await calls(registry, failed=4, ok=0)
        clock.advance(29)
        assert (await calls(registry, 0, 1))[0].status == "quarantined"
        clock.advance(1)
        [probe] = await calls(registry, failed=0, ok=1)
        assert probe.status == "success" and plugin.calls == 5
        info = registry.metadata_for("flaky")
        assert info.quarantine["post_plan"].state == "closed"
        assert info.health.state != "quarantined"
        await calls(registry, failed=0, ok=3)
        assert plugin.calls == 8


async def test_quarantine_probe_failure_reopens_with_a_longer_cooldown(
    flaky: Any, clock: FakeClock
) -> None:
    async with flaky(QUARANTINE) as registry:
        plugin = registry.get("flaky")
        await calls(registry, failed=4, ok=0)
        clock.advance(30)
        [probe] = await calls(registry, failed=1, ok=0)
        assert probe.status == "error" and plugin.calls == 5
        breaker = registry.metadata_for("flaky").quarantine["post_plan"]
        assert (breaker.state, breaker.cooldown_seconds, breaker.trips) == ("open", 60.0, 2)
        assert breaker.next_probe_at is not None
        assert breaker.next_probe_at.timestamp() == T0 + 30 + 60
        clock.advance(59)
        await calls(registry, failed=0, ok=3)
        assert plugin.calls == 5


async def test_quarantine_lets_one_probe_through_at_a_time(flaky: Any, clock: FakeClock) -> None:
    async with flaky(QUARANTINE) as registry:
        await calls(registry, failed=4, ok=0)
        clock.advance(30)
        breaker = registry._records["flaky"].monitor.breakers["post_plan"]
        assert breaker.admit(clock()) is True
        assert breaker.state == "probing"
        [result] = await registry.fire("post_plan")
        assert result.status == "quarantined" and "probe call is running" in (result.error or "")


async def test_quarantine_reset_closes_breakers_and_enable_or_reload_do_too(
    flaky: Any, clock: FakeClock
) -> None:
    async with flaky(QUARANTINE) as registry:
        plugin = registry.get("flaky")
        await calls(registry, failed=4, ok=0)
        with pytest.raises(PluginNotFoundError):
            registry.reset_quarantine("flaky", "no_such_hook")
        info = registry.reset_quarantine("flaky", "post_plan")
        assert info.quarantine["post_plan"].state == "closed"
        await calls(registry, failed=0, ok=1)
        assert plugin.calls == 5

        await calls(registry, failed=4, ok=0)
        await registry.set_enabled("flaky", False)
        await registry.set_enabled("flaky", True)
        assert registry.metadata_for("flaky").quarantine == {}  # a new record: no breaker yet
        await calls(registry, failed=4, ok=0)
        await registry.reload_plugin("flaky")
        assert registry.metadata_for("flaky").quarantine == {}
        assert (await calls(registry, failed=0, ok=1))[0].status == "success"


async def test_quarantine_can_be_turned_off(flaky: Any) -> None:
    async with flaky("  quarantine: false\n") as registry:
        results = await calls(registry, failed=30, ok=0)
        assert {r.status for r in results} == {"error"}
        assert registry.metadata_for("flaky").quarantine == {}


async def test_quarantine_is_never_written_to_the_manifest(flaky: Any, tmp_path: Any) -> None:
    async with flaky(QUARANTINE) as registry:
        before = registry.manifest_path.read_text()
        await calls(registry, failed=4, ok=0)
        registry.reset_quarantine("flaky")
        assert registry.manifest_path.read_text() == before
