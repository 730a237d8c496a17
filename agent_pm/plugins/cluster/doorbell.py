"""A doorbell: wakes the one task waiting for work, at the cost of a check when nobody waits."""

from __future__ import annotations

from collections.abc import Callable

import anyio

__all__ = ["Doorbell"]


class Doorbell:
    """Rung by producers (from the event loop), waited on by one consumer."""

    __slots__ = ("_event",)

    def __init__(self) -> None:
        self._event: anyio.Event | None = None

    def ring(self) -> None:
        if self._event is not None:
            self._event.set()

    async def wait(self, ready: Callable[[], object]) -> None:
        """Return once ``ready()`` is true, sleeping until a ring between checks."""
        while not ready():
            self._event = anyio.Event()
            try:
                await self._event.wait()
            finally:
                self._event = None
