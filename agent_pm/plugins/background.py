"""Background hook calls: fire-and-forget work the registry runs in its own task group.

Calls may come from the event loop or from worker threads (a sync handler emitting), and the
number in flight is bounded: past the bound a call is dropped and reported, never queued
without limit. A worker thread never waits for the loop: it hands the call over and moves on.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import anyio.abc
import anyio.lowlevel

from agent_pm.plugins.loopcall import call_soon

__all__ = ["Background"]

logger = logging.getLogger(__name__)
Work = Callable[..., Awaitable[Any]]


class Background:
    """Starts bounded background work in a task group, from the loop or any worker thread."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.inflight = 0
        self._group: anyio.abc.TaskGroup | None = None
        self._token: anyio.lowlevel.EventLoopToken | None = None
        self._loop_thread = 0
        self._handed_over: deque[tuple[Work, tuple[Any, ...]]] = deque()
        self._wakeup: anyio.Event | None = None

    def attach(self, group: anyio.abc.TaskGroup) -> None:
        """Run work in ``group`` until :meth:`close`; call from the event loop."""
        self._group = group
        self._token = anyio.lowlevel.current_token()
        self._loop_thread = threading.get_ident()
        self._wakeup = anyio.Event()
        group.start_soon(self._receive_handovers)

    def close(self) -> None:
        """Stop accepting work; what runs already finishes. Call from the event loop."""
        self._group = None
        if self._wakeup is not None:
            self._wakeup.set()

    def start(self, work: Work, *args: Any) -> bool:
        """Start ``work(*args)``; ``False`` when it was dropped (bound reached, or closed).

        From a worker thread the call is handed to the loop without waiting: ``True`` then
        means handed over, and a drop past the bound is only logged.
        """
        if threading.get_ident() == self._loop_thread:
            return self._start(work, args)
        return self._token is not None and call_soon(self._token, self._hand_over, work, args)

    def _hand_over(self, work: Work, args: tuple[Any, ...]) -> None:
        # Runs as a plain loop callback, outside any task: a task of ours starts the work.
        self._handed_over.append((work, args))
        if self._wakeup is not None:
            self._wakeup.set()

    async def _receive_handovers(self) -> None:
        while self._group is not None and self._wakeup is not None:
            await self._wakeup.wait()
            self._wakeup = anyio.Event()
            while self._handed_over:
                self._start(*self._handed_over.popleft())

    def _start(self, work: Work, args: tuple[Any, ...]) -> bool:
        if self._group is None or self.inflight >= self.limit:
            logger.warning("background work dropped: %d calls already in flight", self.inflight)
            return False
        self.inflight += 1
        self._group.start_soon(self._run, work, args)
        return True

    async def _run(self, work: Work, args: tuple[Any, ...]) -> None:
        try:
            await work(*args)
        finally:
            self.inflight -= 1
