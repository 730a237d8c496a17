"""The demo traffic source: drives an Agent PM server through its HTTP API.

``agent-pm serve --demo`` runs it against the server itself; ``agent-pm demo --url URL`` against
any running server. Requests are paced at ``rate`` per second; a failed request is counted and
the demo goes on.
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any

import anyio
import httpx

from agent_pm.demo.scenario import Scenario, Step

__all__ = ["DemoTraffic"]

logger = logging.getLogger(__name__)


class DemoTraffic:
    """Sends a :class:`Scenario`'s steps to the server at ``url``."""

    def __init__(
        self,
        url: str,
        api_key: str,
        *,
        rate: float = 4.0,
        seed: int | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.url = url.rstrip("/")
        self.rate = rate
        self.scenario = Scenario(seed)
        self.sent: Counter[str] = Counter()
        self.failed: Counter[str] = Counter()
        self._headers = {"X-API-Key": api_key}
        self._transport = transport

    async def run(self, count: int | None = None) -> None:
        """Send ``count`` steps (forever when ``None``), one every ``1 / rate`` seconds."""
        async with httpx.AsyncClient(
            base_url=self.url, headers=self._headers, timeout=60, transport=self._transport
        ) as client:
            for index, step in enumerate(self.scenario.steps()):
                if count is not None and index >= count:
                    return
                await self._send(client, step)
                await anyio.sleep(1 / self.rate)  # pacing, not waiting for a condition

    async def _send(self, client: httpx.AsyncClient, step: Step) -> None:
        label = step.hook or step.path or "?"
        path = f"/hooks/{step.hook}" if step.hook else str(step.path)
        try:
            response = await client.post(path, json=step.body)
        except httpx.HTTPError as exc:
            self.failed[label] += 1
            logger.warning("demo request %s failed: %s", label, type(exc).__name__)
            return
        if response.is_error:
            self.failed[label] += 1
            logger.warning("demo request %s answered %s", label, response.status_code)
            return
        self.sent[label] += 1
        if step.hook == "post_plan":
            self._remember_issues(response.json())

    def _remember_issues(self, body: Any) -> None:
        for result in body.get("results", []) if isinstance(body, dict) else []:
            value = result.get("value") if isinstance(result, dict) else None
            if isinstance(value, dict) and isinstance(value.get("issue_key"), str):
                self.scenario.issue_keys.append(value["issue_key"])
                del self.scenario.issue_keys[:-50]  # keep the most recent few
