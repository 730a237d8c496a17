"""Serving an ASGI app on a free loopback port inside the current event loop."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import uvicorn

__all__ = ["serve_on_loopback"]


@asynccontextmanager
async def serve_on_loopback(
    app: Any, host: str = "127.0.0.1", *, ws: str = "none", server_class: type = uvicorn.Server
) -> AsyncIterator[str]:
    """Serve ``app`` (its lifespan is the caller's) for the ``async with`` block; yields its
    base URL.

    The socket is bound and listening before uvicorn starts, so clients may connect at once:
    the kernel queues them until the server accepts.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    sock.listen(128)
    config = uvicorn.Config(app, lifespan="off", ws=ws, log_level="warning")
    server = server_class(config)
    async with anyio.create_task_group() as group:
        group.start_soon(server.serve, [sock])
        try:
            yield f"http://{host}:{sock.getsockname()[1]}"
        finally:
            server.should_exit = True
    sock.close()
