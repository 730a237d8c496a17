"""How precisely hooks are cut at their timeout, and the loop's lag while a sync plugin blocks.

1. A hung async hook with a 200 ms timeout, fired ``RUNS`` times: how far past 200 ms ``fire``
   returns, against how far past 200 ms a bare ``anyio.sleep(0.2)`` wakes in the same run.
2. A 10 ms heartbeat's p99 lateness while a sync plugin is blocked in its worker thread, against
   the same heartbeat with nothing blocked.

These figures were timed unit tests once; on a loaded machine they belong here (medians).

    uv run python benchmarks/timeouts.py
"""

from __future__ import annotations

import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, ClassVar

import anyio

from agent_pm.plugins import PluginBase, PluginRegistry
from agent_pm.settings import Settings

RUNS = 20
BEATS = 300
TIMEOUT = 0.2


class Hung(PluginBase):
    name = "hung"
    hooks = ("hang",)
    timeout = TIMEOUT

    async def hang(self, **payload: Any) -> None:
        await anyio.sleep_forever()


class Blocked(PluginBase):
    name = "blocked"
    hooks = ("block",)
    timeout = 60.0
    entered: ClassVar[threading.Event] = threading.Event()
    release: ClassVar[threading.Event] = threading.Event()

    def block(self, **payload: Any) -> None:
        type(self).entered.set()
        type(self).release.wait()


MANIFEST = """\
- {name: hung, module: "__main__:Hung", enabled: true}
- {name: blocked, module: "__main__:Blocked", enabled: true}
"""


async def overrun_ms(wait: Any) -> float:
    """Median milliseconds by which ``await wait()`` returns past ``TIMEOUT``."""
    overruns = []
    for _ in range(RUNS):
        started = time.perf_counter()
        await wait()
        overruns.append((time.perf_counter() - started - TIMEOUT) * 1000)
    return statistics.median(overruns)


async def p99_lateness_ms() -> float:
    lateness = []
    for _ in range(BEATS):
        before = time.perf_counter()
        await anyio.sleep(0.01)
        lateness.append((time.perf_counter() - before - 0.01) * 1000)
    return statistics.quantiles(lateness, n=100)[98]


async def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        manifest = Path(tmp) / "plugins.yaml"
        manifest.write_text(MANIFEST)
        async with PluginRegistry(manifest, Settings.from_env({})) as registry:
            sleep_over = await overrun_ms(lambda: anyio.sleep(TIMEOUT))
            fire_over = await overrun_ms(lambda: registry.fire("hang"))
            idle = await p99_lateness_ms()
            assert registry.fire_nowait("block")
            await anyio.to_thread.run_sync(Blocked.entered.wait)
            blocked = await p99_lateness_ms()
            Blocked.release.set()
    print(
        f"hung hook cut: {fire_over:.2f} ms past its 200 ms timeout (bare sleep: {sleep_over:.2f})"
    )
    print(f"heartbeat p99 lateness: idle {idle:.2f} ms, sync plugin blocked {blocked:.2f} ms")
    print(
        f"summary: hung hook overrun {fire_over:.2f} ms (target < 50 ms); "
        f"blocked/idle p99 lag {blocked:.2f}/{idle:.2f} ms (target < idle + 20 ms)"
    )


if __name__ == "__main__":
    anyio.run(main)
