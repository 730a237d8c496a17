"""Authentication: keys, roles, and the deny-by-default middleware on every route."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.types import Message, Scope

from agent_pm.api._app import PUBLIC_PATHS, create_app
from agent_pm.api._auth import INVALID, ApiKeys, AuthMiddleware, Caller, api_key_reader
from agent_pm.plugins import PluginRegistry
from agent_pm.settings import Settings
from tests.api.conftest import ADMIN, ADMIN_KEY, READ, READ_KEY, every_endpoint

# Reads that are for admins only: who changed what is not for every dashboard viewer.
ADMIN_ONLY_READS = frozenset({"/audit"})
LONG_READ, LONG_ADMIN = "read-key-0123456789", "admin-key-0123456789"


def test_keys_from_settings() -> None:
    env = {"API_KEY": LONG_READ, "ADMIN_API_KEY": LONG_ADMIN}
    both = ApiKeys.from_settings(Settings.from_env(env))
    roles = (both.role_for(LONG_READ), both.role_for(LONG_ADMIN), both.role_for("x" * 20))
    assert roles == ("read", "admin", None)
    assert both.caller_for(LONG_ADMIN) == Caller("ADMIN_API_KEY", "admin")
    assert both.caller_for(LONG_READ) == Caller("API_KEY", "read")
    only_read = ApiKeys.from_settings(Settings.from_env({"API_KEY": LONG_READ}))
    assert only_read.caller_for(LONG_READ) == Caller("API_KEY", "admin")
    only_admin = ApiKeys.from_settings(Settings.from_env({"ADMIN_API_KEY": LONG_ADMIN}))
    assert (only_admin.role_for(LONG_ADMIN), only_admin.role_for("")) == ("admin", None)
    generated = ApiKeys.from_settings(Settings.from_env({}))
    assert generated.generated and generated.admin and len(generated.admin) >= 32
    assert generated.role_for(generated.admin) == "admin"
    assert generated.admin != ApiKeys.from_settings(Settings.from_env({})).admin
    assert "secret-value" not in repr(ApiKeys(admin="secret-value-0123456789"))


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"ADMIN_API_KEY": "a" * 15}, "ADMIN_API_KEY"),
        ({"ADMIN_API_KEY": "a" * 16, "API_KEY": "r" * 15}, "API_KEY"),
        ({"API_KEY": "1234567"}, "API_KEY"),
    ],
)
def test_keys_shorter_than_16_characters_are_refused(env: dict[str, str], variable: str) -> None:
    with pytest.raises(ValueError, match=rf"^{variable} is \d+ characters long; keys must have"):
        ApiKeys.from_settings(Settings.from_env(env))


def test_api_key_reader_verdicts() -> None:
    reader = api_key_reader(ApiKeys(admin=LONG_ADMIN, read=LONG_READ))

    def scope(*headers: tuple[bytes, bytes]) -> Scope:
        return {"type": "http", "headers": list(headers)}

    assert reader(scope()) is None
    assert reader(scope((b"x-api-key", LONG_READ.encode()))) == Caller("API_KEY", "read")
    assert reader(scope((b"x-api-key", b"nope"))) == INVALID


@pytest.mark.anyio
async def test_every_route_without_key_is_401_unless_public(
    app: Starlette, client: httpx.AsyncClient
) -> None:
    for method, path in every_endpoint(app):
        response = await client.request(method, path)
        if path in PUBLIC_PATHS:
            assert response.status_code == 200, path
        else:
            assert response.status_code == 401, (method, path)
            assert response.json()["error"] == "unauthorized"
            assert response.headers["www-authenticate"].startswith("ApiKey")


@pytest.mark.anyio
async def test_every_dashboard_route_without_a_session_refuses_or_sends_to_login(
    app: Starlette, client: httpx.AsyncClient, registry: PluginRegistry
) -> None:
    revision = registry.revision
    for method, path in every_endpoint(app, dashboard=True):
        response = await client.request(method, path)
        if path == "/login":
            assert response.status_code in (200, 401), (method, path)  # the form, or a bad key
        elif path.startswith("/static/"):
            assert response.status_code == 200, (method, path)  # assets are public by design
        elif method == "GET":
            assert (response.status_code, response.headers["location"]) == (303, "/login")
        else:
            assert response.status_code == 403, (method, path)
    assert registry.revision == revision


@pytest.mark.anyio
async def test_every_route_with_a_wrong_key_is_403(
    app: Starlette, client: httpx.AsyncClient
) -> None:
    for number, (method, path) in enumerate(every_endpoint(app)):
        if path not in PUBLIC_PATHS:
            # Each from its own address: one address guessing this often is throttled.
            transport = httpx.ASGITransport(app=app, client=(f"10.0.0.{number}", 1234))
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as one:
                response = await one.request(method, path, headers={"X-API-Key": "wrong"})
            assert response.status_code == 403, (method, path)


@pytest.mark.anyio
async def test_read_key_reads_but_cannot_change(
    app: Starlette, client: httpx.AsyncClient, registry: PluginRegistry
) -> None:
    revision = registry.revision
    for method, path in every_endpoint(app):
        response = await client.request(method, path, headers=READ)
        if method == "GET" and path not in ADMIN_ONLY_READS:
            # Authorised; a recorded failure the test never made is simply not found.
            expected = 404 if path.startswith("/plugins/echo/failures/") else 200
            assert response.status_code == expected, path
        else:
            assert response.status_code == 403, (method, path)
            assert response.json()["detail"] == "this operation needs the admin key"
    assert registry.revision == revision


@pytest.mark.anyio
async def test_admin_key_passes_everywhere(app: Starlette, client: httpx.AsyncClient) -> None:
    for method, path in every_endpoint(app):
        response = await client.request(method, path, headers=ADMIN, json={})
        assert response.status_code not in (401, 403), (method, path, response.text)


@pytest.mark.anyio
async def test_api_key_alone_grants_everything(
    registry: PluginRegistry, api_settings: Settings
) -> None:
    env = {"API_KEY": READ_KEY, "DATA_DIR": str(api_settings.data_dir)}
    app = create_app(Settings.from_env(env), registry=registry)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        response = await client.post("/plugins/strict/enable", headers=READ)
        assert response.status_code == 200
        assert (await client.get("/plugins", headers=ADMIN)).status_code == 403


# -- the middleware on its own, WebSocket handshakes included ---------------------------------


async def inner_app(scope: Scope, receive: Any, send: Any) -> None:
    inner_app.seen = scope  # type: ignore[attr-defined]


def middleware(**kwargs: Any) -> AuthMiddleware:
    readers = [api_key_reader(ApiKeys(admin=ADMIN_KEY, read=READ_KEY)), *kwargs.pop("readers", [])]
    return AuthMiddleware(inner_app, readers, lambda scope: scope["path"] == "/open", **kwargs)


async def call(app: AuthMiddleware, scope: Scope) -> list[Message]:
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "websocket.connect"}

    async def send(message: Message) -> None:
        sent.append(message)

    await app({"headers": [], "path": "/x", **scope}, receive, send)
    return sent


@pytest.mark.anyio
async def test_websocket_handshake_denied_with_http_response_when_supported() -> None:
    scope = {"type": "websocket", "extensions": {"websocket.http.response": {}}}
    sent = await call(middleware(), scope)
    assert sent[0]["type"] == "websocket.http.response.start"
    assert sent[0]["status"] == 401
    assert b"unauthorized" in sent[1]["body"]


@pytest.mark.anyio
async def test_websocket_handshake_closed_1008_without_the_extension() -> None:
    sent = await call(middleware(), {"type": "websocket", "headers": [(b"x-api-key", b"bad")]})
    assert sent == [{"type": "websocket.close", "code": 1008, "reason": "invalid API key"}]


@pytest.mark.anyio
async def test_websocket_with_read_key_passes_with_its_role() -> None:
    scope = {"type": "websocket", "headers": [(b"x-api-key", READ_KEY.encode())]}
    assert await call(middleware(), scope) == []
    assert inner_app.seen["state"]["role"] == "read"  # type: ignore[attr-defined]


@pytest.mark.anyio
async def test_extra_reader_is_consulted_after_the_api_key() -> None:
    def session_reader(scope: Scope) -> Any:
        return (
            Caller("someone", "admin") if (b"cookie", b"session=ok") in scope["headers"] else None
        )

    app = middleware(readers=[session_reader])
    scope = {"type": "http", "method": "POST", "headers": [(b"cookie", b"session=ok")]}
    assert await call(app, scope) == []
    assert inner_app.seen["state"]["role"] == "admin"  # type: ignore[attr-defined]
    assert inner_app.seen["state"]["caller"] == Caller("someone", "admin")  # type: ignore[attr-defined]
    denied = await call(app, {"type": "http", "method": "GET"})
    assert denied[0]["status"] == 401


@pytest.mark.anyio
async def test_public_paths_and_lifespan_pass_untouched() -> None:
    assert await call(middleware(), {"type": "http", "method": "POST", "path": "/open"}) == []
    assert await call(middleware(), {"type": "lifespan"}) == []
