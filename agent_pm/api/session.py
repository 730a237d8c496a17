"""The dashboard's signed session cookie, the key-to-role rules and the CSRF check.

The cookie holds ``role.expiry.csrf`` and an HMAC-SHA256 signature, all base64url. The signing key
is derived from the server secret (``Settings.session_secret`` or a random per-process one) *and*
the configured API keys, so rotating a key ends every session issued under the old ones. The
stdlib ``hmac`` module does all of it; a dependency would add nothing here.

``role_from_session(scope)`` is the credential reader the API's auth middleware calls next to its
``X-API-Key`` reader.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from http.cookies import SimpleCookie
from typing import Any

from starlette.responses import Response

from agent_pm.settings import Settings

__all__ = [
    "COOKIE_NAME",
    "Session",
    "SessionManager",
    "csrf_ok",
    "key_roles",
    "role_from_session",
    "session_from_scope",
    "sessions_for",
]

COOKIE_NAME = "agent_pm_session"
DEFAULT_LIFETIME = 12 * 3600
ROLES = ("read", "admin")


@dataclass(frozen=True)
class Session:
    """A verified session: the role it grants, when it ends, and its CSRF token."""

    role: str
    expires: int
    csrf: str

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


def key_roles(settings: Settings) -> dict[str, str]:
    """API key -> role: ``ADMIN_API_KEY`` is admin; ``API_KEY`` is read, or admin when alone."""
    roles: dict[str, str] = {}
    if settings.api_key:
        roles[settings.api_key] = "read" if settings.admin_api_key else "admin"
    if settings.admin_api_key:
        roles[settings.admin_api_key] = "admin"
    return roles


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class SessionManager:
    """Issues and verifies session cookies for one set of API keys."""

    def __init__(
        self,
        keys: Mapping[str, str],
        secret: str | bytes | None = None,
        *,
        lifetime: int = DEFAULT_LIFETIME,
        clock: Any = time.time,
    ) -> None:
        raw = secret.encode() if isinstance(secret, str) else secret or secrets.token_bytes(32)
        material = b"\0".join(
            [raw, *(k.encode() + b"=" + r.encode() for k, r in sorted(keys.items()))]
        )
        self._signing_key = hashlib.sha256(b"agent-pm-session\0" + material).digest()
        self._keys = dict(keys)
        self.lifetime = lifetime
        self._clock = clock

    def role_for_key(self, key: str) -> str | None:
        """The role ``key`` grants, compared in constant time against every configured key."""
        found = None
        for candidate, role in self._keys.items():
            if hmac.compare_digest(candidate.encode(), key.encode()):
                found = role
        return found

    def issue(self, role: str) -> tuple[str, Session]:
        """A new session for ``role`` and its cookie value."""
        if role not in ROLES:
            raise ValueError(f"unknown role {role!r}")
        session = Session(role, int(self._clock()) + self.lifetime, secrets.token_urlsafe(24))
        body = ".".join([session.role, str(session.expires), session.csrf])
        return f"{_b64(body.encode())}.{self._sign(body)}", session

    def load(self, cookie: str | None) -> Session | None:
        """The session in ``cookie`` if its signature holds and it has not expired."""
        if not cookie or cookie.count(".") != 1:
            return None
        encoded, signature = cookie.split(".")
        try:
            body = _unb64(encoded).decode()
        except (ValueError, UnicodeDecodeError):
            return None
        if not hmac.compare_digest(self._sign(body), signature):
            return None
        parts = body.split(".")
        if len(parts) != 3:
            return None
        role, expires, csrf = parts
        if role not in ROLES or not expires.isdigit() or int(expires) <= self._clock():
            return None
        return Session(role, int(expires), csrf)

    def _sign(self, body: str) -> str:
        return _b64(hmac.new(self._signing_key, body.encode(), hashlib.sha256).digest())

    def set_cookie(self, response: Response, value: str, *, secure: bool) -> None:
        response.set_cookie(
            COOKIE_NAME,
            value,
            max_age=self.lifetime,
            path="/",
            secure=secure,
            httponly=True,
            samesite="strict",
        )

    @staticmethod
    def clear_cookie(response: Response, *, secure: bool) -> None:
        response.delete_cookie(
            COOKIE_NAME, path="/", secure=secure, httponly=True, samesite="strict"
        )


def sessions_for(app: Any) -> SessionManager:
    """The app's session manager, built once from its settings (or its registry's)."""
    state = app.state
    manager = getattr(state, "session_manager", None)
    if manager is None:
        settings = getattr(state, "settings", None)
        if settings is None:
            settings = state.registry.settings
        keys = getattr(state, "api_keys", None) or key_roles(settings)
        manager = state.session_manager = SessionManager(keys, settings.session_secret)
    return manager


def _cookie(scope: Mapping[str, Any]) -> str | None:
    for name, value in scope.get("headers", ()):
        if name == b"cookie":
            jar: SimpleCookie = SimpleCookie()
            try:
                jar.load(value.decode("latin-1"))
            except Exception:  # a malformed Cookie header means no session, not an error
                return None
            morsel = jar.get(COOKIE_NAME)
            if morsel is not None:
                return morsel.value
    return None


def session_from_scope(scope: Mapping[str, Any]) -> Session | None:
    """The verified session carried by an HTTP or WebSocket scope's cookie, if any."""
    app = scope.get("app")
    if app is None:
        return None
    cookie = _cookie(scope)
    return sessions_for(app).load(cookie) if cookie else None


def role_from_session(scope: Mapping[str, Any]) -> str | None:
    """Credential reader for the auth middleware: the session's role, or ``None``."""
    session = session_from_scope(scope)
    return session.role if session else None


def csrf_ok(session: Session | None, token: str | None) -> bool:
    """Whether ``token`` is the CSRF token of ``session``."""
    if session is None or not token:
        return False
    return hmac.compare_digest(session.csrf.encode(), token.encode())
