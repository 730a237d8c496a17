"""Authentication: credential readers and the deny-by-default ASGI middleware.

Every HTTP request and WebSocket handshake passes :class:`AuthMiddleware`. It asks its credential
readers, in order, who the caller is; the first reader that recognises a credential decides. Safe
methods (and WebSocket handshakes, which only read) need the ``read`` role, everything else needs
``admin``; a request the readers do not authorise passes only if the ``is_public`` predicate
accepts it (a public route). The caller lands in ``scope["state"]["caller"]`` (and its role in
``scope["state"]["role"]``) for the endpoints.

Wrong keys are counted per client address (:class:`agent_pm.api._security.Throttle`): an address
that keeps guessing gets 429 with ``Retry-After`` for every key it sends, right or wrong, until
its bucket drains. A key in the query string is refused outright, so keys never reach access logs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from agent_pm.api._errors import deny
from agent_pm.api._security import (
    ApiKeys,
    Caller,
    Role,
    Throttle,
    client_address,
    key_in_query,
)

__all__ = [
    "API_KEY_HEADER",
    "INVALID",
    "READ_METHODS",
    "ApiKeys",
    "AuthMiddleware",
    "Caller",
    "CredentialReader",
    "Role",
    "Verdict",
    "api_key_reader",
]

API_KEY_HEADER = "x-api-key"
# A reader's answer: the caller, INVALID for a credential it recognises but rejects, or None when
# the request carries no credential of its kind (the next reader gets a turn).
INVALID: Literal["invalid"] = "invalid"
Verdict = Caller | Literal["invalid"] | None
CredentialReader = Callable[[Scope], Verdict]
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_RANK: dict[Role, int] = {"read": 0, "admin": 1}
# What a 401 names as the credential to send.
CHALLENGE = {"WWW-Authenticate": 'ApiKey header="X-API-Key"'}


def api_key_reader(keys: ApiKeys) -> CredentialReader:
    """A reader for the ``X-API-Key`` header."""

    def read(scope: Scope) -> Verdict:
        key = Headers(scope=scope).get(API_KEY_HEADER)
        if key is None:
            return None
        return keys.caller_for(key) or INVALID

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
        throttle: Throttle | None = None,
    ) -> None:
        self.app = app
        self.readers = tuple(readers)
        self.is_public = is_public
        self.throttle = throttle or Throttle()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        if key_in_query(scope):
            detail = "API keys are never accepted in the query string: send the X-API-Key header"
            await deny(scope, receive, send, 400, "key_in_query", detail)
            return
        address = client_address(scope)
        wait = self.throttle.retry_after(address)
        if wait is not None and API_KEY_HEADER in Headers(scope=scope):
            await _throttled(scope, receive, send, wait)
            return
        verdict = self._authenticate(scope)
        if isinstance(verdict, Caller) and _RANK[verdict.role] >= _RANK[required_role(scope)]:
            state = scope.setdefault("state", {})
            state["caller"], state["role"] = verdict, verdict.role
            await self.app(scope, receive, send)
        # Checked only for requests that would be refused, so authorised traffic skips it.
        elif self.is_public(scope):
            await self.app(scope, receive, send)
        elif verdict is None:
            detail = "missing X-API-Key header"
            await deny(scope, receive, send, 401, "unauthorized", detail, headers=CHALLENGE)
        elif verdict == INVALID:
            self.throttle.failed(address)
            await deny(scope, receive, send, 403, "forbidden", "invalid API key")
        else:
            await deny(scope, receive, send, 403, "forbidden", "this operation needs the admin key")

    def _authenticate(self, scope: Scope) -> Verdict:
        for reader in self.readers:
            verdict = reader(scope)
            if verdict is not None:
                return verdict
        return None


async def _throttled(scope: Scope, receive: Receive, send: Send, wait: int) -> None:
    detail = f"too many wrong keys from this address; retry in {wait} s"
    headers = {"Retry-After": str(wait)}
    await deny(scope, receive, send, 429, "too_many_attempts", detail, headers=headers)
