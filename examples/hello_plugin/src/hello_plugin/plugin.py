"""HelloPlugin: greets every plan, and says its last greeting over HTTP."""

from __future__ import annotations

import hmac
from collections.abc import Sequence
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Route

from agent_pm.plugins import PluginBase, public

from .greeting import greet


class HelloPlugin(PluginBase):
    """Answers ``post_plan`` with a greeting for the plan's title.

    Routes (mounted under ``/plugins/hello`` while the plugin is active):

    - ``GET /plugins/hello/greeting``: the last greeting and how many plans were greeted
      (behind the service's API key, like every operator surface);
    - ``POST /plugins/hello/webhook``: public, but only answers callers that send the
      ``HELLO_GREETING_TOKEN`` secret in ``X-Hello-Token``.
    """

    name = "hello"
    description = "Greets every plan and serves its last greeting"
    hooks = ("post_plan",)
    required_secrets = ("HELLO_GREETING_TOKEN",)

    class Config(msgspec.Struct, forbid_unknown_fields=True):
        greeting: str = "Hello"
        punctuation: str = "!"

    def on_enable(self) -> None:
        self.greeted = 0
        self.last: str | None = None

    async def post_plan(self, **payload: Any) -> dict[str, Any]:
        plan = payload.get("plan")
        title = plan.get("title") if isinstance(plan, dict) else None
        self.last = greet(self.config.greeting, title or "world", self.config.punctuation)
        self.greeted += 1
        return {"message": self.last}

    def routes(self) -> Sequence[BaseRoute]:
        return [
            Route("/greeting", self.greeting, methods=["GET"]),
            public(Route("/webhook", self.webhook, methods=["POST"])),
        ]

    async def greeting(self, request: Request) -> JSONResponse:
        return JSONResponse({"message": self.last, "greeted": self.greeted})

    async def webhook(self, request: Request) -> JSONResponse:
        expected = self.get_secret("HELLO_GREETING_TOKEN") or ""
        offered = request.headers.get("x-hello-token", "")
        if not expected or not hmac.compare_digest(offered.encode(), expected.encode()):
            return JSONResponse({"error": "bad or missing X-Hello-Token"}, status_code=401)
        body = await request.json()
        return JSONResponse(await self.post_plan(plan=body))
