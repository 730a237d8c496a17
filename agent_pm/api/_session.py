"""The dashboard's signed session cookie, its revocation and the CSRF check.

The cookie holds ``role.expiry.csrf.fingerprint.actor`` and an HMAC-SHA256 signature, all
base64url. The signing key is derived from the server secret (``Settings.session_secret`` or a
random per-process one) *and* the environment's API keys, so rotating one ends every session
issued under the old ones; a session opened with a named key ends when that key is revoked,
rotated or given another role (its fingerprint no longer matches). Logging out revokes the
session on the server, not just in the browser (in a cluster, on every node:
:mod:`agent_pm.api._shared_guards`). The stdlib ``hmac`` module does all of it; a
dependency would add nothing here.

Which key grants which role is :mod:`agent_pm.api._security`'s business; ``caller_from_session``
is the credential reader the API's auth middleware calls next to its ``X-API-Key`` reader.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from http.cookies import SimpleCookie
from typing import Any

from starlette.responses import Response

from agent_pm.api._security import ApiKeys, Caller, Role

__all__ = [
    "COOKIE_NAME",
    "Session",
    "SessionManager",
    "caller_from_session",
    "csrf_ok",
    "session_from_scope",
    "sessions_for",
]

COOKIE_NAME = "agent_pm_session"
DEFAULT_LIFETIME = 12 * 3600
ROLES = ("read", "admin")
# Revoked sessions are remembered until they would have expired. Past this many, every session
# ends instead (the signing key changes): memory stays bounded and no revocation is forgotten.
MAX_REVOKED = 10_000


@dataclass(frozen=True)
class Session:
    """A verified session: the role it grants, when it ends, its CSRF token and its actor."""

    role: Role
    expires: int
    csrf: str
    actor: str = ""

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    @property
    def caller(self) -> Caller:
        return Caller(self.actor, self.role)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class SessionManager:
    """Issues, verifies and revokes session cookies for one set of API keys."""

    def __init__(
        self,
        keys: ApiKeys,
        secret: str | bytes | None = None,
        *,
        lifetime: int = DEFAULT_LIFETIME,
        clock: Any = time.time,
    ) -> None:
        self.keys = keys
        self.configured = bool(secret)
        raw = secret.encode() if isinstance(secret, str) else secret
        self.rekey(raw or secrets.token_bytes(32))
        self.lifetime = lifetime
        self._clock = clock
        self._revoked: dict[str, int] = {}
        # Told of every revocation made here (a cluster tells its other nodes).
        self.revoked: Callable[[str, int], None] | None = None

    def rekey(self, secret: bytes) -> None:
        """Sign with ``secret`` from now on: sessions signed with the previous one end."""
        self._material = secret + b"\0" + self.keys.secret_material
        self._signing_key = self._derive(b"")

    def _derive(self, salt: bytes) -> bytes:
        return hashlib.sha256(b"agent-pm-session\0" + salt + self._material).digest()

    def issue(self, caller: Caller) -> tuple[str, Session]:
        """A new session for ``caller`` and its cookie value."""
        if caller.role not in ROLES:
            raise ValueError(f"unknown role {caller.role!r}")
        fingerprint = self.keys.fingerprint_of(caller) or ""
        expires = int(self._clock()) + self.lifetime
        session = Session(caller.role, expires, secrets.token_urlsafe(24), caller.name)
        body = ".".join([session.role, str(expires), session.csrf, fingerprint, caller.name])
        return f"{_b64(body.encode())}.{self._sign(body)}", session

    def load(self, cookie: str | None) -> Session | None:
        """The session in ``cookie`` if its signature holds, it has not expired or been
        revoked, and the key it was opened with is still valid."""
        if not cookie or cookie.count(".") != 1:
            return None
        encoded, signature = cookie.split(".")
        try:
            body = _unb64(encoded).decode()
        except (ValueError, UnicodeDecodeError):
            return None
        if not hmac.compare_digest(self._sign(body), signature):
            return None
        parts = body.split(".", 4)
        if len(parts) != 5:
            return None
        role, expires, csrf, fingerprint, actor = parts
        if role not in ROLES or not expires.isdigit() or int(expires) <= self._clock():
            return None
        session = Session(role, int(expires), csrf, actor)  # type: ignore[arg-type]
        if csrf in self._revoked or self.keys.fingerprint_of(session.caller) != fingerprint:
            return None
        return session

    def revoke(self, session: Session) -> None:
        """End ``session`` for good, whoever still holds its cookie."""
        self.forget(session.csrf, session.expires)
        if self.revoked is not None:
            self.revoked(session.csrf, session.expires)

    def forget(self, csrf: str, expires: int) -> None:
        """End the session whose CSRF token is ``csrf`` (revoked here or on another node)."""
        if expires <= self._clock():
            return  # over anyway
        if len(self._revoked) >= MAX_REVOKED:
            now = self._clock()
            self._revoked = {c: t for c, t in self._revoked.items() if t > now}
        if len(self._revoked) >= MAX_REVOKED:
            self._signing_key = self._derive(secrets.token_bytes(16))
            self._revoked.clear()
            return
        self._revoked[csrf] = expires

    def revocations(self) -> dict[str, int]:
        """The sessions revoked and not yet expired: CSRF token → expiry."""
        now = self._clock()
        return {csrf: expires for csrf, expires in self._revoked.items() if expires > now}

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
        keys = getattr(state, "api_keys", None) or ApiKeys.from_settings(settings)
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


def caller_from_session(scope: Mapping[str, Any]) -> Caller | None:
    """Who the session of ``scope`` belongs to, or ``None`` without a valid session."""
    session = session_from_scope(scope)
    return session.caller if session else None


def csrf_ok(session: Session | None, token: str | None) -> bool:
    """Whether ``token`` is the CSRF token of ``session``."""
    if session is None or not token:
        return False
    return hmac.compare_digest(session.csrf.encode(), token.encode())
