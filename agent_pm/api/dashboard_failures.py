"""The dashboard's failures section: each recording plugin's recorded failures, with replays.

Every session sees the failures' metadata (never their payloads); admin sessions also get a
"Replay" button per pending failure and a "Replay all since" form, which answer htmx with the
plugin's refreshed card. The section is rendered with the page and after each replay.
"""

from __future__ import annotations

from typing import Any

import anyio
import anyio.to_thread
from markupsafe import Markup

from agent_pm.api.dashboard_render import render
from agent_pm.api.session import Session
from agent_pm.plugins.failures import FailureFilter, parse_since
from agent_pm.plugins.registry import PluginRegistry
from agent_pm.plugins.replay import ReplayOutcome, ReplayReport

__all__ = ["SINCE_CHOICES", "failure_card", "failures_section", "replay_notice"]

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
    """The card of ``plugin``'s newest recorded failures."""
    store = registry.failures.store

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
        notice=notice,
        error=error,
        since_choices=SINCE_CHOICES,
    )


async def failures_section(registry: PluginRegistry, session: Session) -> Markup:
    """Every card, or a note that no plugin records failures."""
    await registry.failures.settle()
    names = await anyio.to_thread.run_sync(plugins_with_failures, registry)
    if not names:
        return Markup(
            '<p class="muted">No plugin records its failures: set <code>record_failures: '
            "true</code> on an entry, or <code>RECORD_FAILURES=true</code> for all.</p>"
        )
    cards = [await failure_card(registry, session, name) for name in names]
    return Markup('<div class="cards">{}</div>').format(Markup("").join(cards))


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
