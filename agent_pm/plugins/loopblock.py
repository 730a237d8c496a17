"""Loop-block attribution: how long each step of an inline async handler holds the event loop.

An async handler runs in steps, from one resume to its next suspension; while a step runs,
nothing else on the loop does. :func:`timed` wraps a handler so each step (each ``send`` or
``throw`` into its coroutine) is timed and recorded per plugin and hook: a fixed histogram, the
longest step, and the plugin's worst steps. A step above the warning threshold is logged with
the plugin and hook that took it; one above the listening threshold is also passed on (an
``isolation: auto`` plugin's promotion counts them).
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

__all__ = ["BOUNDS_MS", "LoopBlocks", "timed"]

logger = logging.getLogger(__name__)

# Upper bounds (ms) of the histogram's buckets; one more bucket holds the steps above the last.
BOUNDS_MS = (1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 1000.0)
WORST_KEPT = 5
# Called with (plugin, hook, ms) for a step at or past the listening threshold.
Listener = Callable[[str, str, float], None]
_clock = time.perf_counter


class HookBlocks(msgspec.Struct):
    """The steps of one hook's handler: counts per bucket, their total and the longest."""

    counts: list[int]
    steps: int = 0
    total_ms: float = 0.0
    max_ms: float = 0.0
    over_threshold: int = 0


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
        self.listen_ms = math.inf
        self.hooks: dict[str, HookBlocks] = {}
        self._worst: list[WorstStep] = []

    def record(self, hook: str, ms: float) -> None:
        blocks = self.hooks.get(hook)
        if blocks is None:
            blocks = self.hooks[hook] = HookBlocks([0] * (len(BOUNDS_MS) + 1))
        blocks.counts[bisect.bisect_left(BOUNDS_MS, ms)] += 1
        blocks.steps += 1
        blocks.total_ms += ms
        blocks.max_ms = max(blocks.max_ms, ms)
        if ms >= self.warn_ms:
            blocks.over_threshold += 1
            logger.warning(
                "plugin %s held the event loop for %.0f ms in one step of hook %s",
                self.plugin,
                ms,
                hook,
            )
        if ms >= self.listen_ms and self.listener is not None:
            self.listener(self.plugin, hook, ms)
        worst = self._worst
        if len(worst) < WORST_KEPT:
            heapq.heappush(worst, WorstStep(ms, hook, time.time()))
        elif ms > worst[0].ms:
            heapq.heapreplace(worst, WorstStep(ms, hook, time.time()))

    def worst(self) -> list[WorstStep]:
        """The longest steps seen, longest first."""
        return sorted(self._worst, reverse=True)

    def snapshot(self) -> dict[str, Any]:
        """The metadata view: per hook histogram and the worst steps."""
        return {
            "warn_ms": self.warn_ms,
            "bounds_ms": list(BOUNDS_MS),
            "hooks": {hook: msgspec.to_builtins(b) for hook, b in self.hooks.items()},
            "worst": [msgspec.to_builtins(step) for step in self.worst()],
        }


class TimedCoroutine(Coroutine[Any, Any, Any]):
    """A coroutine that times each ``send``/``throw`` into the one it wraps: one step each.

    The event loop's task drives it like the handler's own coroutine, so the timing costs two
    clock reads and a record per step, and no extra frame.
    """

    __slots__ = ("_blocks", "_coro", "_hook")

    def __init__(self, coro: Coroutine[Any, Any, Any], blocks: LoopBlocks, hook: str) -> None:
        self._coro = coro
        self._blocks = blocks
        self._hook = hook

    def send(self, value: Any) -> Any:
        started = _clock()
        try:
            return self._coro.send(value)
        finally:
            self._blocks.record(self._hook, (_clock() - started) * 1000)

    def throw(self, *args: Any) -> Any:
        started = _clock()
        try:
            return self._coro.throw(*args)
        finally:
            self._blocks.record(self._hook, (_clock() - started) * 1000)

    def close(self) -> None:
        self._coro.close()

    def __await__(self) -> Generator[Any, Any, Any]:
        return self  # an iterator, as a coroutine's own is

    def __next__(self) -> Any:
        return self.send(None)

    def __iter__(self) -> TimedCoroutine:
        return self


def timed(
    handler: Callable[..., Coroutine[Any, Any, Any]], blocks: LoopBlocks, hook: str
) -> Callable[..., Coroutine[Any, Any, Any]]:
    """``handler`` with each step of its coroutine timed into ``blocks``."""

    def call(**payload: Any) -> Coroutine[Any, Any, Any]:
        return TimedCoroutine(handler(**payload), blocks, hook)

    return call
