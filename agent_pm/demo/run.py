"""``agent-pm serve --demo``: the stand-ins and the traffic, run inside the server."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx

from agent_pm.demo.environment import demo_services
from agent_pm.demo.traffic import DemoTraffic
from agent_pm.settings import Settings

__all__ = ["demo_settings", "run_demo_traffic"]


@asynccontextmanager
async def demo_settings(settings: Settings) -> AsyncIterator[Settings]:
    """Run the stand-ins; yields ``settings`` whose environment points the plugins at them.

    The stand-ins' addresses and credentials override the environment only: a secret written
    into the manifest still wins, and the manifest itself is never changed.
    """
    async with demo_services() as services:
        yield dataclasses.replace(settings, environ={**settings.environ, **services.environ})


async def run_demo_traffic(app: Any, api_key: str, rate: float = 4.0) -> None:
    """Drive demo traffic through ``app`` itself, authenticated like any operator client."""
    transport = httpx.ASGITransport(app=app)
    await DemoTraffic("http://demo.invalid", api_key, rate=rate, transport=transport).run()
