"""Fixtures of the built-in plugin tests: real uvicorn servers on loopback, a recording emitter."""

from __future__ import annotations

import socket
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import anyio
import anyio.to_thread
import pytest
import uvicorn

from agent_pm.plugins.base import Emitter


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class _Server(uvicorn.Server):
    """A uvicorn server that says when it listens, so tests wait on an event, not a sleep."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.ready = threading.Event()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        self.ready.set()


def _listener() -> tuple[socket.socket, str]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    return sock, f"http://127.0.0.1:{sock.getsockname()[1]}"


def _server(app: Any) -> _Server:
    return _Server(uvicorn.Config(app, lifespan="off", ws="none", log_level="warning"))


@pytest.fixture
def serve() -> Iterator[Callable[[Any], str]]:
    """Start an ASGI app on a free 127.0.0.1 port in a thread; returns its base URL.

    For apps without event-loop state of their own, like the stand-ins.
    """
    running: list[tuple[_Server, threading.Thread]] = []

    def start(app: Any) -> str:
        sock, url = _listener()
        server = _server(app)
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        running.append((server, thread))
        assert server.ready.wait(timeout=10), "server did not start"
        return url

    yield start
    for server, thread in running:
        server.should_exit = True
        thread.join(timeout=10)


@asynccontextmanager
async def _serving_here(app: Any) -> AsyncIterator[str]:
    sock, url = _listener()
    server = _server(app)
    async with anyio.create_task_group() as tg:
        tg.start_soon(server.serve, [sock])
        assert await anyio.to_thread.run_sync(server.ready.wait, 10), "server did not start"
        yield url
        server.should_exit = True


@pytest.fixture
def serve_here() -> Callable[[Any], AbstractAsyncContextManager[str]]:
    """Serve an ASGI app on loopback in the test's own event loop, for apps bound to that loop."""
    return _serving_here


class RecordingEmitter(Emitter):
    """An emitter that records what plugins emit and answers with no results."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, dict[str, Any]]] = []

    async def emit(self, source: str, hook: str, payload: dict[str, Any]) -> list[Any]:
        self.calls.append((source, hook, payload))
        return []

    def emit_nowait(self, source: str, hook: str, payload: dict[str, Any]) -> bool:
        self.calls.append((source, hook, payload))
        return True


@pytest.fixture
def emitter() -> RecordingEmitter:
    return RecordingEmitter()


class RecordingSleeper:
    """Stands in for ``anyio.sleep`` between retries: records the delays, waits for nothing."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)


@pytest.fixture
def sleeper() -> RecordingSleeper:
    return RecordingSleeper()
