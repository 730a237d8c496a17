"""Replaying recorded failures from the console: one, or every pending one since a time.

Admin only, with the CSRF token and same-origin checks of every console action. htmx requests
get the plugin's refreshed failures card; plain form posts get the plugin page.
"""

from __future__ import annotations

from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from agent_pm.api._reading import natural
from agent_pm.api._session import Session
from agent_pm.api.dashboard._failures import (
    BULK_LIMIT,
    SINCE_CHOICES,
    failure_card,
    replay_notice,
    since_filter,
)
from agent_pm.api.dashboard._guard import audited, checked
from agent_pm.api.dashboard._pages import html, plugin_page
from agent_pm.errors import AgentPMError, ReplayRateError
from agent_pm.plugins.replay import replay_effect

__all__ = ["replay_all", "replay_one"]


def _recorded_plugin(request: Request) -> str:
    name: str = request.path_params["name"]
    if name not in request.app.state.registry.names():
        raise HTTPException(404, f"no plugin named {name!r}")
    return name


async def replay_one(request: Request) -> Response:
    """``POST /dashboard/plugins/{name}/failures/{id}/replay``."""
    session, _ = await checked(request)
    registry = request.app.state.registry
    name, failure_id = _recorded_plugin(request), natural(request.path_params["id"])
    if failure_id is None:
        raise HTTPException(404, "no such failure")
    replay = registry.replays.replay(name, failure_id)
    return await _replayed(request, session, name, "replay", replay)


async def replay_all(request: Request) -> Response:
    """``POST /dashboard/plugins/{name}/failures/replay`` with ``since`` from the form."""
    session, form = await checked(request)
    registry = request.app.state.registry
    name = _recorded_plugin(request)
    if form.get("since", "") not in {value for value, _ in SINCE_CHOICES}:
        raise HTTPException(400, "choose a time from the list")
    where = since_filter(name, form.get("since", ""))
    replay = registry.replays.replay_matching(where, limit=BULK_LIMIT)
    return await _replayed(request, session, name, "replay_all", replay)


async def _replayed(
    request: Request, session: Session, name: str, action: str, replay: Any
) -> Response:
    """Run ``replay`` (audited as ``action``) and answer with the plugin's failures card (htmx)
    or its page."""
    registry = request.app.state.registry
    notice = error = None
    status = 200
    try:
        admin = audited(request, session)
        notice = replay_notice(await admin.run(action, name, lambda: replay, effect=replay_effect))
    except AgentPMError as exc:
        error, status = str(exc), 429 if isinstance(exc, ReplayRateError) else 409
    if request.headers.get("hx-request"):
        card = await failure_card(registry, session, name, notice=notice, error=error)
        return html(card, status)
    response = await plugin_page(request)
    response.status_code = status
    return response
