"""What process isolation costs: ``fire`` to an isolated trivial plugin against inline.

Round trip: one trivial plugin, inline, then with ``isolation: process``; the median time of one
``fire`` each, over several rounds in this run. The isolated call crosses two pipes and two
threads each way; the target is an extra cost under 200 µs on loopback. The floor beside it is
a bare round trip of a few bytes through two pipes to a child Python process that echoes them
(blocking reads, no event loop, no encoding): what the process boundary alone costs on this
machine at this load.

Loop-block tracking: the same inline round trip with ``LOOP_BLOCK_TRACKING`` on (the default,
each step of the handler timed) and off; the ratio is its cost.

Throughput: 10 trivial plugins on one hook, inline and isolated, fired by 20 concurrent callers;
hook calls per second, and the isolated/inline ratio.

    uv run python benchmarks/isolation.py
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import anyio

from agent_pm.plugins import PluginRegistry
from agent_pm.settings import Settings

ROUNDS = 7
CALLS = 400
CALLERS = 20
TARGET_EXTRA_US = 200


def manifest(directory: Path, count: int, isolation: str) -> Path:
    path = directory / f"plugins-{count}-{isolation}.yaml"
    path.write_text(
        "".join(
            f"- name: p{i}\n  module: _trivial_plugin:Trivial\n  enabled: true\n"
            f"  isolation: {isolation}\n"
            for i in range(count)
        )
    )
    return path


ECHO = "import os\nwhile data := os.read(0, 64):\n    os.write(1, data)\n"


def pipe_floor() -> float:
    """Median seconds of one bare pipe round trip to a child process echoing what it reads."""
    child = subprocess.Popen(
        [sys.executable, "-c", ECHO], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    assert child.stdin is not None and child.stdout is not None
    out, back = child.stdin.fileno(), child.stdout.fileno()
    rounds = []
    try:
        for _ in range(ROUNDS):
            times = []
            for _ in range(CALLS):
                started = time.perf_counter()
                os.write(out, b"ping")
                os.read(back, 64)
                times.append(time.perf_counter() - started)
            rounds.append(statistics.median(times))
    finally:
        child.stdin.close()
        child.wait()
    return statistics.median(rounds)


async def round_trip(registry: PluginRegistry) -> float:
    """Median seconds of one ``fire`` over ``CALLS`` calls."""
    times = []
    for _ in range(CALLS):
        started = time.perf_counter()
        await registry.fire("post_plan", plan={"id": 1})
        times.append(time.perf_counter() - started)
    return statistics.median(times)


async def throughput(registry: PluginRegistry, plugins: int) -> float:
    """Hook calls per second with ``CALLERS`` callers firing at once."""
    per_caller = CALLS // CALLERS

    async def caller() -> None:
        for _ in range(per_caller):
            await registry.fire("post_plan", plan={"id": 1})

    started = time.perf_counter()
    async with anyio.create_task_group() as group:
        for _ in range(CALLERS):
            group.start_soon(caller)
    return CALLERS * per_caller * plugins / (time.perf_counter() - started)


async def measure(
    directory: Path, count: int, isolation: str, probe: str, tracking: str = "1"
) -> list[float]:
    settings = Settings.from_env({"PATH": "", "LOOP_BLOCK_TRACKING": tracking})
    async with PluginRegistry(manifest(directory, count, isolation), settings) as registry:
        assert all(m.active for m in registry.list_metadata()), registry.list_metadata()
        run = round_trip if probe == "round_trip" else lambda r: throughput(r, count)
        await run(registry)  # warm-up
        return [await run(registry) for _ in range(ROUNDS)]


async def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        inline = statistics.median(await measure(directory, 1, "inline", "round_trip"))
        isolated = statistics.median(await measure(directory, 1, "process", "round_trip"))
        extra_us = (isolated - inline) * 1e6
        verdict = "meets" if extra_us < TARGET_EXTRA_US else "misses"
        print(
            f"round trip, 1 plugin: inline {inline * 1e6:.0f} µs, isolated {isolated * 1e6:.0f} µs;"
            f" extra {extra_us:.0f} µs ({verdict} the {TARGET_EXTRA_US} µs target); bare pipe "
            f"round trip {pipe_floor() * 1e6:.0f} µs"
        )
        untracked = statistics.median(await measure(directory, 1, "inline", "round_trip", "0"))
        print(
            f"loop-block tracking: inline round trip {inline * 1e6:.1f} µs on, "
            f"{untracked * 1e6:.1f} µs off (x{inline / untracked:.2f})"
        )
        inline_rate = statistics.median(await measure(directory, 10, "inline", "throughput"))
        isolated_rate = statistics.median(await measure(directory, 10, "process", "throughput"))
        print(
            f"throughput, 10 plugins, {CALLERS} callers: inline {inline_rate:,.0f} calls/s, "
            f"isolated {isolated_rate:,.0f} calls/s (x{isolated_rate / inline_rate:.2f})"
        )


if __name__ == "__main__":
    anyio.run(main)
