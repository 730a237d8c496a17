"""Health: the state and human-readable reason of every plugin and plugin x hook.

A hook is judged from its recent window (``RECENT_WINDOW``, five minutes) against the plugin's
:class:`HealthThresholds`, set per plugin under ``health:`` in the manifest:

* ``quarantined`` while its circuit breaker is open (``agent_pm.plugins.quarantine``);
* ``skipping`` while the plugin misses required secrets, so every call is skipped;
* ``idle`` with no call in the window;
* ``failing`` when at least ``min_calls`` calls ran and ``failing_error_ratio`` of them failed
  (error or timeout);
* ``degraded`` when ``degraded_error_ratio`` of them failed, more than 5 % ran slower than
  ``slow_timeout_ratio`` of the hook's timeout (its p95 is past that), or any call failed
  among fewer than ``min_calls``;
* ``healthy`` otherwise.

A plugin that is not enabled is ``disabled``, ``invalid`` or ``failed`` (lifecycle); an enabled
one takes its worst hook's state, in the order of ``SEVERITY``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Final, Literal

import msgspec

from agent_pm.plugins.windows import RECENT_WINDOW, Recent

__all__ = [
    "SEVERITY",
    "Health",
    "HealthState",
    "HealthThresholds",
    "classify",
    "explain",
    "worst",
]

HealthState = Literal[
    "healthy",
    "degraded",
    "failing",
    "skipping",
    "quarantined",
    "idle",
    "disabled",
    "invalid",
    "failed",
]
# Worst first: a plugin shows the first state any of its hooks is in.
SEVERITY: Final[tuple[HealthState, ...]] = (
    "quarantined",
    "failing",
    "skipping",
    "degraded",
    "healthy",
    "idle",
)
Ratio = Annotated[float, msgspec.Meta(ge=0, le=1)]
# Share of calls past the slow latency that puts p95 past it.
SLOW_SHARE: Final = 0.05


class HealthThresholds(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """When a hook counts as degraded or failing (the manifest's ``health:`` mapping)."""

    degraded_error_ratio: Ratio = 0.05
    failing_error_ratio: Ratio = 0.5
    slow_timeout_ratio: Annotated[float, msgspec.Meta(gt=0, le=1)] = 0.8
    min_calls: Annotated[int, msgspec.Meta(ge=1, le=1_000_000)] = 10

    def __post_init__(self) -> None:
        if self.failing_error_ratio < self.degraded_error_ratio:
            raise ValueError("failing_error_ratio must be at least degraded_error_ratio")


class Health(msgspec.Struct, frozen=True):
    """A state, why, and since when (``None``: since the plugin was loaded)."""

    state: HealthState
    reason: str
    since: datetime | None = None


def classify(
    recent: Recent,
    thresholds: HealthThresholds,
    *,
    skipping: bool = False,
    quarantined: bool = False,
) -> HealthState:
    """The state of one hook from its recent window; cheap enough to run per sample."""
    if quarantined:
        return "quarantined"
    if skipping:
        return "skipping"
    ran, failed = recent.ran, recent.failed
    if not ran:
        return "idle"
    if ran < thresholds.min_calls:
        return "degraded" if failed else "healthy"
    if failed >= thresholds.failing_error_ratio * ran:
        return "failing"
    if failed and failed >= thresholds.degraded_error_ratio * ran:
        return "degraded"
    return "degraded" if recent.slow > SLOW_SHARE * ran else "healthy"


def explain(state: HealthState, recent: Recent, slow_ms: float, detail: str | None = None) -> str:
    """A sentence saying why a hook is in ``state``; ``detail`` carries the quarantine or
    missing-secrets reason."""
    window = RECENT_WINDOW
    if state in ("quarantined", "skipping"):
        return detail or state
    if state == "idle":
        if recent.calls:
            return f"no call ran in the last {window} ({recent.calls} not run)"
        return f"no calls in the last {window}"
    failed, ran = recent.failed, recent.ran
    if not failed and state == "degraded":
        return f"p95 above {slow_ms:g} ms in the last {window}"
    if not failed:
        return f"{ran} calls ran in the last {window}, none failed"
    return f"{failed} of {ran} calls failed in the last {window} ({failed / ran:.0%})"


def worst(states: dict[str, Health]) -> tuple[HealthState, str]:
    """The worst hook state of a plugin, with that hook's name in the reason."""
    if not states:
        return "idle", "no hooks"
    hook, health = min(states.items(), key=lambda item: SEVERITY.index(item[1].state))
    if len(states) == 1:
        return health.state, health.reason
    return health.state, f"{hook}: {health.reason}"
