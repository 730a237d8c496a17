"""PluginRecord: what the registry knows about one manifest entry, and its metadata view."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import anyio

from agent_pm.plugins.base import PluginBase
from agent_pm.plugins.isolated import isolation_status
from agent_pm.plugins.loopblock import LoopBlocks
from agent_pm.plugins.manifest import ManifestEntry, ManifestItem
from agent_pm.plugins.secrets import ResolvedSecrets, mask_config
from agent_pm.plugins.telemetry import PluginTelemetry

__all__ = ["PluginRecord", "PluginState"]

PluginState = Literal["enabled", "disabled", "failed", "invalid"]
# Worker threads one plugin's sync handlers may occupy at once; a plugin that blocks forever
# exhausts only these.
THREAD_SLOTS_PER_PLUGIN = 4


@dataclass(eq=False)
class PluginRecord:
    """One manifest entry: its plugin class and instance, state, secrets and telemetry."""

    item: ManifestItem
    state: PluginState = "disabled"
    error: str | None = None
    cls: type[PluginBase] | None = None
    config: Any = None
    hooks: tuple[str, ...] = ()
    timeout: float = 10.0
    instance: PluginBase | None = None
    secrets: ResolvedSecrets = field(default_factory=ResolvedSecrets)
    telemetry: PluginTelemetry = field(default_factory=PluginTelemetry)
    limiter: anyio.CapacityLimiter = field(
        default_factory=lambda: anyio.CapacityLimiter(THREAD_SLOTS_PER_PLUGIN)
    )
    # How long its inline async handlers' steps hold the loop; ``None`` while not measured.
    loop_blocks: LoopBlocks | None = None

    @property
    def name(self) -> str:
        return self.item.key

    @property
    def entry(self) -> ManifestEntry | None:
        return self.item.entry

    @property
    def active(self) -> bool:
        return self.state == "enabled" and self.instance is not None

    def metadata(self, *, history: bool = True) -> dict[str, Any]:
        """The JSON-ready metadata dict every surface shows; secrets are masked."""
        data: dict[str, Any] = {
            "name": self.name,
            **self._declared(),
            "active": self.active,
            "state": self.state,
            "invalid": self.state == "invalid",
            "error": self.error,
            "hooks": list(self.hooks),
            "secrets": {
                "required": list(self.cls.required_secrets) if self.cls else [],
                "missing": list(self.secrets.missing),
            },
            "hook_stats": {hook: s.as_dict() for hook, s in self.telemetry.stats.items()},
            "errors": [
                {
                    "timestamp": e.timestamp.isoformat(),
                    "stage": e.stage,
                    "message": e.message,
                    "request_id": e.request_id,
                }
                for e in self.telemetry.errors
            ],
            "timeout_seconds": self.timeout,
            "isolation": isolation_status(self.entry, self.instance),
            "loop_blocks": self.loop_blocks.snapshot() if self.loop_blocks else None,
        }
        if history:
            data["hook_history"] = self.telemetry.samples()
        return data

    def _declared(self) -> dict[str, Any]:
        """What the manifest says, read leniently for entries that failed validation."""
        entry = self.entry
        if entry is not None:
            return {
                "module": entry.module,
                "description": entry.description or (self.cls.description if self.cls else ""),
                "enabled": entry.enabled,
                "config": mask_config(entry.config),
            }
        raw = self.item.raw if isinstance(self.item.raw, dict) else {}
        config = raw.get("config")
        return {
            "module": raw.get("module") if isinstance(raw.get("module"), str) else None,
            "description": raw.get("description")
            if isinstance(raw.get("description"), str)
            else "",
            "enabled": raw.get("enabled") is True,
            "config": mask_config(config) if isinstance(config, dict) else {},
        }
