"""Hook dispatch overhead: ``registry.fire`` against bare ``asyncio.gather`` and pluggy.

For N = 1, 10 and 50 trivial plugins, times one ``fire`` (concurrent, with timeouts and telemetry
on) against ``asyncio.gather`` of the same handler coroutines and against pluggy calling N sync
implementations, all in this run. Prints the time per call and the ratios; the target is at most
1.5x ``asyncio.gather`` at N = 10.

    uv run python benchmarks/dispatch.py
"""

from __future__ import annotations

import asyncio
import gc
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pluggy

from agent_pm.plugins import PluginBase, PluginRegistry
from agent_pm.settings import Settings

ROUNDS = 7
TARGET_RATIO = 1.5


class Trivial(PluginBase):
    name = "trivial"
    hooks = ("post_plan",)

    async def post_plan(self, **payload: Any) -> int:
        return 1


def manifest(directory: Path, count: int) -> Path:
    path = directory / f"plugins-{count}.yaml"
    entries = "".join(
        f"- name: p{i}\n  module: __main__:Trivial\n  enabled: true\n" for i in range(count)
    )
    path.write_text(entries)
    return path


def pluggy_caller(count: int) -> Callable[[], Any]:
    spec = pluggy.HookspecMarker("bench")
    impl = pluggy.HookimplMarker("bench")

    class Spec:
        @spec
        def post_plan(self, plan: Any) -> Any: ...

    class Impl:
        @impl
        def post_plan(self, plan: Any) -> int:
            return 1

    manager = pluggy.PluginManager("bench")
    manager.add_hookspecs(Spec)
    for _ in range(count):
        manager.register(Impl())
    return lambda: manager.hook.post_plan(plan={})


async def per_call(call: Callable[[], Awaitable[Any]], calls: int) -> float:
    """Best-of-rounds seconds per awaited call."""
    samples = []
    for _ in range(ROUNDS):
        gc.collect()
        started = time.perf_counter()
        for _ in range(calls):
            await call()
        samples.append((time.perf_counter() - started) / calls)
    return min(samples)


async def measure(count: int, directory: Path) -> dict[str, float]:
    settings = Settings.from_env({})
    async with PluginRegistry(manifest(directory, count), settings) as registry:
        handlers = [plugin.post_plan for _, plugin in registry.active_plugins()]  # type: ignore[attr-defined]
        calls = max(200, 20_000 // count)

        async def gather() -> Any:
            return await asyncio.gather(*(handler(plan={}) for handler in handlers))

        async def fire() -> Any:
            return await registry.fire("post_plan", plan={})

        plug = pluggy_caller(count)

        async def pluggy_call() -> Any:
            return plug()

        await fire()
        return {
            "gather": await per_call(gather, calls),
            "fire": await per_call(fire, calls),
            "pluggy": await per_call(pluggy_call, calls),
        }


async def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        results = {n: await measure(n, Path(tmp)) for n in (1, 10, 50)}
    columns = ("fire us", "gather us", "pluggy us", "fire/gather", "fire/pluggy")
    print(f"{'N':>4} " + " ".join(f"{c:>12}" for c in columns))
    for n, r in results.items():
        print(
            f"{n:>4} {r['fire'] * 1e6:>12.1f} {r['gather'] * 1e6:>12.1f} {r['pluggy'] * 1e6:>12.1f}"
            f" {r['fire'] / r['gather']:>12.2f} {r['fire'] / r['pluggy']:>12.2f}"
        )
    ratio = results[10]["fire"] / results[10]["gather"]
    verdict = "meets" if ratio <= TARGET_RATIO else "misses"
    print(f"summary: fire/gather at N=10 = {ratio:.2f}x ({verdict} the {TARGET_RATIO}x target)")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
