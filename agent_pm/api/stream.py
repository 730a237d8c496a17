"""The live telemetry WebSocket lives here; until it lands, this module adds no routes."""

from __future__ import annotations

from starlette.routing import BaseRoute

__all__ = ["routes"]


def routes() -> list[BaseRoute]:
    """The telemetry stream's routes (none yet)."""
    return []
