"""Cost of the flight recorder on ``fire``: the success path must not pay for it.

Two registries on the same 10 trivial plugins, one with failure recording off and one with it
on for every plugin, are timed in interleaved rounds in this run; the median of the on/off ratios
of neighbouring rounds is the success path's cost (target: at most 1.05x, i.e. noise). A second
pair does the same with 10 failing plugins, which shows what recording a failure costs the caller
(a JSON snapshot and a queue hand-off; redaction and SQLite happen on a worker thread, which
competes for the same cores).

    uv run python benchmarks/recorder.py
"""

from __future__ import annotations

import asyncio
import gc
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from agent_pm.plugins import PluginBase, PluginRegistry
from agent_pm.settings import Settings

ROUNDS = 15
CALLS = 2_000
PLUGINS = 10
TARGET_RATIO = 1.05
PAYLOAD = {"plan": {"id": 7, "title": "ship it", "tags": ["a", "b"]}}


class Trivial(PluginBase):
    name = "trivial"
    hooks = ("post_plan",)

    async def post_plan(self, **payload: Any) -> int:
        return 1


class Refusing(PluginBase):
    name = "refusing"
    hooks = ("post_plan",)

    async def post_plan(self, **payload: Any) -> int:
        raise RuntimeError("downstream refused")


def manifest(directory: Path, cls: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{cls}.yaml"
    entries = "".join(
        f"- name: p{i}\n  module: __main__:{cls}\n  enabled: true\n" for i in range(PLUGINS)
    )
    path.write_text(entries)
    return path


async def one_round(registry: PluginRegistry) -> float:
    gc.collect()
    started = time.perf_counter()
    for _ in range(CALLS):
        await registry.fire("post_plan", **PAYLOAD)
    return (time.perf_counter() - started) / CALLS


async def compare(directory: Path, cls: str) -> tuple[float, float, float]:
    """Median seconds per ``fire`` with recording off and on, and the median of the on/off
    ratios of neighbouring rounds (rounds alternate, so each pair saw about the same load)."""
    path = manifest(directory, cls)
    off = Settings.from_env({"DATA_DIR": str(directory / "off")})
    on = Settings.from_env({"DATA_DIR": str(directory / "on"), "RECORD_FAILURES": "true"})
    rounds: dict[str, list[float]] = {"off": [], "on": []}
    async with PluginRegistry(path, off) as plain, PluginRegistry(path, on) as recording:
        assert len(recording.failures.recording) == PLUGINS and not plain.failures.recording
        for index in range(ROUNDS):
            # Alternating which goes first keeps a trend in the machine's load out of the ratio.
            order = (("off", plain), ("on", recording))
            for label, registry in order if index % 2 else reversed(order):
                rounds[label].append(await one_round(registry))
                await recording.failures.flush()  # the writer's work stays out of the rounds
    ratios = [on / off for on, off in zip(rounds["on"], rounds["off"], strict=True)]
    return (
        statistics.median(rounds["off"]),
        statistics.median(rounds["on"]),
        statistics.median(ratios),
    )


async def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        success = await compare(Path(tmp) / "success", "Trivial")
        failure = await compare(Path(tmp) / "failure", "Refusing")
    print(f"{'path':>8} {'off us':>10} {'on us':>10} {'on/off':>8}")
    for label, (off, on, paired) in (("success", success), ("failure", failure)):
        print(f"{label:>8} {off * 1e6:>10.1f} {on * 1e6:>10.1f} {paired:>8.3f}")
    ratio = success[2]
    verdict = "meets" if ratio <= TARGET_RATIO else "misses"
    print(
        f"summary: success-path fire with recording on/off = {ratio:.3f}x ({verdict} the"
        f" {TARGET_RATIO}x target); a failing call of {PLUGINS} plugins costs"
        f" {(failure[1] - failure[0]) * 1e6:.1f} us more with recording on"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
