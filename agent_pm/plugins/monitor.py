"""The runtime health of one plugin: each hook's state since it last changed, and its breaker.

Updated per sample in O(1) (the state alone is judged on the hot path; reasons are written when
metadata is read) and re-judged as time passes, since a window empties without any call.
Nothing here is persisted: a new record (reload) starts afresh, and ``reset`` closes breakers.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import UTC, datetime

from agent_pm.plugins.health import Health, HealthState, HealthThresholds, classify, explain
from agent_pm.plugins.quarantine import Breaker, QuarantineInfo, QuarantineSettings
from agent_pm.plugins.telemetry import Status
from agent_pm.plugins.windows import Recent, WindowRecorder

__all__ = ["PluginMonitor"]

_RAN: frozenset[Status] = frozenset(("success", "error", "timeout"))
_QUIET: frozenset[HealthState] = frozenset(("idle", "healthy"))
_UNKNOWN: tuple[HealthState, float] = ("idle", 0.0)
_UNCHANGED = (False, False)


class PluginMonitor:
    """Hook states and breakers of one plugin; ``clock`` gives wall-clock seconds."""

    def __init__(
        self,
        thresholds: HealthThresholds,
        quarantine: QuarantineSettings,
        clock: Callable[[], float],
    ) -> None:
        self.thresholds = thresholds
        self.quarantine = quarantine
        self.clock = clock
        self.states: dict[str, tuple[HealthState, float]] = {}
        self.breakers: dict[str, Breaker] = {}

    def breaker(self, hook: str) -> Breaker | None:
        """``hook``'s breaker, or ``None`` when quarantine is off for this plugin."""
        if not self.quarantine.enabled:
            return None
        found = self.breakers.get(hook)
        if found is None:
            found = self.breakers[hook] = Breaker(self.quarantine)
        return found

    def quarantined(self, hook: str) -> bool:
        found = self.breakers.get(hook)
        return found is not None and found.state != "closed"

    def observe(
        self,
        hook: str,
        sample: tuple[Status, float],
        window: WindowRecorder,
        slow_ms: float,
        skipping: bool,
    ) -> tuple[bool, bool]:
        """Take one (status, duration) sample into account: (did the hook's state change, did
        its breaker)."""
        status, duration_ms = sample
        now = self.clock()
        tripped = False
        if status in _RAN:
            breaker = self.breaker(hook)
            if breaker is not None:
                tripped = breaker.observe(now, status != "success")
        if (
            not tripped
            and status == "success"
            and duration_ms <= slow_ms
            and self.states.get(hook, _UNKNOWN)[0] == "healthy"
        ):
            return _UNCHANGED  # a quick success cannot make a healthy hook any worse
        state = self._classify(hook, window.recent(slow_ms), skipping)
        return self._set(hook, state, now), tripped

    def refresh(
        self, windows: Iterable[tuple[str, WindowRecorder]], slow_ms: float, skipping: bool
    ) -> bool:
        """Re-judge every hook now (windows empty as time passes); whether any state changed."""
        now = self.clock()
        changed = False
        for hook, window in windows:
            changed |= self._set(hook, self._classify(hook, window.recent(slow_ms), skipping), now)
        return changed

    def reset(self, hook: str | None = None) -> list[str]:
        """Close the breakers of ``hook`` (all when ``None``); the hooks that were open."""
        opened = [
            name
            for name, breaker in self.breakers.items()
            if (hook is None or name == hook) and breaker.state != "closed"
        ]
        for name, breaker in self.breakers.items():
            if hook is None or name == hook:
                breaker.reset()
        return opened

    def health(
        self, hook: str, window: WindowRecorder, slow_ms: float, missing: tuple[str, ...]
    ) -> Health:
        """``hook``'s state with its reason, judged now."""
        recent = window.recent(slow_ms)
        state = self._classify(hook, recent, bool(missing))
        detail = None
        if state == "quarantined":
            detail = self.breakers[hook].rejection()
        elif state == "skipping":
            detail = f"every call is skipped: missing secrets {', '.join(missing)}"
        known, since = self.states.get(hook, ("idle", None))
        # A state nothing recorded yet (the next check will) has no known start.
        return Health(
            state, explain(state, recent, slow_ms, detail), _utc(since if known == state else None)
        )

    def quarantine_info(self) -> dict[str, QuarantineInfo]:
        return {hook: breaker.info() for hook, breaker in self.breakers.items()}

    def _classify(self, hook: str, recent: Recent, skipping: bool) -> HealthState:
        return classify(
            recent, self.thresholds, skipping=skipping, quarantined=self.quarantined(hook)
        )

    def _set(self, hook: str, state: HealthState, now: float) -> bool:
        known = self.states.get(hook)
        if known is not None and known[0] == state:
            return False
        self.states[hook] = (state, now)
        # Between idle and healthy nothing needs an operator: the samples show it, unannounced.
        return {known[0] if known is not None else "idle", state} - _QUIET != set()


def _utc(seconds: float | None) -> datetime | None:
    return None if seconds is None else datetime.fromtimestamp(seconds, UTC)
