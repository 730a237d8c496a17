"""Loop-block attribution: how long each step of an inline async handler holds the event loop.

An async handler runs in steps, from one resume to its next suspension; while a step runs,
nothing else on the loop does. The dispatcher's eager tasks time every step they run
(:mod:`agent_pm.plugins.eager`); :class:`TimedCoroutine` times the steps of a coroutine another
runner drives (trio's tasks, Python 3.12's own eager tasks). Each step is recorded per plugin and
hook by its :class:`HookBlocks`: a fixed histogram, the longest step, and the plugin's worst
steps. A step above the warning threshold is logged with the plugin and hook that took it; one
above the listening threshold is also passed on (an ``isolation: auto`` plugin's promotion
counts them).
"""

from __future__ import annotations

import bisect
import heapq
import logging
import math
import time
from collections.abc import Callable, Coroutine, Generator
from typing import Any

import msgspec

__all__ = ["BOUNDS_MS", "HookBlocks", "LoopBlocks", "TimedCoroutine"]

logger = logging.getLogger(__name__)

# Upper bounds (ms) of the histogram's buckets; one more bucket holds the steps above the last.
BOUNDS_MS = (1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 1000.0)
WORST_KEPT = 5
# Called with (plugin, hook, ms) for a step at or past the listening threshold.
Listener = Callable[[str, str, float], None]
_clock = time.perf_counter


class HookBlocks:
    """The steps of one hook's handler: counts per bucket, their total and the longest.

    Calling it records one step. A step in the first bucket that is no warning, no evidence
    and none of the worst kept only adds to the counters.
    """

    __slots__ = ("_owner", "counts", "hook", "max_ms", "over_threshold", "steps", "total_ms")

    def __init__(self, owner: LoopBlocks, hook: str) -> None:
        self._owner = owner
        self.hook = hook
        self.counts = [0] * (len(BOUNDS_MS) + 1)
        self.steps = 0
        self.total_ms = 0.0
        self.max_ms = 0.0
        self.over_threshold = 0

    def __call__(self, ms: float) -> None:
        self.steps += 1
        self.total_ms += ms
        if ms > self.max_ms:
            self.max_ms = ms
        if ms < self._owner.unremarkable_ms:
            self.counts[0] += 1
            return
        self.counts[bisect.bisect_left(BOUNDS_MS, ms)] += 1
        self._owner.remark(self, ms)

    def info(self) -> dict[str, Any]:
        return {
            "counts": list(self.counts),
            "steps": self.steps,
            "total_ms": self.total_ms,
            "max_ms": self.max_ms,
            "over_threshold": self.over_threshold,
        }


class WorstStep(msgspec.Struct, frozen=True, order=True):
    ms: float
    hook: str
    at: float


class LoopBlocks:
    """Loop-hold times of one plugin's async handlers."""

    def __init__(self, plugin: str, warn_ms: float, listener: Listener | None = None) -> None:
        self.plugin = plugin
        self.warn_ms = warn_ms
        # Told of every step of at least ``listen_ms`` (promotion's evidence).
        self.listener = listener
        self._listen_ms = math.inf
        self.hooks: dict[str, HookBlocks] = {}
        self._worst: list[WorstStep] = []
        # Below this a step is only counted (see ``_settle``).
        self.unremarkable_ms = 0.0

    @property
    def listen_ms(self) -> float:
        return self._listen_ms

    @listen_ms.setter
    def listen_ms(self, value: float) -> None:
        self._listen_ms = value
        self._settle()

    def steps(self, hook: str) -> HookBlocks:
        """The recorder of ``hook``'s steps."""
        found = self.hooks.get(hook)
        if found is None:
            found = self.hooks[hook] = HookBlocks(self, hook)
        return found

    def record(self, hook: str, ms: float) -> None:
        self.steps(hook)(ms)

    def remark(self, blocks: HookBlocks, ms: float) -> None:
        """A step past the counters' fast path: warn, pass it on, keep it among the worst."""
        if ms >= self.warn_ms:
            blocks.over_threshold += 1
            logger.warning(
                "plugin %s held the event loop for %.0f ms in one step of hook %s",
                self.plugin,
                ms,
                blocks.hook,
            )
        if ms >= self._listen_ms and self.listener is not None:
            self.listener(self.plugin, blocks.hook, ms)
        worst = self._worst
        if len(worst) < WORST_KEPT:
            heapq.heappush(worst, WorstStep(ms, blocks.hook, time.time()))
        elif ms > worst[0].ms:
            heapq.heapreplace(worst, WorstStep(ms, blocks.hook, time.time()))
        self._settle()

    def _settle(self) -> None:
        """Below the first bucket's bound, the thresholds and the least of a full worst list,
        a step changes nothing but counters."""
        floor = worst[0].ms if len(worst := self._worst) == WORST_KEPT else 0.0
        self.unremarkable_ms = min(BOUNDS_MS[0], self.warn_ms, self._listen_ms, floor)

    def worst(self) -> list[WorstStep]:
        """The longest steps seen, longest first."""
        return sorted(self._worst, reverse=True)

    def snapshot(self) -> dict[str, Any]:
        """The metadata view: per hook histogram and the worst steps."""
        return {
            "warn_ms": self.warn_ms,
            "bounds_ms": list(BOUNDS_MS),
            "hooks": {hook: blocks.info() for hook, blocks in self.hooks.items()},
            "worst": [msgspec.to_builtins(step) for step in self.worst()],
        }


class TimedCoroutine(Coroutine[Any, Any, Any]):
    """A coroutine that times each ``send``/``throw`` into the one it wraps: one step each.

    The event loop's task drives it like the handler's own coroutine, so the timing costs two
    clock reads and a record per step, and no extra frame.
    """

    __slots__ = ("_coro", "_steps")

    def __init__(self, coro: Coroutine[Any, Any, Any], steps: Callable[[float], None]) -> None:
        self._coro = coro
        self._steps = steps

    def send(self, value: Any) -> Any:
        started = _clock()
        try:
            return self._coro.send(value)
        finally:
            self._steps((_clock() - started) * 1000)

    def throw(self, *args: Any) -> Any:
        started = _clock()
        try:
            return self._coro.throw(*args)
        finally:
            self._steps((_clock() - started) * 1000)

    def close(self) -> None:
        self._coro.close()

    def __await__(self) -> Generator[Any, Any, Any]:
        return self  # an iterator, as a coroutine's own is

    def __next__(self) -> Any:
        return self.send(None)

    def __iter__(self) -> TimedCoroutine:
        return self
