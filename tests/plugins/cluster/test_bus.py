"""The cluster bus on a real Redis: one order for every node's messages, on every node."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import coredis
import msgspec
import pytest

from agent_pm.plugins.bus import Lagged, StateChange, Subscription
from agent_pm.plugins.cluster.node import ClusterNode
from agent_pm.plugins.info import PluginInfo
from agent_pm.plugins.telemetry import HookSample, now
from agent_pm.settings import Settings
from tests.fixtures.redis import RedisServer

pytestmark = pytest.mark.anyio


def sample(plugin: str = "p", hook: str = "h", duration: float = 1.0) -> HookSample:
    return HookSample(0, plugin, hook, now(), "success", duration)


@asynccontextmanager
async def node(settings: Settings, name: str, **options: Any) -> AsyncIterator[ClusterNode]:
    async with ClusterNode(settings, node=name, **options) as cluster:
        yield cluster


async def take(subscription: Subscription, count: int) -> list[Any]:
    """The next ``count`` messages (notices included), waiting as long as it takes (bounded)."""
    taken: list[Any] = []
    with anyio.fail_after(10):
        while len(taken) < count:
            taken += await subscription.receive(count - len(taken))
    return taken


async def test_cluster_bus_delivers_every_node_s_messages_to_every_node(
    redis_settings: Settings,
) -> None:
    async with node(redis_settings, "a") as a, node(redis_settings, "b") as b:
        with a.bus.subscribe() as on_a, b.bus.subscribe() as on_b:
            for i in range(5):
                a.bus.publish(sample(duration=i))
                b.bus.publish(sample("q", duration=i))
            seen_a, seen_b = await take(on_a, 10), await take(on_b, 10)
    # Both nodes see the same messages under the same cluster sequence numbers.
    assert [(m.seq, m.node, m.plugin) for m in seen_a] == [
        (m.seq, m.node, m.plugin) for m in seen_b
    ]
    seqs = [m.seq for m in seen_a]
    assert seqs == sorted(seqs) and len(set(seqs)) == 10
    for origin, plugin in (("a", "p"), ("b", "q")):
        mine = [m for m in seen_b if m.node == origin]
        assert [m.plugin for m in mine] == [plugin] * 5
        assert [m.duration_ms for m in mine] == [0, 1, 2, 3, 4]  # in order per node
    assert a.bus.counters.forwarded == 5 and a.bus.counters.received == 5
    assert a.bus.epoch == b.bus.epoch


async def test_cluster_bus_resumes_since_a_seq_seen_on_another_node(
    redis_settings: Settings,
) -> None:
    async with node(redis_settings, "a") as a, node(redis_settings, "b") as b:
        with a.bus.subscribe() as on_a, b.bus.subscribe() as on_b:
            for i in range(6):
                a.bus.publish(sample(duration=i))
            first = await take(on_a, 6)
            await take(on_b, 6)
        # A client that read three messages on A resumes on B and gets exactly the rest.
        with b.bus.subscribe(since=first[2].seq) as resumed:
            rest = await take(resumed, 3)
    assert [m.seq for m in rest] == [m.seq for m in first[3:]]


async def test_cluster_bus_carries_state_messages(redis_settings: Settings) -> None:
    async with node(redis_settings, "a") as a, node(redis_settings, "b") as b:
        with b.bus.subscribe() as on_b:
            a.bus.publish(StateChange(a.bus.next_seq(), PluginInfo(name="p", state="enabled")))
            [message] = await take(on_b, 1)
    assert isinstance(message, StateChange)
    assert message.plugin == PluginInfo(name="p", state="enabled") and message.node == "a"


async def test_cluster_bus_outbox_drops_its_oldest_when_full(redis_settings: Settings) -> None:
    async with node(redis_settings, "a") as a:
        a.bus.outbox_size = 4
        with a.bus.subscribe() as on_a:
            for i in range(10):  # no await: the sender cannot run in between
                a.bus.publish(sample(duration=i))
            assert a.bus.counters.dropped == 6
            seen = await take(on_a, 4)
    assert [m.duration_ms for m in seen] == [6, 7, 8, 9]


async def test_cluster_bus_counts_an_entry_it_cannot_decode(redis_settings: Settings) -> None:
    url = redis_settings.redis_url
    assert url is not None
    async with node(redis_settings, "a") as a, coredis.Redis.from_url(url) as r:
        with a.bus.subscribe() as on_a:
            stream = f"{redis_settings.redis_prefix}stream"
            await r.xadd(stream, {"n": "z", "c": "1", "m": "not json"}, identifier="999999-0")
            a.bus.publish(sample())
            [message] = await take(on_a, 1)
    assert isinstance(message, HookSample) and message.seq > 999999
    assert a.bus.counters.dropped == 1


async def test_cluster_bus_without_redis_publishes_locally_then_rejoins(
    redis_factory: Callable[[], RedisServer], tmp_path: Any
) -> None:
    server = redis_factory()
    settings = Settings.from_env({"AGENT_PM_REDIS_URL": server.url})
    async with node(settings, "a") as a, node(settings, "b") as b:
        with a.bus.subscribe() as on_a, b.bus.subscribe() as on_b:
            a.bus.publish(sample(duration=0))
            [before] = await take(on_a, 1)
            await take(on_b, 1)
            server.kill()
            with anyio.fail_after(10):
                await a.link.wait_up(False)
                await b.link.wait_up(False)
            # Without Redis, A's own subscribers still get A's messages, at once.
            a.bus.publish(sample(duration=1))
            [alone] = on_a.drain()
            assert alone.seq > before.seq and a.bus.counters.local == 1
            server.start()
            with anyio.fail_after(20):
                await a.link.wait_up()
                await b.link.wait_up()
            a.bus.publish(sample(duration=2))
            [after_a] = await take(on_a, 1)
            [after_b] = await take(on_b, 1)
    assert after_a.seq == after_b.seq > alone.seq
    assert after_b.node == "a" and after_b.duration_ms == 2
    assert a.link.state.reconnects == 1


async def test_cluster_bus_lags_a_slow_subscriber_as_the_embedded_one_does(
    redis_settings: Settings,
) -> None:
    async with node(redis_settings, "a") as a:
        with a.bus.subscribe(capacity=2) as slow, a.bus.subscribe() as fast:
            for i in range(5):
                a.bus.publish(sample(duration=i))
            await take(fast, 5)
            batch = slow.drain()
    assert isinstance(batch[0], Lagged) and batch[0].missed == 3
    assert [m.duration_ms for m in batch[1:]] == [3, 4]


def test_cluster_status_is_json_ready(redis_settings: Settings) -> None:
    status = ClusterNode(redis_settings, node="n").status()
    data = msgspec.to_builtins(status)
    assert data["node"] == "n" and data["link"]["state"] == "connecting"
    assert data["counters"] == {"forwarded": 0, "received": 0, "dropped": 0, "local": 0}
