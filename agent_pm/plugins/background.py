"""Background hook calls: fire-and-forget work the registry runs in its own task group.

Calls may come from the event loop or from worker threads (a sync handler emitting), and the
number in flight is bounded: past the bound a call is dropped and reported, never queued
without limit.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Awaitable, Callable
from typing import Any

import anyio.abc
import anyio.lowlevel

from agent_pm.plugins.loopcall import call_soon

__all__ = ["Background"]

logger = logging.getLogger("agent_pm.plugins.registry")


class Background:
    """Starts bounded background work in a task group, from the loop or any worker thread."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.inflight = 0
        self._group: anyio.abc.TaskGroup | None = None
        self._token: anyio.lowlevel.EventLoopToken | None = None
        self._loop_thread = 0

    def attach(self, group: anyio.abc.TaskGroup | None) -> None:
        """Run work in ``group`` (``None`` stops accepting); call from the event loop."""
        self._group = group
        self._token = anyio.lowlevel.current_token() if group is not None else None
        self._loop_thread = threading.get_ident()

    def start(self, work: Callable[..., Awaitable[Any]], *args: Any) -> bool:
        """Start ``work(*args)``; ``False`` when it was dropped (bound reached, or stopped).

        From a worker thread the call is handed to the loop without waiting: ``True`` then
        means handed over, and a drop past the bound is only logged.
        """
        if threading.get_ident() == self._loop_thread:
            return self._start(work, *args)
        return self._token is not None and call_soon(self._token, self._start, work, *args)

    def _start(self, work: Callable[..., Awaitable[Any]], *args: Any) -> bool:
        if self._group is None or self.inflight >= self.limit:
            logger.warning("background work dropped: %d calls already in flight", self.inflight)
            return False
        self.inflight += 1
        self._group.start_soon(self._run, work, args)
        return True

    async def _run(self, work: Callable[..., Awaitable[Any]], args: tuple[Any, ...]) -> None:
        try:
            await work(*args)
        finally:
            self.inflight -= 1
