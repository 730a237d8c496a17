"""Call-context variables: what a hook call carries besides its payload.

``request_id`` names the operator request that led to a call (set by the REST edge);
``replay_of`` is the id of the recorded failure a call replays, so a plugin can recognise a
second delivery and deduplicate (``PluginBase.replay_of()`` reads it); ``deadline`` is when the
hook call running in this context must end (``PluginBase.remaining()`` reads it). All are
``None`` outside such a call. Context variables follow the call into its handler, in the loop
or a worker thread, and on into the hooks a handler emits.
"""

from __future__ import annotations

import math
import time
from contextvars import ContextVar

import anyio

__all__ = ["budget", "deadline", "remaining", "replay_of", "request_id"]

request_id: ContextVar[str | None] = ContextVar("agent_pm_request_id", default=None)
replay_of: ContextVar[int | None] = ContextVar("agent_pm_replay_of", default=None)
deadline: ContextVar[float | None] = ContextVar("agent_pm_deadline", default=None)
"""When the hook call running in this context must end, on ``time.monotonic()``'s clock (the
event loop's clock is not readable from worker threads)."""


def remaining() -> float | None:
    """Seconds left to the current hook call (``0.0`` once past); ``None`` outside of one."""
    end = deadline.get()
    return None if end is None else max(0.0, end - time.monotonic())


def budget(timeout: float | None) -> float | None:
    """The seconds a caller leaves a hook call: the least of ``timeout``, the deadline of the
    anyio cancel scopes it runs in and that of the hook call it runs in; ``None`` if none."""
    left = math.inf if timeout is None else timeout
    scope = anyio.current_effective_deadline()
    if scope != math.inf:
        left = min(left, scope - anyio.current_time())
    end = deadline.get()
    if end is not None:
        left = min(left, end - time.monotonic())
    return None if left == math.inf else max(0.0, left)
