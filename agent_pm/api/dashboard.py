"""The operator dashboard: login/logout, the page, admin actions and the live channel route.

Every view authorizes itself from the session cookie, so the dashboard is safe whether or not
the auth middleware in front of it lets the route through. State-changing requests need a
session, a matching CSRF token and a same-origin ``Origin`` (when the browser sends one); admin
actions also need the admin role. Admin actions answer htmx with the plugin's refreshed admin
card and plain form posts with the whole page.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qs

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles

from agent_pm.api import dashboard_failures as failures_ui
from agent_pm.api import dashboard_render as ui
from agent_pm.api.dashboard_live import live
from agent_pm.api.reading import natural
from agent_pm.api.security import client_address, same_origin
from agent_pm.api.session import Session, csrf_ok, session_from_scope, sessions_for
from agent_pm.audit import Actor
from agent_pm.audited import AuditedAdmin
from agent_pm.errors import (
    AgentPMError,
    ConfigValidationError,
    PluginNotFoundError,
    ReplayRateError,
)
from agent_pm.plugins.replay import replay_effect

__all__ = ["routes"]

MAX_FORM_BYTES = 256 * 1024


def routes() -> list[BaseRoute]:
    """Every dashboard route; mount them at the application root."""
    return [
        Route("/login", login_page, methods=["GET"]),
        Route("/login", login, methods=["POST"]),
        Route("/logout", logout, methods=["POST"]),
        Route("/dashboard", dashboard, methods=["GET"]),
        Route("/dashboard/plugins/{name}/enabled", set_enabled, methods=["POST"]),
        Route("/dashboard/plugins/{name}/reload", reload_plugin, methods=["POST"]),
        Route("/dashboard/plugins/{name}/config", update_config, methods=["POST"]),
        Route("/dashboard/plugins/{name}/remove", remove, methods=["POST"]),
        Route("/dashboard/install", install, methods=["POST"]),
        Route("/dashboard/plugins/{name}/failures/replay", replay_all, methods=["POST"]),
        Route("/dashboard/plugins/{name}/failures/{id}/replay", replay_one, methods=["POST"]),
        WebSocketRoute("/dashboard/live", live),
        Mount("/static", StaticFiles(directory=ui.STATIC_DIR), name="static"),
    ]


async def _form(request: Request) -> dict[str, str]:
    # URL-encoded forms only: parsed here so the dashboard needs no multipart dependency.
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise HTTPException(413, "form too large")
    fields = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
    return {key: values[-1] for key, values in fields.items()}


def _secure(request: Request) -> bool:
    return request.url.scheme == "https"


def _html(text: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(text, status, headers={"Cache-Control": "no-store"})


# -- login ---------------------------------------------------------------------------------


async def login_page(request: Request) -> Response:
    if session_from_scope(request.scope) is not None:
        return RedirectResponse("/dashboard", 303)
    return _html(ui.render("login.html", error=None))


async def login(request: Request) -> Response:
    if not same_origin(request):
        raise HTTPException(403, "cross-origin login refused")
    throttle, address = request.app.state.throttle, client_address(request.scope)
    wait = throttle.retry_after(address)
    if wait is not None:
        error = f"Too many wrong keys from your address; try again in {wait} s."
        page = _html(ui.render("login.html", error=error), 429)
        page.headers["Retry-After"] = str(wait)
        return page
    form = await _form(request)
    manager = sessions_for(request.app)
    caller = manager.keys.caller_for(form.get("api_key", "").strip())
    if caller is None:
        throttle.failed(address)
        return _html(ui.render("login.html", error="That key is not valid."), 401)
    value, _ = manager.issue(caller)
    response = RedirectResponse("/dashboard", 303)
    manager.set_cookie(response, value, secure=_secure(request))
    return response


async def logout(request: Request) -> Response:
    session, _ = await _checked(request, admin=False)
    sessions_for(request.app).revoke(session)
    response = RedirectResponse("/login", 303)
    sessions_for(request.app).clear_cookie(response, secure=_secure(request))
    return response


# -- the page ------------------------------------------------------------------------------


async def dashboard(request: Request) -> Response:
    session = session_from_scope(request.scope)
    if session is None:
        return RedirectResponse("/login", 303)
    registry = request.app.state.registry
    return _html(await ui.page(registry, session, request.query_params.get("pair")))


# -- admin actions -------------------------------------------------------------------------


async def _checked(request: Request, *, admin: bool = True) -> tuple[Session, dict[str, str]]:
    """The session and form of a state-changing request; 403 unless it may change state."""
    session = session_from_scope(request.scope)
    if session is None:
        raise HTTPException(403, "log in first")
    if not same_origin(request):
        raise HTTPException(403, "cross-origin request refused")
    form = await _form(request)
    token = request.headers.get("x-csrf-token") or form.get("csrf_token")
    if not csrf_ok(session, token):
        raise HTTPException(403, "missing or wrong CSRF token")
    if admin and not session.is_admin:
        raise HTTPException(403, "admin role required")
    return session, form


Action = Callable[[Any, str, dict[str, str]], Awaitable[ui.Card]]


def _admin(request: Request, session: Session) -> AuditedAdmin:
    """The registry's admin operations, audited as the session's actor."""
    actor = Actor(session.actor, session.role, "dashboard")
    return AuditedAdmin(request.app.state.registry, request.app.state.audit, actor)


async def _act(request: Request, action: Action) -> Response:
    session, form = await _checked(request)
    name = request.path_params["name"]
    try:
        card = await action(_admin(request, session), name, form)
    except PluginNotFoundError as exc:
        card = ui.Card(error=str(exc), status=404)
    except AgentPMError as exc:
        card = ui.Card(error=str(exc), status=409)
    return await _answer(request, session, name, card)


async def _answer(request: Request, session: Session, name: str, card: ui.Card) -> Response:
    registry = request.app.state.registry
    if request.headers.get("hx-request"):
        try:
            meta = registry.metadata_for(name, history=False)
        except PluginNotFoundError:
            return _html(ui.render("partials/removed_card.html", name=name, card=card), card.status)
        return _html(ui.admin_card(meta, session, card), card.status)
    state = ui.PageState(cards={name: card})
    return _html(await ui.page(registry, session, None, state), card.status)


async def _set_enabled(registry: Any, name: str, form: dict[str, str]) -> ui.Card:
    enabled = form.get("enabled") == "true"
    await registry.set_enabled(name, enabled)
    return ui.Card(notice="Enabled." if enabled else "Disabled.")


async def _reload(registry: Any, name: str, form: dict[str, str]) -> ui.Card:
    await registry.reload_plugin(name)
    return ui.Card(notice="Reloaded.")


async def _update_config(registry: Any, name: str, form: dict[str, str]) -> ui.Card:
    text = form.get("config", "")
    try:
        config = json.loads(text)
    except ValueError as exc:
        return _config_error(text, "$", f"not valid JSON: {exc}")
    if not isinstance(config, dict):
        return _config_error(text, "$", "the config must be a JSON object")
    try:
        await registry.update_config(name, config)
    except ConfigValidationError as exc:
        return _config_error(text, exc.path, exc.detail)
    return ui.Card(notice="Config saved.")


def _config_error(text: str, path: str, detail: str) -> ui.Card:
    field = path.removeprefix("$").removeprefix(".").split(".")[0].split("[")[0]
    error = {"path": path, "field": field, "detail": detail}
    return ui.Card(config_text=text, config_error=error, status=422)


async def _remove(registry: Any, name: str, form: dict[str, str]) -> ui.Card:
    if form.get("confirm") != name:
        return ui.Card(error=f"Type {name} to confirm the removal.", status=422)
    await registry.remove(name)
    return ui.Card(notice=f"Removed {name}.")


async def set_enabled(request: Request) -> Response:
    return await _act(request, _set_enabled)


async def reload_plugin(request: Request) -> Response:
    return await _act(request, _reload)


async def update_config(request: Request) -> Response:
    return await _act(request, _update_config)


async def remove(request: Request) -> Response:
    return await _act(request, _remove)


def _recorded_plugin(request: Request) -> str:
    name: str = request.path_params["name"]
    if name not in request.app.state.registry.names():
        raise HTTPException(404, f"no plugin named {name!r}")
    return name


async def replay_one(request: Request) -> Response:
    session, _ = await _checked(request)
    registry = request.app.state.registry
    name, failure_id = _recorded_plugin(request), natural(request.path_params["id"])
    if failure_id is None:
        raise HTTPException(404, "no such failure")
    replay = registry.replays.replay(name, failure_id)
    return await _replayed(request, session, name, "replay", replay)


async def replay_all(request: Request) -> Response:
    session, form = await _checked(request)
    registry = request.app.state.registry
    name = _recorded_plugin(request)
    if form.get("since", "") not in {value for value, _ in failures_ui.SINCE_CHOICES}:
        raise HTTPException(400, "choose a time from the list")
    where = failures_ui.since_filter(name, form.get("since", ""))
    replay = registry.replays.replay_matching(where, limit=failures_ui.BULK_LIMIT)
    return await _replayed(request, session, name, "replay_all", replay)


async def _replayed(
    request: Request, session: Session, name: str, action: str, replay: Any
) -> Response:
    """Run ``replay`` (audited as ``action``) and answer with the plugin's failures card (htmx)
    or the whole page."""
    registry = request.app.state.registry
    notice = error = None
    status = 200
    try:
        admin = _admin(request, session)
        outcome = await admin.run(action, name, lambda: replay, effect=replay_effect)
        notice = failures_ui.replay_notice(outcome)
    except AgentPMError as exc:
        error, status = str(exc), 429 if isinstance(exc, ReplayRateError) else 409
    if request.headers.get("hx-request"):
        card = await failures_ui.failure_card(registry, session, name, notice=notice, error=error)
        return _html(card, status)
    return _html(await ui.page(registry, session, None), status)


async def install(request: Request) -> Response:
    session, form = await _checked(request)
    registry = request.app.state.registry
    admin = _admin(request, session)
    entry_point = form.get("entry_point", "").strip()
    module = form.get("module", "").strip()
    name = form.get("name") or None
    state = ui.PageState()
    status = 200
    try:
        if entry_point:
            meta = await admin.install_entry_point(entry_point, name=name)
        elif module:
            meta = await admin.install(module, name=name)
        else:
            raise AgentPMError("choose an entry point or give a module path")
        state.install_notice = f"Installed {meta['name']} (disabled until you enable it)."
    except AgentPMError as exc:
        state.install_error, status = str(exc), 409
    metas = registry.list_metadata(history=False)
    if request.headers.get("hx-request"):
        return _html(await ui.admin_list(registry, metas, session, state, oob=False), status)
    return _html(await ui.page(registry, session, None, state), status)
