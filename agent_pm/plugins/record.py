"""PluginRecord: what the registry knows about one manifest entry, and its metadata view."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import anyio

from agent_pm.plugins.base import PluginBase
from agent_pm.plugins.dispatch import THREAD_SLOTS_PER_PLUGIN
from agent_pm.plugins.health import Health, HealthThresholds, worst
from agent_pm.plugins.info import PluginInfo, PluginState, SecretsInfo
from agent_pm.plugins.isolated import IsolatedPlugin
from agent_pm.plugins.loopblock import LoopBlocks
from agent_pm.plugins.manifest import ManifestEntry, ManifestItem, PromotionSettings
from agent_pm.plugins.monitor import PluginMonitor
from agent_pm.plugins.placement import Placement
from agent_pm.plugins.quarantine import QuarantineSettings
from agent_pm.plugins.secrets import ResolvedSecrets, mask_config
from agent_pm.plugins.telemetry import HookView, PluginTelemetry, Status
from agent_pm.plugins.windows import RECENT_WINDOW, WindowName, WindowRecorder

__all__ = ["PluginRecord", "PluginState"]


@dataclass(eq=False)
class PluginRecord:
    """One manifest entry: its plugin class and instance, state, secrets and telemetry."""

    item: ManifestItem
    state: PluginState = "disabled"
    error: str | None = None
    cls: type[PluginBase] | None = None
    # The JSON Schema of the class's config, kept from the import so no surface imports again.
    config_schema: dict[str, Any] | None = None
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
    # Where it runs and why; runtime state carried across rebuilds.
    placement: Placement = field(
        default_factory=lambda: Placement.declared_as("inline", PromotionSettings())
    )
    monitor: PluginMonitor = field(init=False)

    def __post_init__(self) -> None:
        entry = self.item.entry
        thresholds = entry.health if entry is not None else HealthThresholds()
        quarantine = entry.quarantine_settings if entry is not None else QuarantineSettings()
        self.monitor = PluginMonitor(thresholds, quarantine, self.telemetry.clock)

    @property
    def name(self) -> str:
        return self.item.key

    @property
    def entry(self) -> ManifestEntry | None:
        return self.item.entry

    @property
    def active(self) -> bool:
        return self.state == "enabled" and self.instance is not None

    @property
    def slow_ms(self) -> float:
        """The latency past which a call counts as slow for health (a share of the timeout)."""
        return self.timeout * 1000 * self.monitor.thresholds.slow_timeout_ratio

    def observe(self, hook: str, status: Status, duration_ms: float) -> tuple[bool, bool]:
        """Judge ``hook`` after a sample: (did its health change, did its breaker)."""
        window = self.telemetry.windows[hook]
        skipping = bool(self.secrets.missing)
        return self.monitor.observe(hook, (status, duration_ms), window, self.slow_ms, skipping)

    def refresh_health(self) -> bool:
        """Re-judge every hook as of now; whether any state changed."""
        if not self.active:
            return False
        telemetry = self.telemetry
        windows = [(hook, telemetry.window(hook)) for hook in self.hooks]
        return self.monitor.refresh(windows, self.slow_ms, bool(self.secrets.missing))

    def hook_health(self, view: Mapping[str, HookView] | None = None) -> dict[str, Health]:
        """Each hook's health, judged from ``view``'s windows (default: this process's own)."""
        if not self.active:
            return {}
        missing = tuple(self.secrets.missing)
        return {
            hook: self.monitor.health(hook, self._window(hook, view), self.slow_ms, missing)
            for hook in self.hooks
        }

    def _window(self, hook: str, view: Mapping[str, HookView] | None) -> WindowRecorder:
        if view is None:
            return self.telemetry.window(hook)
        found = view.get(hook)
        return found.window if found is not None else WindowRecorder(self.telemetry.clock)

    def health(self, hooks: dict[str, Health]) -> Health:
        """The plugin's health: its admin state when not running, else its worst hook's."""
        if self.state == "invalid" or self.state == "failed":
            return Health(self.state, self.error or self.state)
        if not self.active:
            return Health("disabled", "the plugin is disabled")
        state, reason = worst(hooks)
        since = next((h.since for h in hooks.values() if h.state == state), None)
        return Health(state, reason, since)

    def metadata(
        self,
        *,
        history: bool | int = False,
        window: WindowName = RECENT_WINDOW,
        view: Mapping[str, HookView] | None = None,
    ) -> PluginInfo:
        """What every surface shows about this plugin; secrets are masked.

        ``history`` adds the recorded samples: all of them (``True``) or the newest N per hook.
        ``view`` replaces this process's counters and windows (a cluster's sum, or another
        node's), and health is judged from it.
        """
        telemetry = self.telemetry
        hooks = self.hook_health(view)
        if view is None:
            stats = {hook: s.info() for hook, s in telemetry.stats.items()}
            windows = {hook: w.stats(window) for hook, w in telemetry.windows.items()}
        else:
            stats = {hook: v.stats for hook, v in view.items()}
            windows = {hook: v.window.stats(window) for hook, v in view.items()}
        info = PluginInfo(
            name=self.name,
            **self._declared(),
            active=self.active,
            state=self.state,
            invalid=self.state == "invalid",
            error=self.error,
            hooks=list(self.hooks),
            secrets=SecretsInfo(
                list(self.cls.required_secrets) if self.cls else [], list(self.secrets.missing)
            ),
            hook_stats=stats,
            errors=[error.info() for error in telemetry.errors],
            timeout_seconds=self.timeout,
            config_schema=self.config_schema,
            health=self.health(hooks),
            hook_health=hooks,
            quarantine=self.monitor.quarantine_info(),
            window=window,
            hook_windows=windows,
            isolation=self.placement.info(
                self.instance.status() if isinstance(self.instance, IsolatedPlugin) else None,
                self.entry.limits if self.entry is not None else None,
            ),
            loop_blocks=self.loop_blocks.snapshot() if self.loop_blocks else None,
        )
        if history is not False:
            limit = None if history is True else int(history)
            info.hook_history = telemetry.samples(limit=limit)
        return info

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
