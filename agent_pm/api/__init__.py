"""The operator surfaces of the plugin platform: REST API, telemetry stream and dashboard."""

from __future__ import annotations

from agent_pm.api.app import create_app

__all__ = ["create_app"]
