"""Fixtures of the built-in plugin tests: real uvicorn servers on loopback, a recording emitter."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any

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


@pytest.fixture
def serve() -> Iterator[Callable[[Any], str]]:
    """Start an ASGI app on a free 127.0.0.1 port in a thread; returns its base URL."""
    running: list[tuple[_Server, threading.Thread]] = []

    def start(app: Any) -> str:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        config = uvicorn.Config(app, lifespan="off", ws="none", log_level="warning")
        server = _Server(config)
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        running.append((server, thread))
        assert server.ready.wait(timeout=10), "server did not start"
        return f"http://127.0.0.1:{sock.getsockname()[1]}"

    yield start
    for server, thread in running:
        server.should_exit = True
        thread.join(timeout=10)


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
