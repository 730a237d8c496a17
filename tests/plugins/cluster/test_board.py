"""The figure board on a real Redis: every node's windows, summed, and each node's alone."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import coredis
import pytest

from agent_pm.errors import ClusterUnavailableError, NodeNotFoundError
from agent_pm.plugins import PluginRegistry
from agent_pm.plugins.cluster.figures import HookFigures, collect, decode, encode, merge
from agent_pm.plugins.cluster.node import ClusterNode
from agent_pm.plugins.telemetry import HookSample, PluginTelemetry, now
from agent_pm.settings import Settings
from tests.fixtures.cluster import member

pytestmark = pytest.mark.anyio
FLAKY = (
    "- name: flaky\n  module: tests.fixtures.plugins:Flaky\n  enabled: true\n  quarantine: false\n"
)


@asynccontextmanager
async def node(
    settings: Settings, root: Path, name: str, ttl_seconds: int = 10
) -> AsyncIterator[tuple[ClusterNode, PluginRegistry]]:
    """A node whose board reads afresh on every call (no cache), and its registry."""
    async with member(settings, root, name, FLAKY) as (cluster, registry):
        cluster.board.cache_seconds = 0
        cluster.board.ttl_seconds = ttl_seconds
        yield cluster, registry


async def calls(registry: PluginRegistry, count: int, *, fail: bool) -> None:
    for _ in range(count):
        await registry.fire("post_plan", fail=fail)


def test_figures_merge_adds_counters_and_windows() -> None:
    one, two = PluginTelemetry(), PluginTelemetry()
    for status, telemetry in (("success", one), ("error", two), ("success", two)):
        telemetry.add(HookSample(0, "p", "h", now(), status, 2.0))  # type: ignore[arg-type]
    summed = merge([{"p": collect(one)}, {"p": decode(encode(collect(two)))}])
    stats, window = summed["p"]["h"]
    assert (stats.invocations, stats.failures, stats.avg_duration_ms) == (3, 1, 2.0)
    five = window.stats("5m")
    assert five.calls == 3 and five.counts.error == 1 and five.p50_ms is not None


def test_figures_merge_leaves_out_windows_of_another_layout() -> None:
    telemetry = PluginTelemetry()
    telemetry.add(HookSample(0, "p", "h", now(), "success", 1.0))
    figures = collect(telemetry)["h"]
    alien = HookFigures(figures.stats, figures.windows.__class__("v0", 0.0, [], []))
    stats, window = merge([{"p": {"h": alien}}, {"p": {"h": figures}}])["p"]["h"]
    assert stats.invocations == 2  # the counters still add up
    assert window.stats("5m").calls == 1  # the windows that could not merge are left out


async def test_board_sums_every_node_and_judges_health_from_the_sum(
    redis_settings: Settings, tmp_path: Path
) -> None:
    async with (
        node(redis_settings, tmp_path, "a") as (a_node, a),
        node(redis_settings, tmp_path, "b") as (b_node, b),
    ):
        await calls(a, 10, fail=False)
        await calls(b, 10, fail=True)
        await b_node.board.publish()
        cluster = await a_node.board.views()
        assert cluster.nodes == ["a", "b"]
        summed = a.metadata_for("flaky", views=cluster.views)
        assert summed.hook_stats["post_plan"].invocations == 20
        assert summed.hook_windows["post_plan"].counts.error == 10
        # Half the cluster's calls failed: failing, though A alone is healthy.
        assert summed.health.state == "failing"
        assert a.metadata_for("flaky").health.state == "healthy"

        alone = await a_node.board.views("b")
        assert alone.nodes == ["b"]
        b_only = a.metadata_for("flaky", views=alone.views)
        assert b_only.hook_stats["post_plan"].failures == 10
        assert b_only.health.state == "failing"
        assert (await a_node.board.views("a")).views is None  # this node's own, live
        breakdown = await a_node.board.breakdown()
        assert list(breakdown) == ["a", "b"]
        with pytest.raises(NodeNotFoundError, match="nodes: a, b"):
            await a_node.board.views("nope")


async def test_board_forgets_a_node_once_its_figures_expire(
    redis_settings: Settings, tmp_path: Path
) -> None:
    async with node(redis_settings, tmp_path, "a") as (a_node, a):
        async with node(redis_settings, tmp_path, "b", ttl_seconds=1) as (b_node, b):
            await calls(b, 3, fail=False)
            await b_node.board.publish()
            assert (await a_node.board.views()).nodes == ["a", "b"]
        # B stopped writing: its hash expires and its figures leave the sum. Redis expires
        # keys on its own clock, so this waits (bounded) for that.
        with anyio.fail_after(30):
            while (cluster := await a_node.board.views()).nodes != ["a"]:  # noqa: ASYNC110
                await anyio.sleep(0.1)
        assert a.metadata_for("flaky", views=cluster.views).hook_stats == {}


async def test_board_rewrites_only_changed_plugins_and_drops_removed_ones(
    redis_settings: Settings, tmp_path: Path
) -> None:
    url = redis_settings.redis_url
    assert url is not None
    key = f"{redis_settings.redis_prefix}figures:a"
    async with (
        node(redis_settings, tmp_path, "a") as (a_node, a),
        coredis.Redis.from_url(url) as redis,
    ):
        await calls(a, 2, fail=False)
        await a_node.board.publish()
        first = await redis.hget(key, "flaky")
        assert first is not None and decode(first)["post_plan"].stats.invocations == 2
        await redis.hset(key, {"flaky": b"left alone"})
        await a_node.board.publish()  # nothing new was recorded: the field is not rewritten
        assert await redis.hget(key, "flaky") == b"left alone"
        assert 0 < await redis.ttl(key) <= a_node.board.ttl_seconds
        await a.remove("flaky")
        await a_node.board.publish()
        assert await redis.hget(key, "flaky") is None


async def test_board_without_redis_refuses_other_nodes(
    redis_settings: Settings, tmp_path: Path
) -> None:
    async with node(redis_settings, tmp_path, "a") as (a_node, _):
        a_node.board.down()
        with pytest.raises(ClusterUnavailableError):
            await a_node.board.views()
        with pytest.raises(ClusterUnavailableError):
            await a_node.board.publish()
