"""The app both stream benchmarks serve: the telemetry stream over a registry with one echo
plugin, every connection given the read role so key checks stay off the measured path."""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from starlette.applications import Starlette

from agent_pm.api import _stream as stream
from agent_pm.plugins import PluginRegistry
from agent_pm.settings import Settings

MANIFEST = "- name: echo\n  module: tests.fixtures.plugins:Echo\n  enabled: true\n"


def stream_app() -> tuple[Starlette, Any]:
    """The Starlette app (its ``state.registry`` set while it runs) and the ASGI app to serve."""
    manifest = Path(tempfile.mkdtemp()) / "plugins.yaml"
    manifest.write_text(MANIFEST)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with PluginRegistry(manifest, Settings.from_env({})) as registry:
            app.state.registry = registry
            yield

    app = Starlette(routes=stream.routes(), lifespan=lifespan)

    async def with_read_role(scope: Any, receive: Any, send: Any) -> None:
        scope.setdefault("state", {})["role"] = "read"
        await app(scope, receive, send)

    return app, with_read_role
