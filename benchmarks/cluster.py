"""Cluster mode on one Redis: the cost on ``fire``, forwarding throughput and latency, and how
fast an admin change is live on every node.

Starts its own ``redis-server`` (no persistence) on a free loopback port and runs the nodes in
this process, on one event loop, which makes every figure conservative (two nodes and their
subscribers share one core).

1. ``fire`` on a registry of 10 trivial plugins with the embedded bus against one with the Redis
   bus (sending happens in the background), both live in this process and timed in alternating
   rounds. Target: at most 1.2x.
2. Two nodes, 10 subscribers each; both nodes publish samples at a fixed total rate (default
   5,000/s) for a few seconds. Every subscriber must receive every node's samples; the end-to-end
   latency is from the sample's creation to its arrival at a subscriber on the other node.
   Target: 5,000 samples/s cluster-wide delivered to every subscriber, p99 under 100 ms.
3. An admin change (enable/disable) committed on one node, timed until the other node has
   applied it and announced it on its bus. Target: p99 under 1 s.
4. A breaker tripped on one node, timed until the other node refuses the hook (then reset from
   the other node). Target: within a second.

    uv run python benchmarks/cluster.py [--rate 5000] [--seconds 5] [--changes 30]
"""

from __future__ import annotations

import argparse
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio

from agent_pm.plugins import PluginBase, PluginRegistry
from agent_pm.plugins.bus import StateChange
from agent_pm.plugins.cluster.node import ClusterNode
from agent_pm.plugins.telemetry import HookSample, now
from agent_pm.settings import Settings

ROUNDS = 7
CALLS = 2_000


class Trivial(PluginBase):
    name = "trivial"
    hooks = ("post_plan",)

    async def post_plan(self, **payload: Any) -> int:
        return 1


def start_redis(directory: Path) -> tuple[subprocess.Popen[str], str]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    server = shutil.which("redis-server") or "/usr/bin/redis-server"
    argv = [server, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly"]
    argv += ["no", "--dir", str(directory)]
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    for line in process.stdout:
        if "Ready to accept connections" in line:
            break
    process.stdout.close()
    return process, f"redis://127.0.0.1:{port}/0"


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


@asynccontextmanager
async def member(
    settings: Settings, root: Path, name: str, count: int
) -> AsyncIterator[tuple[ClusterNode, PluginRegistry]]:
    path = root / name / "plugins.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(trivial_manifest(count))
    async with (
        ClusterNode(settings, path, node=name) as node,
        PluginRegistry(path, settings, bus=node.bus, store=node.control) as registry,
    ):
        node.attach(registry)
        yield node, registry


def trivial_manifest(count: int) -> str:
    return "".join(
        f"- name: p{i}\n  module: {__name__}:Trivial\n  enabled: true\n" for i in range(count)
    )


async def fire_round(registry: PluginRegistry) -> tuple[float, float]:
    """Wall-clock and process CPU seconds per ``fire`` over CALLS calls (the background sender
    and reader run on the same loop, so both count)."""
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(CALLS):
        await registry.fire("post_plan")
    await anyio.sleep(0.05)  # let the background sender catch up before the next round
    return (time.perf_counter() - wall) / CALLS, (time.process_time() - cpu) / CALLS


async def fire_overhead(settings: Settings, root: Path) -> str:
    """Both registries live at once and timed in alternating rounds, so drift of the machine
    and the cluster node's own background work weigh on both alike; medians of ROUNDS."""
    path = root / "embedded.yaml"
    path.write_text(trivial_manifest(10))
    rounds: dict[str, list[tuple[float, float]]] = {"embedded": [], "redis": []}
    async with (
        PluginRegistry(path, settings) as embedded,
        member(settings, root, "fire", 10) as (_, clustered),
    ):
        for registry in (embedded, clustered):
            await fire_round(registry)  # warm up
        for _ in range(ROUNDS):
            rounds["embedded"].append(await fire_round(embedded))
            rounds["redis"].append(await fire_round(clustered))
    alone, shared = (statistics.median(w for w, _ in rounds[k]) for k in ("embedded", "redis"))
    alone_cpu, shared_cpu = (statistics.median(c for _, c in rounds[k]) for k in rounds)
    print(f"fire, 10 plugins: embedded {alone * 1e6:.1f} us, redis {shared * 1e6:.1f} us")
    cpu = shared_cpu / alone_cpu
    print(f"  ratio {shared / alone:.2f}x (target <= 1.2x); process CPU {cpu:.2f}x")
    return f"fire x{shared / alone:.2f} (cpu x{cpu:.2f})"


async def forwarding(settings: Settings, root: Path, rate: int, seconds: float) -> str:
    async with member(settings, root, "fa", 0) as (a, _), member(settings, root, "fb", 0) as (b, _):
        latencies: list[float] = []
        received = [0] * 20
        done = anyio.Event()

        async def subscriber(index: int, node: ClusterNode, other: str) -> None:
            with node.bus.subscribe(capacity=100_000) as subscription:
                while not done.is_set():
                    with anyio.move_on_after(0.5):
                        for message in await subscription.receive():
                            if isinstance(message, HookSample):
                                received[index] += 1
                                if message.node == other:
                                    latency = (now() - message.timestamp).total_seconds()
                                    latencies.append(latency)

        async def publisher(node: ClusterNode, per_second: int, total: int) -> None:
            tick = 0.01
            per_tick = max(1, int(per_second * tick))
            sent = 0
            start = time.perf_counter()
            while sent < total:
                for _ in range(min(per_tick, total - sent)):
                    node.bus.publish(HookSample(0, "p", "h", now(), "success", 0.1))
                    sent += 1
                await anyio.sleep(max(0.0, start + sent / per_second - time.perf_counter()))

        total_per_node = int(rate * seconds / 2)
        async with anyio.create_task_group() as group:
            for i in range(10):
                group.start_soon(subscriber, i, a, "fb")
                group.start_soon(subscriber, 10 + i, b, "fa")
            await anyio.sleep(0.2)
            start = time.perf_counter()
            async with anyio.create_task_group() as publishers:
                publishers.start_soon(publisher, a, rate // 2, total_per_node)
                publishers.start_soon(publisher, b, rate // 2, total_per_node)
            expected = 2 * total_per_node
            with anyio.move_on_after(30):
                while min(received) < expected:  # noqa: ASYNC110 (a progress poll)
                    await anyio.sleep(0.01)
            elapsed = time.perf_counter() - start
            done.set()
        delivered = min(received)
        print(f"forwarding, 2 nodes x 10 subscribers, {rate}/s offered for {seconds:.0f} s:")
        print(
            f"  every subscriber got {delivered}/{expected} samples; "
            f"{delivered / elapsed:,.0f} samples/s cluster-wide (target 5,000/s)"
        )
        print(
            f"  end-to-end across nodes: p50 {percentile(latencies, 0.5) * 1e3:.1f} ms, "
            f"p99 {percentile(latencies, 0.99) * 1e3:.1f} ms (target < 100 ms)"
        )
        print(f"  dropped: {a.bus.counters.dropped + b.bus.counters.dropped}")
        p99 = percentile(latencies, 0.99) * 1e3
        return f"forwarded {delivered / elapsed:,.0f}/s p99 {p99:.0f} ms"


async def change_latency(settings: Settings, root: Path, changes: int) -> str:
    async with member(settings, root, "ca", 1) as (_, a), member(settings, root, "cb", 1) as (b, _):
        timings = []
        for i in range(changes):
            enabled = i % 2 == 1
            state = "enabled" if enabled else "disabled"
            with b.bus.subscribe(plugins=["p0"]) as subscription:
                start = time.perf_counter()
                await a.set_enabled("p0", enabled)
                seen = False
                while not seen:
                    for message in await subscription.receive():
                        if isinstance(message, StateChange) and message.node == "cb":
                            seen = message.plugin.state == state
                timings.append(time.perf_counter() - start)
        print(f"admin change live on the other node ({changes} changes):")
        print(
            f"  p50 {percentile(timings, 0.5) * 1e3:.1f} ms, "
            f"p99 {percentile(timings, 0.99) * 1e3:.1f} ms (target < 1 s)"
        )
        return f"change live everywhere p99 {percentile(timings, 0.99) * 1e3:.0f} ms"


class Flaky(PluginBase):
    name = "flaky"
    hooks = ("post_plan",)

    async def post_plan(self, **payload: Any) -> None:
        raise RuntimeError("always fails")


async def breaker_latency(settings: Settings, root: Path, trips: int) -> str:
    """Trip a breaker on A (its 20th failing call), time until B refuses the hook, reset."""
    manifest = f"- name: flaky\n  module: {__name__}:Flaky\n  enabled: true\n"
    for name in ("qa", "qb"):
        (root / name).mkdir(parents=True, exist_ok=True)
        (root / name / "plugins.yaml").write_text(manifest)
    async with (
        ClusterNode(settings, root / "qa" / "plugins.yaml", node="qa") as a_node,
        ClusterNode(settings, root / "qb" / "plugins.yaml", node="qb") as b_node,
        PluginRegistry(root / "qa" / "plugins.yaml", settings, bus=a_node.bus) as a,
        PluginRegistry(root / "qb" / "plugins.yaml", settings, bus=b_node.bus) as b,
    ):
        a_node.attach(a)
        b_node.attach(b)
        timings = []
        for _ in range(trips):
            with b.bus.subscribe(plugins=["flaky"]) as subscription:
                for _ in range(19):
                    await a.fire("post_plan")
                start = time.perf_counter()
                await a.fire("post_plan")
                while (await b.fire("post_plan"))[0].status != "quarantined":
                    await subscription.receive()  # following the breaker announces the plugin
                timings.append(time.perf_counter() - start)
            b.reset_quarantine("flaky")
            with a.bus.subscribe(plugins=["flaky"]) as subscription:
                while a.metadata_for("flaky").quarantine["post_plan"].state != "closed":
                    await subscription.receive()
    print(f"breaker opened on one node, refused on the other ({trips} trips):")
    print(
        f"  p50 {percentile(timings, 0.5) * 1e3:.1f} ms, "
        f"p99 {percentile(timings, 0.99) * 1e3:.1f} ms (target < 1 s)"
    )
    return f"breaker everywhere p99 {percentile(timings, 0.99) * 1e3:.0f} ms"


async def main(rate: int, seconds: float, changes: int) -> None:
    with tempfile.TemporaryDirectory() as directory:
        root = Path(directory)
        redis, url = start_redis(root)
        try:

            def settings(prefix: str) -> Settings:
                return Settings.from_env(
                    {"AGENT_PM_REDIS_URL": url, "AGENT_PM_REDIS_PREFIX": f"bench-{prefix}:"}
                )

            figures = [
                await fire_overhead(settings("fire"), root),
                await forwarding(settings("forward"), root, rate, seconds),
                await change_latency(settings("change"), root, changes),
                await breaker_latency(settings("breaker"), root, changes),
            ]
            print(f"summary: {'; '.join(figures)}")
        finally:
            redis.kill()
            redis.wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=int, default=5_000)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--changes", type=int, default=30)
    args = parser.parse_args()
    anyio.run(main, args.rate, args.seconds, args.changes)
