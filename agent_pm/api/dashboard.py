"""The server-rendered dashboard lives here; until it lands, this module adds no routes."""

from __future__ import annotations

from starlette.routing import BaseRoute

__all__ = ["routes"]


def routes() -> list[BaseRoute]:
    """The dashboard's routes (none yet)."""
    return []
