"""Request ids: every HTTP request and WebSocket handshake gets one, echoed as ``X-Request-ID``.

A caller may send its own ``X-Request-ID`` to correlate its logs with ours; one that is too long
or carries characters outside a safe set (it ends up in logs and audit records) is replaced by a
generated id rather than refused, so a bad id never fails a request.
"""

from __future__ import annotations

import re
import uuid

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from agent_pm.plugins import context

__all__ = ["HEADER", "RequestIdMiddleware", "accepted_id"]

HEADER = "x-request-id"
_SAFE = re.compile(r"[A-Za-z0-9._:@/+=-]{1,128}")


def accepted_id(given: str | None) -> str:
    """``given`` when it is a safe id, else a new random one."""
    if given is not None and _SAFE.fullmatch(given):
        return given
    return uuid.uuid4().hex


class RequestIdMiddleware:
    """Sets :data:`agent_pm.plugins.context.request_id` and echoes it on every HTTP response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        value = accepted_id(Headers(scope=scope).get(HEADER))
        scope.setdefault("state", {})["request_id"] = value
        encoded = value.encode()

        async def send_with_id(message: Message) -> None:
            if message["type"] in ("http.response.start", "websocket.http.response.start"):
                headers = [
                    (k, v) for k, v in message.get("headers", []) if k.lower() != b"x-request-id"
                ]
                headers.append((b"x-request-id", encoded))
                message = {**message, "headers": headers}
            elif message["type"] == "websocket.accept":
                headers = list(message.get("headers") or [])
                headers.append((b"x-request-id", encoded))
                message = {**message, "headers": headers}
            await send(message)

        token = context.request_id.set(value)
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            context.request_id.reset(token)
