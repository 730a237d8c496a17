"""The operator surfaces of the plugin platform: REST API, telemetry stream and dashboard.

The public surface is what ``__all__`` lists: :func:`create_app`, the keys and roles that
callers authenticate with, and :func:`close_streams` for servers that stop. Every module here is
internal (``_``-named); the console is the ``dashboard`` package, whose surface is its routes.
"""

from __future__ import annotations

from agent_pm.api._app import create_app
from agent_pm.api._audit import DEFAULT_LIMIT as AUDIT_PAGE_SIZE
from agent_pm.api._audit import parse_since as parse_audit_since
from agent_pm.api._security import ApiKeys, Caller, Role, named_key_line
from agent_pm.api._stream import close_streams

__all__ = [
    "AUDIT_PAGE_SIZE",
    "ApiKeys",
    "Caller",
    "Role",
    "close_streams",
    "create_app",
    "named_key_line",
    "parse_audit_since",
]
