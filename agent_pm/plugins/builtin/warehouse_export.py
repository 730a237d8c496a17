"""Warehouse export: appends ticket exports, alignment events and feedback to a JSON Lines file.

Each event becomes one line ``{"timestamp": <ISO-8601 UTC>, "hook": <name>, "payload": {...}}``
that a warehouse loader can pick up; rotated files are ``<path>.1``, ``<path>.2`` … (higher is
newer). ``path`` is relative to the data directory, and must be a file this plugin created.
Payload values JSON cannot carry are written as their ``str()``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import msgspec

from agent_pm.plugins.base import PluginBase
from agent_pm.plugins.builtin._jsonl import JsonlLog
from agent_pm.plugins.paths import DataPath

__all__ = ["WarehouseExportPlugin"]


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


class WarehouseExportPlugin(PluginBase):
    """Writes every event of its hooks durably to a rotating JSON Lines file."""

    name = "warehouse_export"
    description = "Append ticket exports, alignment events and feedback to a JSON Lines file."
    hooks = ("post_ticket_export", "post_alignment_event", "on_feedback")

    class Config(msgspec.Struct, forbid_unknown_fields=True):
        """Where lines go and when the file rotates."""

        path: DataPath = "warehouse/events.jsonl"
        rotate_bytes: Annotated[int, msgspec.Meta(gt=0)] = 10_000_000

    config: Config

    def __init__(self, config: Any = None) -> None:
        super().__init__(self.Config() if config is None else config)
        self._events: JsonlLog | None = None

    async def on_enable(self) -> None:
        """Open the file, cutting a partial line a crash may have left."""
        events = JsonlLog(Path(self.config.path), self.config.rotate_bytes, owner=self.plugin_name)
        if torn := await events.open():
            self.log.warning("cut a partial last line of %d bytes from %s", torn, events.path)
        self._events = events

    async def on_disable(self) -> None:
        """Write what is pending and close the file."""
        if self._events is not None:
            events, self._events = self._events, None
            await events.close()

    async def post_ticket_export(self, **payload: Any) -> dict[str, Any]:
        """Record an exported ticket."""
        return await self._record("post_ticket_export", payload)

    async def post_alignment_event(self, **payload: Any) -> dict[str, Any]:
        """Record an alignment event."""
        return await self._record("post_alignment_event", payload)

    async def on_feedback(self, **payload: Any) -> dict[str, Any]:
        """Record a piece of feedback."""
        return await self._record("on_feedback", payload)

    async def _record(self, hook: str, payload: dict[str, Any]) -> dict[str, Any]:
        if self._events is None:
            raise RuntimeError(f"plugin {self.plugin_name!r} is not enabled")
        event = {"timestamp": _now(), "hook": hook, "payload": payload}
        line = msgspec.json.encode(event, enc_hook=str) + b"\n"
        await self._events.append(line)
        return {"written": str(self._events.path), "bytes": len(line)}
