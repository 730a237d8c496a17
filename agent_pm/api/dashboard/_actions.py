"""Admin actions from the console: every form carries the revision it was opened at.

A form also carries its plugin's editable state as it was shown (``base``). When the revision is
stale the action goes through only if that plugin itself did not change (another plugin's change
must not block an operator); otherwise the answer is 412 with the card showing what changed,
the operator's edit kept, and a way to load the current values. htmx requests get the card back;
plain form posts get the admin page.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import quote

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from agent_pm.api._session import session_from_scope
from agent_pm.api.dashboard import _regions as regions
from agent_pm.api.dashboard._guard import audited, checked
from agent_pm.api.dashboard._pages import admin_document, html, install_section
from agent_pm.api.dashboard._regions import AdminCard, Change, Conflict, Notice
from agent_pm.api.dashboard._render import render
from agent_pm.api.dashboard._schema_form import (
    FIELD_PREFIX,
    FormError,
    config_fields,
    json_error,
    read_form,
)
from agent_pm.api.dashboard._view import plain
from agent_pm.audited import AuditedAdmin, diff
from agent_pm.errors import (
    AgentPMError,
    ConfigValidationError,
    PluginNotFoundError,
    RevisionConflictError,
)

__all__ = [
    "admin_card",
    "install",
    "reload_plugin",
    "remove",
    "reset_quarantine",
    "set_enabled",
    "update_config",
]

Action = Callable[[AuditedAdmin, dict[str, Any], dict[str, str], int], Awaitable[AdminCard]]


def _revision(form: dict[str, str]) -> int:
    try:
        return int(form["revision"])
    except (KeyError, ValueError):
        raise HTTPException(400, "the form must carry the revision it was opened at") from None


def changes(before: dict[str, Any], after: dict[str, Any]) -> list[Change]:
    """Setting by setting, what differs between two editable states (as the audit log sees it)."""
    old, new = diff(before, after)
    return [
        Change(path, _shown(old, path), _shown(new, path))
        for path in sorted(old.keys() | new.keys())
    ]


def _shown(values: dict[str, Any], path: str) -> str:
    return json.dumps(values[path]) if path in values else "(unset)"


def _conflict(form: dict[str, str], meta: dict[str, Any], seen: int, current: int) -> Conflict:
    try:
        base = json.loads(form.get("base", "{}"))
    except ValueError:
        base = {}
    before = base if isinstance(base, dict) else {}
    return Conflict(seen, current, changes(before, regions.editable_state(meta)))


def _kept_edits(form: dict[str, str]) -> AdminCard:
    fields = {
        key.removeprefix(FIELD_PREFIX): value
        for key, value in form.items()
        if key.startswith(FIELD_PREFIX)
    }
    return AdminCard(config_text=form.get("config"), field_texts=fields, status=412)


async def _act(request: Request, action: Action) -> Response:
    session, form = await checked(request)
    name = request.path_params["name"]
    registry = request.app.state.registry
    seen = _revision(form)
    meta = regions.meta_of(registry, name)
    if meta is None:
        card = AdminCard(error=f"no plugin named {name!r}", status=404)
        return await _answer(request, name, card)
    current = registry.revision
    unchanged = form.get("base") == regions.base_of(meta)
    if seen != current and not unchanged:
        card = _kept_edits(form)
        card.conflict = _conflict(form, meta, seen, current)
        return await _answer(request, name, card)
    try:
        card = await action(audited(request, session), meta, form, current)
    except RevisionConflictError as exc:
        fresh = regions.meta_of(registry, name) or meta
        card = _kept_edits(form)
        card.conflict = _conflict(form, fresh, seen, exc.current)
    except PluginNotFoundError as exc:
        card = AdminCard(error=str(exc), status=404)
    except AgentPMError as exc:
        card = AdminCard(error=str(exc), notice=Notice(str(exc), "error"), status=409)
    return await _answer(request, name, card)


async def _answer(request: Request, name: str, card: AdminCard) -> Response:
    session = session_from_scope(request.scope)
    assert session is not None
    registry = request.app.state.registry
    if not request.headers.get("hx-request"):
        # Without JavaScript the browser followed a plain form post: show the page again.
        return html(await admin_document(registry, session, {name: card}), card.status)
    meta = regions.meta_of(registry, name)
    if meta is None:
        return html(render("partials/removed_card.html", name=name, card=card), card.status)
    return html(regions.admin_card(meta, session, registry.revision, card), card.status)


async def _set_enabled(
    admin: AuditedAdmin, meta: dict[str, Any], form: dict[str, str], revision: int
) -> AdminCard:
    enabled = form.get("enabled") == "true"
    await admin.set_enabled(meta["name"], enabled, revision=revision)
    return AdminCard(notice=Notice(f"{'Enabled' if enabled else 'Disabled'} {meta['name']}."))


async def _reload(
    admin: AuditedAdmin, meta: dict[str, Any], form: dict[str, str], revision: int
) -> AdminCard:
    await admin.reload_plugin(meta["name"], revision=revision)
    return AdminCard(notice=Notice(f"Reloaded {meta['name']}."))


def _config_from(meta: dict[str, Any], form: dict[str, str]) -> dict[str, Any]:
    """The config a form describes; ``FormError`` names the field that cannot be read."""
    if form.get("editor") == "fields":
        fields = config_fields(meta.get("config_schema"))
        return read_form(fields, form, meta.get("config") or {})
    text = form.get("config", "")
    try:
        config = json.loads(text)
    except json.JSONDecodeError as exc:
        raise FormError("", f"not valid JSON: {json_error(text, exc)}") from None
    if not isinstance(config, dict):
        raise FormError("", "the config must be a JSON object")
    return config


async def _update_config(
    admin: AuditedAdmin, meta: dict[str, Any], form: dict[str, str], revision: int
) -> AdminCard:
    kept = _kept_edits(form)
    try:
        config = _config_from(meta, form)
        await admin.update_config(meta["name"], config, revision=revision)
    except FormError as exc:
        kept.config_error, kept.status = {"field": exc.field, "detail": exc.detail}, 422
        return kept
    except ConfigValidationError as exc:
        field = exc.path.removeprefix("$").removeprefix(".").split(".")[0].split("[")[0]
        kept.config_error = {"field": field, "detail": exc.detail}
        kept.status = 422
        return kept
    return AdminCard(notice=Notice(f"Saved the config of {meta['name']}."))


async def _remove(
    admin: AuditedAdmin, meta: dict[str, Any], form: dict[str, str], revision: int
) -> AdminCard:
    name = meta["name"]
    if form.get("confirm") != name:
        return AdminCard(error=f"Type {name} to confirm the removal.", status=422)
    await admin.remove(name, revision=revision)
    return AdminCard(notice=Notice(f"Removed {name}."))


async def set_enabled(request: Request) -> Response:
    return await _act(request, _set_enabled)


async def reload_plugin(request: Request) -> Response:
    return await _act(request, _reload)


async def update_config(request: Request) -> Response:
    return await _act(request, _update_config)


async def remove(request: Request) -> Response:
    return await _act(request, _remove)


async def admin_card(request: Request) -> Response:
    """``GET /dashboard/admin/cards/{name}``: one card with the current values."""
    session = session_from_scope(request.scope)
    if session is None:
        return RedirectResponse("/login", 303)
    if not session.is_admin:
        raise HTTPException(403, "admin role required")
    return await _answer(request, request.path_params["name"], AdminCard())


async def install(request: Request) -> Response:
    """Install by entry point or module path; installing depends on no plugin's state, so a
    stale revision is not a conflict here (a name already taken is)."""
    session, form = await checked(request)
    _revision(form)
    registry = request.app.state.registry
    entry_point = form.get("entry_point", "").strip()
    module = form.get("module", "").strip()
    name = form.get("name") or None
    state, status = AdminCard(), 200
    try:
        if entry_point:
            meta = await audited(request, session).install_entry_point(entry_point, name=name)
        elif module:
            meta = await audited(request, session).install(module, name=name)
        else:
            raise AgentPMError("choose an entry point or give a module path")
        installed = plain(meta)["name"]
        state.notice = Notice(f"Installed {installed} (disabled until you enable it).")
    except AgentPMError as exc:
        state.error, status = str(exc), 409
    if not request.headers.get("hx-request"):
        return html(await admin_document(registry, session, install=state), status)
    return html(await install_section(registry, session, state), status)


async def reset_quarantine(request: Request) -> Response:
    """``POST /dashboard/plugins/{name}/quarantine/reset``: close the breaker of the form's
    ``hook``, or of every hook without one, audited as the session's actor. htmx gets the
    quarantine panel with a notice; a plain form post goes back to the plugin page (303)."""
    session, form = await checked(request)
    name = request.path_params["name"]
    hook = form.get("hook") or None
    registry = request.app.state.registry
    htmx = bool(request.headers.get("hx-request"))
    card = AdminCard()
    try:
        await audited(request, session).reset_quarantine(name, hook)
        what = f"hook {hook}" if hook else "every hook"
        card.notice = Notice(f"Quarantine of {name}, {what}, reset.")
    except PluginNotFoundError as exc:
        if not htmx or regions.meta_of(registry, name) is None:
            raise HTTPException(404, str(exc)) from None
        card = AdminCard(error=str(exc), notice=Notice(str(exc), "error"), status=404)
    if not htmx:
        return RedirectResponse(f"/dashboard/plugins/{quote(name, safe='')}#quarantine", 303)
    meta = regions.meta_of(registry, name)
    assert meta is not None
    panel = regions.quarantine_panel(meta, admin=True, csrf=session.csrf, card=card)
    return html(panel, card.status)
