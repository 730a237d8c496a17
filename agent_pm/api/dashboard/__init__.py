"""The operator console: server-rendered pages, safe admin forms and a live channel.

Pages: ``/dashboard`` (overview, worst health first), ``/dashboard/plugins/{name}`` (one
plugin: hooks, rates and latency, quarantine, error groups, history, recorded failures,
runtime, config), ``/dashboard/admin`` and ``/dashboard/activity`` (the audit log, live). Each
page's state (window, filters, sort, hook, status) lives in its URL.
``/dashboard/live`` pushes only what changed. State-changing requests need a session, a
matching CSRF token and a same-origin ``Origin``; admin actions also need the admin role and
carry the revision they were opened at.
"""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route, WebSocketRoute

from agent_pm.api._security import client_address, same_origin
from agent_pm.api._session import session_from_scope, sessions_for
from agent_pm.api.dashboard import _actions as actions
from agent_pm.api.dashboard import _replays as replays
from agent_pm.api.dashboard._guard import checked, read_form
from agent_pm.api.dashboard._live import live
from agent_pm.api.dashboard._pages import (
    activity_page,
    admin_page,
    html,
    overview_page,
    plugin_page,
)
from agent_pm.api.dashboard._render import ASSETS, render

__all__ = ["routes"]


def routes() -> list[BaseRoute]:
    """Every console route; mount them at the application root."""
    return [
        Route("/login", login_page, methods=["GET"]),
        Route("/login", login, methods=["POST"]),
        Route("/logout", logout, methods=["POST"]),
        Route("/dashboard", overview_page, methods=["GET"]),
        Route("/dashboard/admin", admin_page, methods=["GET"]),
        Route("/dashboard/activity", activity_page, methods=["GET"]),
        Route("/dashboard/admin/cards/{name}", actions.admin_card, methods=["GET"]),
        Route("/dashboard/plugins/{name}", plugin_page, methods=["GET"]),
        Route("/dashboard/plugins/{name}/enabled", actions.set_enabled, methods=["POST"]),
        Route("/dashboard/plugins/{name}/reload", actions.reload_plugin, methods=["POST"]),
        Route("/dashboard/plugins/{name}/config", actions.update_config, methods=["POST"]),
        Route("/dashboard/plugins/{name}/remove", actions.remove, methods=["POST"]),
        Route(
            "/dashboard/plugins/{name}/quarantine/reset",
            actions.reset_quarantine,
            methods=["POST"],
        ),
        Route("/dashboard/install", actions.install, methods=["POST"]),
        Route("/dashboard/plugins/{name}/failures/replay", replays.replay_all, methods=["POST"]),
        Route(
            "/dashboard/plugins/{name}/failures/{id}/replay", replays.replay_one, methods=["POST"]
        ),
        WebSocketRoute("/dashboard/live", live),
        ASSETS.route(),
    ]


def _secure(request: Request) -> bool:
    return request.url.scheme == "https"


async def login_page(request: Request) -> Response:
    if session_from_scope(request.scope) is not None:
        return RedirectResponse("/dashboard", 303)
    return html(render("login.html", error=None))


async def login(request: Request) -> Response:
    if not same_origin(request):
        raise HTTPException(403, "cross-origin login refused")
    throttle, address = request.app.state.throttle, client_address(request.scope)
    wait = throttle.retry_after(address)
    if wait is not None:
        error = f"Too many wrong keys from your address; try again in {wait} s."
        page = html(render("login.html", error=error), 429)
        page.headers["Retry-After"] = str(wait)
        return page
    form = await read_form(request)
    manager = sessions_for(request.app)
    caller = manager.keys.caller_for(form.get("api_key", "").strip())
    if caller is None:
        throttle.failed(address)
        return html(render("login.html", error="That key is not valid."), 401)
    value, _ = manager.issue(caller)
    response = RedirectResponse("/dashboard", 303)
    manager.set_cookie(response, value, secure=_secure(request))
    return response


async def logout(request: Request) -> Response:
    session, _ = await checked(request, admin=False)
    sessions_for(request.app).revoke(session)
    response = RedirectResponse("/login", 303)
    sessions_for(request.app).clear_cookie(response, secure=_secure(request))
    return response
