"""The trivial plugin the isolation benchmark runs inline and in worker processes."""

from __future__ import annotations

from typing import Any

from agent_pm.plugins import PluginBase


class Trivial(PluginBase):
    name = "trivial"
    hooks = ("post_plan",)

    async def post_plan(self, **payload: Any) -> int:
        return 1
