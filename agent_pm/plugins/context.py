"""Call-context variables: what a hook call carries besides its payload.

``request_id`` names the operator request that led to a call (set by the REST edge);
``replay_of`` is the id of the recorded failure a call replays, so a plugin can recognise a
second delivery and deduplicate (``PluginBase.replay_of()`` reads it). Both are ``None`` outside
such a call. Context variables follow the call into its handler, in the loop or a worker thread.
"""

from __future__ import annotations

from contextvars import ContextVar

__all__ = ["replay_of", "request_id"]

request_id: ContextVar[str | None] = ContextVar("agent_pm_request_id", default=None)
replay_of: ContextVar[int | None] = ContextVar("agent_pm_replay_of", default=None)
