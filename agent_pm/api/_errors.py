"""The one place errors become HTTP responses: ``{"error": code, "detail": message}``.

:func:`error_response` builds the envelope; :func:`deny` sends it from ASGI code, for a request
or a WebSocket handshake alike.

Platform errors (:mod:`agent_pm.errors`) and Starlette's ``HTTPException`` are mapped here; an
exception nobody expected is a bug, so :class:`CatchAllMiddleware` logs it and answers a JSON 500
instead of letting the server print a traceback page or drop the connection.
"""

from __future__ import annotations

import logging
import math
from http import HTTPStatus
from typing import Any

import msgspec
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from agent_pm.api._http_middleware import HttpMiddleware
from agent_pm.errors import (
    AgentPMError,
    ClusterUnavailableError,
    ConfigValidationError,
    EmitLoopError,
    FailureNotFoundError,
    FailureStoreError,
    InstallRefusedError,
    LifecycleError,
    ManifestError,
    NodeNotFoundError,
    PluginExistsError,
    PluginLoadError,
    PluginNotFoundError,
    ReplayError,
    ReplayRateError,
    RevisionConflictError,
    ShuttingDownError,
)

__all__ = [
    "STATUS_OF",
    "CatchAllMiddleware",
    "ErrorBody",
    "JSONResponse",
    "deny",
    "error_response",
    "exception_handlers",
]

logger = logging.getLogger(__name__)

# Subclasses first: the first matching class wins.
STATUS_OF: tuple[tuple[type[AgentPMError], int, str], ...] = (
    (PluginNotFoundError, 404, "not_found"),
    (FailureNotFoundError, 404, "not_found"),
    (NodeNotFoundError, 404, "not_found"),
    (FailureStoreError, 503, "failure_store_unavailable"),
    (ReplayRateError, 429, "too_many_requests"),
    (ReplayError, 409, "replay_refused"),
    (PluginExistsError, 409, "plugin_exists"),
    (PluginLoadError, 409, "load_failed"),
    (LifecycleError, 409, "lifecycle_failed"),
    (ManifestError, 409, "manifest_error"),
    (EmitLoopError, 409, "emit_loop"),
    (RevisionConflictError, 412, "revision_conflict"),
    (InstallRefusedError, 403, "install_refused"),
    (ConfigValidationError, 422, "invalid_config"),
    (ShuttingDownError, 503, "shutting_down"),
    (ClusterUnavailableError, 503, "cluster_unavailable"),
)


class ErrorBody(msgspec.Struct, omit_defaults=True):
    """Every error response; ``path`` locates the offending config field on 422."""

    error: str
    detail: str
    path: str | None = None


class JSONResponse(Response):
    """A response encoded by msgspec (structs, datetimes and dicts alike)."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return msgspec.json.encode(content)


def error_response(
    status: int, code: str, detail: str, *, path: str | None = None, headers: Any = None
) -> JSONResponse:
    """The error envelope as a response."""
    return JSONResponse(ErrorBody(code, detail, path), status_code=status, headers=headers)


async def deny(
    scope: Scope,
    receive: Receive,
    send: Send,
    status: int,
    code: str,
    detail: str,
    *,
    headers: dict[str, str] | None = None,
) -> None:
    """Refuse an HTTP request or a WebSocket handshake with the error envelope.

    A handshake gets the envelope as its HTTP response where the server supports that, else a
    1008 (policy violation) close naming ``detail``.
    """
    if scope["type"] == "websocket":
        await receive()  # the websocket.connect message must be consumed before answering it
        if "websocket.http.response" not in scope.get("extensions", {}):
            await send({"type": "websocket.close", "code": 1008, "reason": detail})
            return
    await error_response(status, code, detail, headers=headers)(scope, receive, send)


# Fixed here rather than derived from http.HTTPStatus, whose phrases change between Pythons.
_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    412: "precondition_failed",
    413: "body_too_large",
    422: "unprocessable",
    429: "too_many_requests",
    503: "shutting_down",
}


def _code_of(status: int) -> str:
    return _HTTP_CODES.get(status, "error" if status >= 500 else "client_error")


async def _platform_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, AgentPMError)
    path = exc.path if isinstance(exc, ConfigValidationError) else None
    headers = None
    if isinstance(exc, ReplayRateError):
        headers = {"Retry-After": str(math.ceil(exc.retry_after))}
    for cls, status, code in STATUS_OF:
        if isinstance(exc, cls):
            return error_response(status, code, str(exc), path=path, headers=headers)
    return error_response(400, "bad_request", str(exc))


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    detail = exc.detail if exc.detail != HTTPStatus(exc.status_code).phrase else ""
    default = {404: "no such route", 405: "method not allowed"}.get(exc.status_code, "")
    return error_response(
        exc.status_code, _code_of(exc.status_code), detail or default, headers=exc.headers
    )


def exception_handlers() -> dict[Any, Any]:
    """Handlers for Starlette's ``exception_handlers`` argument."""
    return {AgentPMError: _platform_error, HTTPException: _http_error}


class CatchAllMiddleware(HttpMiddleware):
    """Turn an unexpected exception into a logged JSON 500.

    Once a response has started, an error response is impossible; the exception goes on to the
    server, which aborts the connection so the client cannot take a truncated body as whole.
    """

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception:
            if started:
                raise  # too late for an error response: the server must abort the connection
            logger.exception("unhandled error on %s %s", scope.get("method"), scope.get("path"))
            response = error_response(500, "internal_error", "unexpected server error")
            await response(scope, receive, send)
