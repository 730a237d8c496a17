"""Quarantine: a circuit breaker per plugin x hook that stops calling a hook that keeps failing.

Closed, the breaker counts the calls that ran over a rolling window of ``WINDOW_SECONDS`` (ten
second buckets). When at least ``min_calls`` of them ran and ``failure_ratio`` of those ended in
error or timeout, it opens: the dispatcher then answers that hook with status ``quarantined``
without starting a task or thread. After ``cooldown_seconds`` one real call goes through as a
probe; success closes the breaker (and its cooldown starts over), failure opens it again with
the cooldown doubled, up to ``max_cooldown_seconds``. The state is runtime only: enabling,
reloading or resetting the plugin closes it. In a cluster, a breaker that opens or closes on one
node is followed by every other (:meth:`Breaker.shared`, :meth:`Breaker.follow`).
"""

from __future__ import annotations

from collections import deque
from datetime import UTC, datetime
from typing import Annotated, Final, Literal

import msgspec

__all__ = [
    "WINDOW_SECONDS",
    "Breaker",
    "BreakerState",
    "OpenBreaker",
    "QuarantineInfo",
    "QuarantineSettings",
]

BreakerState = Literal["closed", "open", "probing"]
BUCKET_SECONDS: Final = 10
WINDOW_SECONDS: Final = 300
_SPAN: Final = WINDOW_SECONDS // BUCKET_SECONDS
Seconds = Annotated[float, msgspec.Meta(gt=0, le=86_400)]


class QuarantineSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """When a hook is quarantined and for how long (the manifest's ``quarantine:`` mapping)."""

    enabled: bool = True
    min_calls: Annotated[int, msgspec.Meta(ge=1, le=1_000_000)] = 20
    failure_ratio: Annotated[float, msgspec.Meta(gt=0, le=1)] = 0.5
    cooldown_seconds: Seconds = 30.0
    max_cooldown_seconds: Seconds = 600.0

    def __post_init__(self) -> None:
        if self.max_cooldown_seconds < self.cooldown_seconds:
            raise ValueError("max_cooldown_seconds must be at least cooldown_seconds")


class QuarantineInfo(msgspec.Struct, frozen=True):
    """A breaker as operators see it; times are UTC."""

    state: BreakerState
    reason: str | None = None
    opened_at: datetime | None = None
    next_probe_at: datetime | None = None
    trips: int = 0
    cooldown_seconds: float = 0.0


class OpenBreaker(msgspec.Struct, frozen=True):
    """An open breaker as the nodes of a cluster share it (wall-clock seconds), so every node
    refuses the hook until the same probe time."""

    reason: str
    opened_at: float
    next_probe: float
    cooldown: float
    trips: int


def _at(seconds: float | None) -> datetime | None:
    return None if seconds is None else datetime.fromtimestamp(seconds, UTC)


class Breaker:
    """The circuit breaker of one plugin x hook; times are wall-clock seconds."""

    __slots__ = (
        "_buckets",
        "_failed",
        "_ran",
        "cooldown",
        "next_probe",
        "opened_at",
        "reason",
        "settings",
        "state",
        "trips",
    )

    def __init__(self, settings: QuarantineSettings) -> None:
        self.settings = settings
        self._buckets: deque[list[int]] = deque()  # [bucket index, ran, failed]
        self.reset()

    def reset(self) -> None:
        """Close the breaker and forget its window and trips."""
        self.state: BreakerState = "closed"
        self._buckets.clear()
        self._ran = self._failed = 0
        self.trips = 0
        self.cooldown = self.settings.cooldown_seconds
        self.opened_at: float | None = None
        self.next_probe: float | None = None
        self.reason: str | None = None

    def admit(self, now: float) -> bool:
        """Whether a call may run now; an open breaker past its cooldown lets one probe through."""
        if self.state == "closed":
            return True
        if self.state == "open" and self.next_probe is not None and now >= self.next_probe:
            self.state = "probing"
            return True
        return False

    def rejection(self) -> str:
        """Why a call was not run, with the time of the next probe."""
        probe = _at(self.next_probe)
        when = probe.isoformat(timespec="seconds") if probe else "now"
        if self.state == "probing":
            return f"quarantined: {self.reason}; a probe call is running"
        return f"quarantined: {self.reason}; next probe at {when}"

    def observe(self, now: float, failed: bool) -> bool:
        """Count one call that ran; returns whether the breaker changed state."""
        if self.state != "closed":
            return self._observe_opened(now, failed)
        index = int(now // BUCKET_SECONDS)
        buckets = self._buckets
        if not buckets or buckets[-1][0] < index:
            self._start(index)
        bucket = buckets[-1]
        bucket[1] += 1
        self._ran += 1
        if failed:
            bucket[2] += 1
            self._failed += 1
        elif not self._failed:
            return False  # nothing failed in the window: nothing to weigh
        settings = self.settings
        if self._ran >= settings.min_calls and self._failed >= settings.failure_ratio * self._ran:
            self.reason = (
                f"{self._failed} of {self._ran} calls failed within {WINDOW_SECONDS} s"
                f" (threshold {settings.failure_ratio:.0%} of at least {settings.min_calls})"
            )
            self._open(now, settings.cooldown_seconds)
            return True
        return False

    def _observe_opened(self, now: float, failed: bool) -> bool:
        """A call that ran while the breaker was not closed: a probe, or one that started
        before it opened (not counted)."""
        if self.state == "probing":
            if failed:
                cooldown = min(self.cooldown * 2, self.settings.max_cooldown_seconds)
                self.reason = f"the probe call failed; quarantined again for {cooldown:g} s"
                self._open(now, cooldown)
            else:
                self.reset()
            return True
        return False

    def _start(self, index: int) -> None:
        """Open bucket ``index``, dropping the buckets that left the window."""
        buckets = self._buckets
        while buckets and buckets[0][0] <= index - _SPAN:
            _, ran, fails = buckets.popleft()
            self._ran -= ran
            self._failed -= fails
        buckets.append([index, 0, 0])

    def shared(self) -> OpenBreaker | None:
        """This breaker for other nodes to follow: open, or ``None`` once it closed."""
        if self.state == "closed" or self.opened_at is None or self.next_probe is None:
            return None
        return OpenBreaker(
            self.reason or "", self.opened_at, self.next_probe, self.cooldown, self.trips
        )

    def follow(self, shared: OpenBreaker | None) -> None:
        """Take another node's breaker over: open it alike, or close it (``None``)."""
        if shared is None:
            self.reset()
            return
        self.state = "open"
        self.reason = shared.reason
        self.opened_at, self.next_probe = shared.opened_at, shared.next_probe
        self.cooldown, self.trips = shared.cooldown, shared.trips
        self._buckets.clear()
        self._ran = self._failed = 0

    def _open(self, now: float, cooldown: float) -> None:
        self.state = "open"
        self.trips += 1
        self.cooldown = cooldown
        self.opened_at = now
        self.next_probe = now + cooldown
        self._buckets.clear()
        self._ran = self._failed = 0

    def info(self) -> QuarantineInfo:
        return QuarantineInfo(
            state=self.state,
            reason=self.reason if self.state != "closed" else None,
            opened_at=_at(self.opened_at) if self.state != "closed" else None,
            next_probe_at=_at(self.next_probe) if self.state == "open" else None,
            trips=self.trips,
            cooldown_seconds=self.cooldown,
        )
