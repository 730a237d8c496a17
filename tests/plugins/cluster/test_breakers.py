"""Cluster-wide quarantine on a real Redis: a breaker one node opens is open on every node."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import pytest

from agent_pm.plugins import PluginRegistry
from agent_pm.settings import Settings
from tests.fixtures.cluster import member

pytestmark = pytest.mark.anyio
FLAKY = (
    "- name: flaky\n  module: tests.fixtures.plugins:Flaky\n  enabled: true\n"
    "  quarantine: {min_calls: 4, failure_ratio: 0.5, cooldown_seconds: 600}\n"
)


def breaker(registry: PluginRegistry) -> str:
    info = registry.metadata_for("flaky").quarantine.get("post_plan")
    return info.state if info is not None else "closed"


async def until(registry: PluginRegistry, check: Callable[[], bool]) -> None:
    """Wait (bounded) until ``check()`` holds; re-checked on every message of the registry's
    bus (following a breaker announces the plugin there)."""
    with anyio.fail_after(20), registry.bus.subscribe() as subscription:
        while not check():
            await subscription.receive()


async def trip(registry: PluginRegistry) -> None:
    for _ in range(4):
        await registry.fire("post_plan", fail=True)
    assert breaker(registry) == "open"


@asynccontextmanager
async def tripped(
    settings: Settings, root: Path
) -> AsyncIterator[tuple[PluginRegistry, PluginRegistry]]:
    """Nodes A and B, once a breaker A tripped is open on B too."""
    async with (
        member(settings, root, "a", FLAKY) as (_, a),
        member(settings, root, "b", FLAKY) as (_, b),
    ):
        await trip(a)
        await until(b, lambda: breaker(b) == "open")
        yield a, b


async def test_breakers_a_trip_on_one_node_quarantines_the_hook_on_every_node(
    redis_settings: Settings, tmp_path: Path
) -> None:
    async with tripped(redis_settings, tmp_path) as (a, b):
        tripped_on_a = a.metadata_for("flaky").quarantine["post_plan"]
        followed_on_b = b.metadata_for("flaky").quarantine["post_plan"]
        assert followed_on_b.next_probe_at == tripped_on_a.next_probe_at
        assert followed_on_b.reason == tripped_on_a.reason
        plugin = b.get("flaky")
        calls_before = plugin.calls  # type: ignore[union-attr]
        [result] = await b.fire("post_plan")
        assert result.status == "quarantined"
        assert plugin.calls == calls_before  # type: ignore[union-attr]  # the handler never ran
        assert b.metadata_for("flaky").health.state == "quarantined"


async def test_breakers_a_reset_on_any_node_closes_the_breaker_everywhere(
    redis_settings: Settings, tmp_path: Path
) -> None:
    async with tripped(redis_settings, tmp_path) as (a, b):
        b.reset_quarantine("flaky", "post_plan")
        await until(a, lambda: breaker(a) == "closed")
        [result] = await a.fire("post_plan")
        assert result.status == "success"


async def test_breakers_a_node_that_joins_later_opens_what_the_cluster_has_open(
    redis_settings: Settings, tmp_path: Path
) -> None:
    async with member(redis_settings, tmp_path, "a", FLAKY) as (a_node, a):
        await trip(a)
        # The event is written in the background: wait until Redis holds the open breaker.
        with anyio.fail_after(20):
            await a_node.events.written()
        async with member(redis_settings, tmp_path, "c", FLAKY) as (_, c):
            assert breaker(c) == "open"
            [result] = await c.fire("post_plan")
            assert result.status == "quarantined"


async def test_breakers_an_admin_change_closes_the_breaker_everywhere(
    redis_settings: Settings, tmp_path: Path
) -> None:
    async with tripped(redis_settings, tmp_path) as (a, b):
        await b.reload_plugin("flaky")
        await until(a, lambda: breaker(a) == "closed")
        assert breaker(b) == "closed"
