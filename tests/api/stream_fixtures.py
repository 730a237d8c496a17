"""A real uvicorn server on a loopback port serving the telemetry stream over a test app."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.types import ASGIApp, Receive, Scope, Send

from agent_pm.api import _stream as stream
from agent_pm.plugins import Bus, PluginRegistry
from agent_pm.server import Server
from agent_pm.settings import Settings

KEYS = {"read-key": "read", "admin-key": "admin"}
MANIFEST = """\
- name: echo
  module: tests.fixtures.plugins:Echo
  enabled: true
- name: configured
  module: tests.fixtures.plugins:Configured
  enabled: true
"""


class KeyAuth:
    """Stand-in for the app's auth middleware: X-API-Key to role; unknown keys refused.

    A request without a key passes through with no role, so the endpoint's own check shows;
    while ``app.state.unavailable`` is true every handshake gets 503, as from a proxy.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            if getattr(scope["app"].state, "unavailable", False):
                await _refuse(send, 503, b'{"error":"unavailable"}')
                return
            key = dict(scope["headers"]).get(b"x-api-key")
            if key is not None:
                role = KEYS.get(key.decode())
                if role is None:
                    await _refuse(send, 403, b'{"error":"forbidden"}')
                    return
                scope.setdefault("state", {})["role"] = role
        await self.app(scope, receive, send)


async def _refuse(send: Send, status: int, body: bytes) -> None:
    headers = [(b"content-type", b"application/json")]
    await send({"type": "websocket.http.response.start", "status": status, "headers": headers})
    await send({"type": "websocket.http.response.body", "body": body})


class _Server(Server):
    """The stream's uvicorn server, telling the test when it listens."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.listening = anyio.Event()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        self.listening.set()


@dataclass
class StreamServer:
    app: Starlette
    server: _Server
    port: int

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/plugins/stream"

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def registry(self) -> PluginRegistry:
        registry: PluginRegistry = self.app.state.registry
        return registry

    def connections(self) -> list[stream.Connection]:
        return list(self.app.state.stream_connections.connections)


def build_app(
    manifest: Path, settings: Settings, replay_size: int = 10_000, **options: Any
) -> Starlette:
    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        bus = Bus(replay_size=replay_size)
        async with PluginRegistry(manifest, settings, bus=bus) as registry:
            app.state.registry = registry
            try:
                yield
            finally:
                await stream.close_streams(app)

    app = Starlette(routes=stream.routes(**options), lifespan=lifespan)
    app.add_middleware(KeyAuth)
    return app


ServeStream = Callable[..., AbstractAsyncContextManager[StreamServer]]


@pytest.fixture
def serve_stream(tmp_path: Path, settings: Settings) -> ServeStream:
    """``async with serve_stream(port=0, replay_size=…, **route_options) as server:`` runs
    uvicorn for the block."""
    return stream_servers(tmp_path, settings)


def stream_servers(tmp_path: Path, settings: Settings) -> ServeStream:
    """What ``serve_stream`` returns, for test modules outside this directory."""
    manifest = tmp_path / "plugins.yaml"
    manifest.write_text(MANIFEST)

    @asynccontextmanager
    async def serve(port: int = 0, **options: Any) -> AsyncIterator[StreamServer]:
        app = build_app(manifest, settings, **options)
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
        config = uvicorn.Config(
            app, log_level="warning", ws="websockets-sansio", timeout_graceful_shutdown=5
        )
        server = _Server(config)
        stopped = anyio.Event()

        async def run() -> None:
            try:
                await server.serve([sock])
            finally:
                stopped.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(run)
            await server.listening.wait()
            try:
                yield StreamServer(app, server, sock.getsockname()[1])
            finally:
                # A failing test must still let uvicorn and the registry shut down in order.
                server.should_exit = True
                with anyio.CancelScope(shield=True):
                    await stopped.wait()
        sock.close()

    return serve


@pytest.fixture
async def stream_server(serve_stream: ServeStream) -> AsyncIterator[StreamServer]:
    """A running stream server with the default limits."""
    async with serve_stream() as server:
        yield server
