"""Serving with several worker processes on one port (``agent-pm serve --workers N``).

Each worker is a separate process with its own registry, so they share state only through a
cluster's Redis: :func:`run_workers` refuses to start without one. The supervisor (uvicorn's)
binds the socket, spawns the workers and stops them on SIGINT or SIGTERM; each worker builds its
app with :func:`worker_app` from the environment the supervisor hands down.
"""

from __future__ import annotations

import dataclasses
import json
import os

import uvicorn
from starlette.types import ASGIApp
from uvicorn.supervisors import Multiprocess

from agent_pm.server import (
    GRACEFUL_SHUTDOWN_SECONDS,
    WS_MAX_SIZE,
    quiet_refused_handshakes,
    tune_interpreter,
)
from agent_pm.settings import Settings

__all__ = ["ServeOptions", "run_workers", "worker_app"]

# The serve options reach each worker process through this variable of its environment.
_OPTIONS_VARIABLE = "AGENT_PM_SERVE_OPTIONS"


@dataclasses.dataclass(frozen=True)
class ServeOptions:
    """What ``agent-pm serve`` was asked for, besides the settings."""

    manifest: str
    watch: bool = True
    workers: int = 1


def run_workers(settings: Settings, options: ServeOptions, host: str, port: int) -> None:
    """Serve with ``options.workers`` processes sharing one listening socket, until SIGINT or
    SIGTERM. They share state through Redis, so ``settings`` must name one.

    The settings' API keys must be set, so that every worker accepts the same keys; sessions are
    signed with the session secret, or without one with the secret the cluster keeps in Redis.
    """
    if not settings.redis_url:
        raise ValueError("more than one worker needs Redis (--redis URL or AGENT_PM_REDIS_URL)")
    handed_down = {
        "AGENT_PM_REDIS_URL": settings.redis_url,
        "ADMIN_API_KEY": settings.admin_api_key or "",
        "API_KEY": settings.api_key or "",
        "SESSION_SECRET": settings.session_secret or "",
        "AGENT_PM_NODE": settings.node_name or "",
        _OPTIONS_VARIABLE: json.dumps(dataclasses.asdict(options)),
    }
    # Worker processes are spawned with a copy of this environment.
    os.environ.update({key: value for key, value in handed_down.items() if value})
    config = uvicorn.Config(
        "agent_pm.workers:worker_app",
        factory=True,
        host=host,
        port=port,
        workers=options.workers,
        lifespan="on",
        ws_max_size=WS_MAX_SIZE,
        timeout_graceful_shutdown=int(GRACEFUL_SHUTDOWN_SECONDS),
    )
    # Workers run uvicorn's own server: on shutdown, stream clients hear 1012 (service restart)
    # rather than the single-process server's 1001, and the bounded shutdown window is uvicorn's.
    Multiprocess(config, sockets=[config.bind_socket()]).run()


def worker_app() -> ASGIApp:
    """The app of one worker process (uvicorn calls this factory in each worker)."""
    from agent_pm.api import create_app

    tune_interpreter()
    quiet_refused_handshakes()
    settings = Settings.from_env()
    options = ServeOptions(**json.loads(settings.environ[_OPTIONS_VARIABLE]))
    # Every worker is a node of its own: ``NAME:pid`` (default ``host:pid``).
    if settings.node_name:
        settings = dataclasses.replace(settings, node_name=f"{settings.node_name}:{os.getpid()}")
    return create_app(settings, manifest_path=options.manifest, watch=options.watch)
