"""A plugin's recorded failures on its console page: the card and what a replay says.

Every session sees the failures' metadata (never their payloads); admin sessions also get a
"Replay" button per pending failure and a "Replay all since" form (see :mod:`._replays`).
"""

from __future__ import annotations

from typing import Any

import anyio
import anyio.to_thread
from markupsafe import Markup

from agent_pm.api._session import Session
from agent_pm.api.dashboard._regions import Notice
from agent_pm.api.dashboard._render import render
from agent_pm.plugins.failures import FailureFilter, parse_since
from agent_pm.plugins.registry import PluginRegistry
from agent_pm.plugins.replay import ReplayOutcome, ReplayReport

__all__ = ["BULK_LIMIT", "SINCE_CHOICES", "failure_card", "replay_notice", "since_filter"]

SHOWN = 20
BULK_LIMIT = 500
SINCE_CHOICES = (
    ("", "the first"),
    ("15m", "15 minutes ago"),
    ("1h", "an hour ago"),
    ("24h", "a day ago"),
    ("7d", "a week ago"),
)


def plugins_with_failures(registry: PluginRegistry) -> list[str]:
    """Recording plugins and plugins with stored failures, in manifest order."""
    stored = registry.failures.store.plugins()
    recording = registry.failures.recording
    return [name for name in registry.names() if name in recording or name in stored]


async def failure_card(
    registry: PluginRegistry,
    session: Session,
    plugin: str,
    *,
    notice: str | None = None,
    error: str | None = None,
) -> Markup:
    """The card of ``plugin``'s newest recorded failures, or how to start recording them."""
    await registry.failures.settle()
    store = registry.failures.store
    if plugin not in await anyio.to_thread.run_sync(plugins_with_failures, registry):
        return render("partials/failures_off.html", plugin=plugin)

    def read() -> tuple[list[Any], int, int]:
        failures, matched = store.page(FailureFilter(plugin), SHOWN, payloads=False)
        return failures, matched, store.count(FailureFilter(plugin, state="pending"))

    failures, matched, pending = await anyio.to_thread.run_sync(read)
    return render(
        "partials/failures.html",
        plugin=plugin,
        failures=failures,
        matched=matched,
        pending=pending,
        admin=session.is_admin,
        csrf=session.csrf,
        notice=Notice(notice) if notice else None,
        error=error,
        since_choices=SINCE_CHOICES,
    )


def replay_notice(result: ReplayOutcome | ReplayReport) -> str:
    """One line saying what a replay did."""
    if isinstance(result, ReplayReport):
        line = (
            f"Replayed {len(result.outcomes)} of {result.matched}: "
            f"{result.succeeded} succeeded, {result.failed} failed."
        )
        return line + (f" {result.remaining} more pending." if result.remaining else "")
    if result.result is None:
        return f"Failure {result.failure} not replayed: {result.refused}"
    status = result.result.status
    detail = f" ({result.result.error})" if result.result.error else ""
    return f"Replayed failure {result.failure}: {status}{detail}."


def since_filter(plugin: str, since: str) -> FailureFilter:
    """The bulk replay's filter for a ``since`` choice of the form (``""``: every one)."""
    return FailureFilter(plugin, since=parse_since(since) if since else None)
