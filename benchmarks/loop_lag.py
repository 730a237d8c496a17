"""Event-loop lag while a sync plugin spins in its worker thread.

A 10 ms heartbeat runs in the event loop; its lateness is measured with no plugin busy (the
baseline), then while a sync plugin computes in pure Python, alternately with the interpreter's
default GIL switch interval and tuned as ``agent-pm serve`` tunes it (median of three rounds
each). Prints each phase's p99 lateness and the tuned/untuned ratio.

    uv run python benchmarks/loop_lag.py
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, ClassVar

import anyio

from agent_pm.plugins import PluginBase, PluginRegistry
from agent_pm.server import GIL_SWITCH_INTERVAL
from agent_pm.settings import Settings

BEATS = 300
ROUNDS = 3


class Spinner(PluginBase):
    name = "spinner"
    hooks = ("crunch",)
    timeout = 60.0
    stop: ClassVar[threading.Event] = threading.Event()

    def crunch(self, **payload: Any) -> None:
        while not type(self).stop.is_set():
            pass


async def p99_lateness() -> float:
    lateness = []
    for _ in range(BEATS):
        before = time.perf_counter()
        await anyio.sleep(0.01)
        lateness.append((time.perf_counter() - before - 0.01) * 1000)
    return statistics.quantiles(lateness, n=100)[98]


async def spinning(registry: PluginRegistry, interval: float) -> float:
    """p99 lateness while the spinner runs, with the GIL switch ``interval``."""
    sys.setswitchinterval(interval)
    Spinner.stop.clear()
    async with anyio.create_task_group() as group:
        group.start_soon(registry.fire, "crunch")
        try:
            return await p99_lateness()
        finally:
            Spinner.stop.set()  # the task group then waits for the handler to return


async def main() -> None:
    default = sys.getswitchinterval()
    with tempfile.TemporaryDirectory() as tmp:
        manifest = Path(tmp) / "plugins.yaml"
        manifest.write_text("- name: spinner\n  module: __main__:Spinner\n  enabled: true\n")
        async with PluginRegistry(manifest, Settings.from_env({})) as registry:
            idle = await p99_lateness()
            untuned, tuned = [], []
            for _ in range(ROUNDS):  # alternate, so drift in machine load hits both alike
                untuned.append(await spinning(registry, default))
                tuned.append(await spinning(registry, GIL_SWITCH_INTERVAL))
    sys.setswitchinterval(default)
    untuned_p99, tuned_p99 = statistics.median(untuned), statistics.median(tuned)
    print(f"p99 heartbeat lateness: idle {idle:.1f} ms")
    print(f"  spinning plugin, {default * 1000:g} ms switch interval: {untuned_p99:.1f} ms")
    print(f"  spinning plugin, {GIL_SWITCH_INTERVAL * 1000:g} ms interval: {tuned_p99:.1f} ms")
    print(
        f"summary: tuned/untuned p99 lag while a plugin spins = {tuned_p99 / untuned_p99:.2f}x; "
        f"tuned p99 {tuned_p99:.1f} ms, idle {idle:.1f} ms (target < 20 ms)"
    )


if __name__ == "__main__":
    anyio.run(main)
