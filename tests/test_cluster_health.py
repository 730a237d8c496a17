"""Merged health across ``serve`` processes on one Redis: the cluster's figures on every surface,
each node's alone with ``?node=``, and quarantine that holds on every node."""

from __future__ import annotations

import re
from pathlib import Path

import anyio
import httpx
import pytest

from agent_pm.cli import main
from tests.fixtures.redis import RedisServer
from tests.test_cluster import KEY, cluster, get, post, until

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(300)]
UNGUARDED = (
    "- name: flaky\n  module: tests.fixtures.plugins:Flaky\n  enabled: true\n  quarantine: false\n"
)
FLAKY = (
    "- name: flaky\n  module: tests.fixtures.plugins:Flaky\n  enabled: true\n"
    "  quarantine: {min_calls: 4, failure_ratio: 0.5, cooldown_seconds: 600}\n"
)


def calls(listing: httpx.Response, plugin: str = "flaky") -> int:
    [info] = [p for p in listing.json()["plugins"] if p["name"] == plugin]
    stats = info["hook_stats"].get("post_plan")
    return stats["invocations"] if stats else 0


def series(text: str, name: str, **labels: str) -> float:
    wanted = ",".join(f'{key}="{value}"' for key, value in labels.items())
    pattern = re.escape(name) + (r"\{" + re.escape(wanted) + r"\}" if labels else "") + r" (\S+)$"
    found = re.search("^" + pattern, text, re.M)
    assert found is not None, f"no {name}{{{wanted}}} in /metrics"
    return float(found.group(1))


async def fire(url: str, times: int, *, fail: bool = False) -> None:
    for _ in range(times):
        assert (await post(url, "/hooks/post_plan", {"fail": fail})).status_code == 200


async def cli(*argv: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = await anyio.to_thread.run_sync(main, list(argv))
    return code, capsys.readouterr().out


async def test_cluster_health_every_surface_shows_the_sum_and_each_node_alone(
    redis_server: RedisServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with cluster(redis_server, tmp_path, (), (), manifest_text=UNGUARDED) as (a, b):
        await fire(a, 3)
        await fire(b, 5, fail=True)

        async def summed() -> httpx.Response | None:
            listing = await get(a, "/plugins")
            return listing if calls(listing) == 8 else None

        listing = await until(summed)
        assert listing.json()["figures"] == {"figures": "cluster", "nodes": ["n0", "n1"]}
        [flaky] = listing.json()["plugins"]
        assert flaky["hook_windows"]["post_plan"]["counts"] == {
            "success": 3,
            "error": 5,
            "timeout": 0,
            "skipped": 0,
            "quarantined": 0,
            "deadline": 0,
        }
        # Calls failed across the cluster (fewer than ``min_calls``: degraded); none on A.
        assert flaky["hook_health"]["post_plan"]["state"] == "degraded"
        alone = await get(a, "/plugins?node=n0")
        assert alone.json()["figures"] == {"figures": "node", "nodes": ["n0"]}
        assert calls(alone) == 3 and calls(await get(a, "/plugins?node=n1")) == 5
        assert alone.json()["plugins"][0]["hook_health"]["post_plan"]["state"] == "healthy"

        stats = (await get(a, "/plugins/flaky/stats?window=5m")).json()
        hook = stats["hooks"]["post_plan"]
        assert hook["stats"]["calls"] == 8
        assert {node: s["calls"] for node, s in hook["nodes"].items()} == {"n0": 3, "n1": 5}
        one = (await get(a, "/plugins/flaky/stats?node=n1")).json()
        assert one["hooks"]["post_plan"]["stats"]["counts"]["error"] == 5
        assert one["hooks"]["post_plan"]["nodes"] == {}

        text = (await get(a, "/metrics")).text
        labels = {"plugin": "flaky", "hook": "post_plan"}
        assert series(text, "agent_pm_hook_invocations_total", **labels) == 8
        assert series(text, "agent_pm_cluster_nodes") == 2
        per_node = (await get(a, "/metrics?node=n1")).text
        assert series(per_node, "agent_pm_hook_failures_total", **labels) == 5

        missing = await get(a, "/plugins?node=nope")
        assert missing.status_code == 404 and "n0, n1" in missing.json()["detail"]
        assert (await get(a, "/metrics?node=nope")).status_code == 404

        code, out = await cli(
            "plugins", "--url", a, "--api-key", KEY, "list", "--node", "n1", capsys=capsys
        )
        assert code == 0 and "figures: node n1 alone" in out
        assert re.search(r"^flaky\s+enabled\s+degraded\s.*\spost_plan\s+5\s+5\s", out, re.M), out
        code, out = await cli(
            "plugins", "--url", a, "--api-key", KEY, "stats", "flaky", capsys=capsys
        )
        assert code == 0 and "figures: the sum over nodes n0, n1" in out
        assert re.search(r"^post_plan\s+n1\s+5\s+100\.0%", out, re.M), out


async def test_cluster_health_quarantine_holds_on_every_node(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    with cluster(redis_server, tmp_path, (), (), manifest_text=FLAKY) as (a, b):

        async def breaker(url: str) -> str:
            info = (await get(url, "/plugins/flaky")).json()["plugin"]["quarantine"]
            return info.get("post_plan", {}).get("state", "closed")

        async def open_on_b() -> bool:
            return await breaker(b) == "open"

        async def closed_on_a() -> bool:
            return await breaker(a) == "closed"

        await fire(a, 4, fail=True)
        assert await breaker(a) == "open"
        await until(open_on_b)
        answer = await post(b, "/hooks/post_plan", {})
        assert [r["status"] for r in answer.json()["results"]] == ["quarantined"]

        assert (await post(b, "/plugins/flaky/quarantine/reset")).status_code == 200
        await until(closed_on_a)
        answer = await post(a, "/hooks/post_plan", {})
        assert [r["status"] for r in answer.json()["results"]] == ["success"]
