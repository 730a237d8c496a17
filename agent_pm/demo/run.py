"""``agent-pm serve --demo``: the operator app wrapped in the stand-ins and the demo traffic.

The core app knows nothing of the demo: :class:`DemoApp` builds it with
:func:`agent_pm.api.create_app` inside its own lifespan, once the stand-ins are up and the
settings point the built-in plugins at them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx
from starlette.applications import Starlette
from starlette.types import Receive, Scope, Send

from agent_pm.api import ApiKeys, create_app
from agent_pm.demo.environment import DemoServices, demo_services
from agent_pm.demo.summary import report_faults
from agent_pm.demo.traffic import DemoTraffic
from agent_pm.settings import Settings

__all__ = ["DemoApp", "demo_settings", "run_demo_traffic"]


@asynccontextmanager
async def demo_settings(settings: Settings) -> AsyncIterator[tuple[Settings, DemoServices]]:
    """Run the stand-ins; yields ``settings`` whose environment points the plugins at them.

    The stand-ins' addresses and credentials override the environment only: a secret written
    into the manifest still wins, and the manifest itself is never changed.
    """
    async with demo_services() as services:
        environ = {**settings.environ, **services.environ}
        yield dataclasses.replace(settings, environ=environ), services


async def run_demo_traffic(app: Any, api_key: str, rate: float = 4.0) -> None:
    """Drive demo traffic through ``app`` itself, authenticated like any operator client."""
    transport = httpx.ASGITransport(app=app)
    await DemoTraffic("http://demo.invalid", api_key, rate=rate, transport=transport).run()


class DemoApp(Starlette):
    """The operator app (``create_app(settings, **options)``) with the demo around it.

    While it runs, ``state.app`` is the operator app that every request is handed to.
    """

    def __init__(self, settings: Settings, *, rate: float = 4.0, **options: Any) -> None:
        super().__init__(lifespan=self._lifespan)
        self.settings, self.rate, self.options = settings, rate, options
        self.keys: ApiKeys = options.pop("keys", None) or ApiKeys.from_settings(settings)
        if self.keys.admin is None:
            raise ValueError("the demo sends its traffic with ADMIN_API_KEY or API_KEY: set one")
        self.admin_key: str = self.keys.admin
        self.router.default = self._forward

    @asynccontextmanager
    async def _lifespan(self, _: Starlette) -> AsyncIterator[None]:
        async with demo_settings(self.settings) as (run_settings, services):
            app = create_app(run_settings, keys=self.keys, **self.options)
            async with app.router.lifespan_context(app), anyio.create_task_group() as group:
                self.state.app = app
                group.start_soon(run_demo_traffic, app, self.admin_key, self.rate)
                group.start_soon(report_faults, services)
                yield
                group.cancel_scope.cancel()

    async def _forward(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.state.app(scope, receive, send)
