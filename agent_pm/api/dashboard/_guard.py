"""Who may change what from the console: session, CSRF token, same origin, admin role.

Every view authorizes itself from the session cookie, so the console is safe whether or not the
auth middleware in front of it lets the route through. Admin operations run through
:class:`~agent_pm.audited.AuditedAdmin` as the session's actor, so each is in the audit log.
"""

from __future__ import annotations

from urllib.parse import parse_qs

from starlette.exceptions import HTTPException
from starlette.requests import Request

from agent_pm.api._reading import read_body
from agent_pm.api._security import same_origin
from agent_pm.api._session import Session, csrf_ok, session_from_scope
from agent_pm.audit import Actor
from agent_pm.audited import AuditedAdmin

__all__ = ["MAX_FORM_BYTES", "audited", "checked", "read_form"]

MAX_FORM_BYTES = 256 * 1024


async def read_form(request: Request) -> dict[str, str]:
    """The URL-encoded form body (parsed here, so the console needs no multipart dependency)."""
    body = await read_body(request, MAX_FORM_BYTES)
    fields = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
    return {key: values[-1] for key, values in fields.items()}


async def checked(request: Request, *, admin: bool = True) -> tuple[Session, dict[str, str]]:
    """The session and form of a state-changing request; 403 unless it may change state."""
    session = session_from_scope(request.scope)
    if session is None:
        raise HTTPException(403, "log in first")
    if not same_origin(request):
        raise HTTPException(403, "cross-origin request refused")
    form = await read_form(request)
    token = request.headers.get("x-csrf-token") or form.get("csrf_token")
    if not csrf_ok(session, token):
        raise HTTPException(403, "missing or wrong CSRF token")
    if admin and not session.is_admin:
        raise HTTPException(403, "admin role required")
    return session, form


def audited(request: Request, session: Session) -> AuditedAdmin:
    """The registry's admin operations, audited as the session's actor from the console."""
    actor = Actor(session.actor, session.role, "dashboard")
    return AuditedAdmin(request.app.state.registry, request.app.state.audit, actor)
