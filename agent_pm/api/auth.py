"""Authentication: API keys, credential readers and the deny-by-default ASGI middleware.

Every HTTP request and WebSocket handshake passes :class:`AuthMiddleware`. It asks its credential
readers, in order, who the caller is; the first reader that recognises a credential decides. Safe
methods (and WebSocket handshakes, which only read) need the ``read`` role, everything else needs
``admin``; a request the readers do not authorise passes only if the ``is_public`` predicate
accepts it (a public route). The role lands in ``scope["state"]["role"]`` for the endpoints.
A dashboard session reader plugs in later as one more :data:`CredentialReader`.
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import msgspec
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from agent_pm.settings import Settings

__all__ = [
    "API_KEY_HEADER",
    "INVALID",
    "READ_METHODS",
    "ApiKeys",
    "AuthMiddleware",
    "CredentialReader",
    "Role",
    "Verdict",
    "api_key_reader",
]

API_KEY_HEADER = "x-api-key"
Role = Literal["read", "admin"]
# A reader's answer: a role, INVALID for a credential it recognises but rejects, or None when the
# request carries no credential of its kind (the next reader gets a turn).
INVALID: Literal["invalid"] = "invalid"
Verdict = Role | Literal["invalid"] | None
CredentialReader = Callable[[Scope], Verdict]
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_RANK: dict[Role, int] = {"read": 0, "admin": 1}


@dataclass(frozen=True)
class ApiKeys(Mapping[str, Role]):
    """The keys the server accepts; ``generated`` when no key was configured.

    It is also a read-only mapping of key to role, the form a session signer (which derives its
    key from the API keys, so rotating them ends sessions) takes. Lookups go through
    :meth:`role_for`, in constant time.
    """

    admin: str = field(repr=False)
    read: str | None = field(default=None, repr=False)
    generated: bool = False

    @classmethod
    def from_settings(cls, settings: Settings) -> ApiKeys:
        """``ADMIN_API_KEY`` is admin and ``API_KEY`` read; ``API_KEY`` alone grants everything."""
        if settings.admin_api_key:
            return cls(admin=settings.admin_api_key, read=settings.api_key)
        if settings.api_key:
            return cls(admin=settings.api_key)
        return cls(admin=secrets.token_urlsafe(32), generated=True)

    def role_for(self, key: str) -> Role | None:
        """The role ``key`` grants, compared in constant time against every configured key."""
        given = key.encode()
        is_admin = hmac.compare_digest(given, self.admin.encode())
        # Compare against a dummy when there is no read key so timing does not reveal that.
        is_read = hmac.compare_digest(given, (self.read or self.admin).encode())
        if is_admin:
            return "admin"
        return "read" if is_read and self.read is not None else None

    def _roles(self) -> dict[str, Role]:
        roles: dict[str, Role] = {self.read: "read"} if self.read is not None else {}
        roles[self.admin] = "admin"
        return roles

    def __getitem__(self, key: str) -> Role:
        role = self.role_for(key)
        if role is None:
            raise KeyError("not an accepted API key")  # never echo the key
        return role

    def __iter__(self) -> Iterator[str]:
        return iter(self._roles())

    def __len__(self) -> int:
        return len(self._roles())


def api_key_reader(keys: ApiKeys) -> CredentialReader:
    """A reader for the ``X-API-Key`` header."""

    def read(scope: Scope) -> Verdict:
        key = Headers(scope=scope).get(API_KEY_HEADER)
        if key is None:
            return None
        return keys.role_for(key) or INVALID

    return read


def required_role(scope: Scope) -> Role:
    """Reads need ``read``; anything that may change state needs ``admin``."""
    if scope["type"] == "websocket" or scope.get("method", "GET") in READ_METHODS:
        return "read"
    return "admin"


class AuthMiddleware:
    """Pure ASGI middleware denying every request the readers cannot authenticate."""

    def __init__(
        self,
        app: ASGIApp,
        readers: Sequence[CredentialReader],
        is_public: Callable[[Scope], bool],
    ) -> None:
        self.app = app
        self.readers = tuple(readers)
        self.is_public = is_public

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        verdict = self._authenticate(scope)
        if verdict in ("read", "admin") and _RANK[verdict] >= _RANK[required_role(scope)]:
            scope.setdefault("state", {})["role"] = verdict
            await self.app(scope, receive, send)
        # Checked only for requests that would be refused, so authorised traffic skips it.
        elif self.is_public(scope):
            await self.app(scope, receive, send)
        elif verdict is None:
            await deny(scope, receive, send, 401, "unauthorized", "missing X-API-Key header")
        elif verdict == INVALID:
            await deny(scope, receive, send, 403, "forbidden", "invalid API key")
        else:
            await deny(scope, receive, send, 403, "forbidden", "this operation needs the admin key")

    def _authenticate(self, scope: Scope) -> Verdict:
        for reader in self.readers:
            verdict = reader(scope)
            if verdict is not None:
                return verdict
        return None


async def deny(
    scope: Scope, receive: Receive, send: Send, status: int, code: str, detail: str
) -> None:
    """Refuse the request: a JSON error for HTTP and, where the server can, WebSocket too."""
    body = msgspec.json.encode({"error": code, "detail": detail})
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    if status == 401:
        headers.append((b"www-authenticate", b'ApiKey header="X-API-Key"'))
    if scope["type"] == "http":
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
        return
    await receive()  # the websocket.connect message must be consumed before answering it
    if "websocket.http.response" in scope.get("extensions", {}):
        await send({"type": "websocket.http.response.start", "status": status, "headers": headers})
        await send({"type": "websocket.http.response.body", "body": body})
    else:
        await send({"type": "websocket.close", "code": 1008, "reason": detail})
