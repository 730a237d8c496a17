"""Errors become JSON responses in one place; unexpected ones are logged 500s."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from agent_pm.api._errors import CatchAllMiddleware, deny, exception_handlers
from agent_pm.api._rest import safe_result
from agent_pm.errors import AgentPMError, EmitLoopError, LifecycleError
from agent_pm.plugins import HookResult

pytestmark = pytest.mark.anyio


def raising(exc: Exception) -> Route:
    async def endpoint(request: Request) -> Response:
        raise exc

    return Route(f"/{type(exc).__name__}", endpoint)


async def broken_stream(request: Request) -> Response:
    async def body() -> AsyncIterator[bytes]:
        yield b"partial"
        raise RuntimeError("stream broke")

    return StreamingResponse(body())


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    app = Starlette(
        routes=[
            raising(AgentPMError("generic")),
            raising(EmitLoopError("loop")),
            raising(LifecycleError("on_enable failed")),
            raising(KeyError("bug")),
            Route("/stream", broken_stream),
        ],
        middleware=[Middleware(CatchAllMiddleware)],
        exception_handlers=exception_handlers(),
    )
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        yield client


@pytest.mark.parametrize(
    ("path", "status", "code"),
    [
        ("/AgentPMError", 400, "bad_request"),
        ("/EmitLoopError", 409, "emit_loop"),
        ("/LifecycleError", 409, "lifecycle_failed"),
        ("/KeyError", 500, "internal_error"),
    ],
)
async def test_errors_map_to_status_and_code(
    client: httpx.AsyncClient, path: str, status: int, code: str
) -> None:
    response = await client.get(path)
    assert response.status_code == status
    assert response.json()["error"] == code


async def test_error_after_the_response_started_reaches_the_server(
    client: httpx.AsyncClient,
) -> None:
    # The server then aborts the connection: a truncated body must not look complete.
    with pytest.raises(RuntimeError, match="stream broke"):
        await client.get("/stream")


def test_safe_result_survives_a_failing_repr() -> None:
    class Hostile:
        def __repr__(self) -> str:
            raise RuntimeError("no repr for you")

    result = safe_result(HookResult("p", "h", "success", Hostile()))
    assert result.value.startswith("<Hostile instance at")
    plain = HookResult("p", "h", "success", {"ok": [1, 2]})
    assert safe_result(plain) is plain


async def _denied(scope: dict[str, Any]) -> list[dict[str, Any]]:
    sent: list[dict[str, Any]] = []
    connect = [{"type": "websocket.connect"}]

    async def receive() -> dict[str, Any]:
        return connect.pop() if connect else {"type": "websocket.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await deny(scope, receive, send, 403, "forbidden", "not you", headers={"Retry-After": "7"})
    assert connect == [] or scope["type"] == "http"
    return sent


async def test_deny_sends_the_one_envelope_to_requests_and_handshakes() -> None:
    http = await _denied({"type": "http"})
    handshake = await _denied({"type": "websocket", "extensions": {"websocket.http.response": {}}})
    for start, body, prefix in ((*http, ""), (*handshake, "websocket.")):
        assert start["type"] == prefix + "http.response.start"
        assert start["status"] == 403
        assert (b"retry-after", b"7") in start["headers"]
        assert (b"content-type", b"application/json") in start["headers"]
        assert json.loads(body["body"]) == {"error": "forbidden", "detail": "not you"}


async def test_deny_closes_a_handshake_with_1008_where_no_response_can_be_sent() -> None:
    [close] = await _denied({"type": "websocket", "extensions": {}})
    assert close == {"type": "websocket.close", "code": 1008, "reason": "not you"}
