"""A loopback stand-in for Slack's ``chat.postMessage``.

Like Slack, it answers HTTP 200 with ``{"ok": false, "error": ...}`` for a bad token
(``invalid_auth``), a missing channel (``channel_not_found``) or a message without text or blocks
(``no_text``), and ``{"ok": true, "channel", "ts"}`` otherwise.
"""

from __future__ import annotations

import itertools
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from agent_pm.demo._standin import Faults, StandIn

__all__ = ["SlackStandIn"]


def _failed(error: str) -> JSONResponse:
    return JSONResponse({"ok": False, "error": error})


class SlackStandIn(StandIn):
    """Slack's Web API on loopback; ``messages`` holds the posted bodies."""

    def __init__(self, token: str, faults: Faults | None = None) -> None:
        super().__init__(faults)
        self._authorization = f"Bearer {token}"
        self._ts = itertools.count(1)
        self.messages: list[dict[str, Any]] = []
        self.app = Starlette(
            routes=[Route("/chat.postMessage", self.endpoint(self._post), methods=["POST"])]
        )

    def unauthorized(self, request: Request) -> Response | None:
        """``invalid_auth`` unless the request carries the configured bot token."""
        if request.headers.get("authorization") == self._authorization:
            return None
        return _failed("invalid_auth")

    async def _post(self, request: Request, body: Any) -> Response:
        if not isinstance(body, dict) or not body.get("channel"):
            return _failed("channel_not_found")
        if not body.get("text") and not body.get("blocks"):
            return _failed("no_text")
        self.messages.append(body)
        ts = f"1700000000.{next(self._ts):06d}"
        return JSONResponse({"ok": True, "channel": body["channel"], "ts": ts, "message": body})
