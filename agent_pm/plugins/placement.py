"""Placement: where one plugin runs (inline or in a worker process), why, and since when.

A plugin's manifest entry declares ``isolation: inline``, ``process`` or ``auto`` (unset follows
``ISOLATION_DEFAULT``). An ``auto`` plugin starts inline and collects evidence against itself:
async handler steps that held the event loop for ``block_ms`` or longer, and sync calls still
running in their threads after their caller stopped waiting. Enough of either is a reason to
promote it to a worker process (:mod:`agent_pm.plugins.promotion` makes the move).

A placement is runtime state, never written to the manifest: it is carried across rebuilds of
the plugin (enable, config update, code reload, manifest reload) as long as the entry's
``isolation`` stays the same, and starts over with the service. A move makes a new placement, so
a move that is rolled back leaves the running one as it was. After an operator moves an ``auto``
plugin back inline, it is not promoted again for ``hold_seconds``, and its evidence starts over.
"""

from __future__ import annotations

import dataclasses
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

import msgspec

from agent_pm.plugins.info import IsolationInfo
from agent_pm.plugins.manifest import Isolation, Limits, PromotionSettings

__all__ = ["Mode", "Mover", "Placement"]

# Where a plugin runs now, and who moved it there.
Mode = Literal["inline", "process"]
Mover = Literal["platform", "operator"]


def _at(seconds: float | None) -> datetime | None:
    return None if seconds is None else datetime.fromtimestamp(seconds, UTC)


@dataclass(eq=False)
class Placement:
    """Where one plugin runs and why; times are wall-clock seconds."""

    declared: Isolation
    settings: PromotionSettings
    mode: Mode
    promoted: bool = False
    why: str | None = None
    when: float | None = None
    by: Mover | None = None
    # No automatic promotion before this time (after an operator's move back inline).
    hold_until: float = 0.0
    promotions: int = 0
    # A promotion has been asked for and not settled yet.
    pending: bool = False
    _blocks: deque[float] = field(default_factory=deque)

    @classmethod
    def declared_as(cls, declared: Isolation, settings: PromotionSettings) -> Placement:
        """A fresh placement: in a worker for ``process``, inline otherwise."""
        return cls(declared, settings, "process" if declared == "process" else "inline")

    def carried(self, declared: Isolation, settings: PromotionSettings) -> Placement:
        """This placement for a rebuilt entry; a changed ``isolation`` starts over (the
        operator's file wins over any runtime move)."""
        if declared != self.declared:
            return Placement.declared_as(declared, settings)
        if settings != self.settings:
            return dataclasses.replace(self, settings=settings, _blocks=deque())
        return self

    @property
    def watching(self) -> bool:
        """Whether misbehaviour promotes the plugin now: ``auto``, inline, nothing pending."""
        return self.declared == "auto" and self.mode == "inline" and not self.pending

    def blocked(self, hook: str, ms: float, now: float) -> str | None:
        """Note a step of ``hook`` that held the loop ``ms`` ms (at least ``block_ms``); the
        reason to promote once there were ``blocks`` of them within ``window_seconds``."""
        if not self.watching or now < self.hold_until:
            return None
        settings, blocks = self.settings, self._blocks
        blocks.append(now)
        while blocks[0] <= now - settings.window_seconds:
            blocks.popleft()
        if len(blocks) < settings.blocks:
            return None
        return (
            f"held the event loop for {settings.block_ms:g} ms or more {len(blocks)} times "
            f"within {settings.window_seconds:g} s (the last: {ms:.0f} ms in hook {hook})"
        )

    def stuck(self, hook: str, threads: int, now: float) -> str | None:
        """The reason to promote when ``threads`` sync calls (the last of ``hook``) still run
        in their threads past their timeout, at least ``stuck_threads`` of them."""
        if not self.watching or now < self.hold_until or threads < self.settings.stuck_threads:
            return None
        return (
            f"{threads} call(s) of its sync handlers still running in their threads past "
            f"their timeout (the last in hook {hook})"
        )

    def moved(self, mode: Mode, by: Mover, why: str | None, now: float) -> Placement:
        """A new placement in ``mode``; an operator's move of an ``auto`` plugin back inline
        holds off automatic promotion for ``hold_seconds``."""
        promoted = by == "platform" and mode == "process"
        held = by == "operator" and mode == "inline" and self.declared == "auto"
        hold = now + self.settings.hold_seconds if held else 0.0
        return Placement(
            self.declared,
            self.settings,
            mode,
            promoted,
            why,
            now,
            by,
            hold,
            self.promotions + promoted,
        )

    def refused(self, now: float) -> None:
        """A promotion could not be made: the evidence starts over, and the next one waits a
        window."""
        self.pending = False
        self._blocks.clear()
        self.hold_until = max(self.hold_until, now + self.settings.window_seconds)

    def info(self, worker: IsolationInfo | None, limits: Limits | None) -> IsolationInfo:
        """The ``isolation`` block of the metadata; ``worker`` is the running worker's state."""
        if worker is None:
            worker = IsolationInfo()
            if self.mode == "process":
                limits = limits or Limits()
                worker = IsolationInfo(
                    state="stopped", memory_mb=limits.memory_mb, cpu_seconds=limits.cpu_seconds
                )
        return msgspec.structs.replace(
            worker,
            mode=self.mode,
            declared=self.declared,
            promoted=self.promoted,
            why=self.why,
            when=_at(self.when),
            by=self.by,
            promotions=self.promotions,
            hold_until=_at(self.hold_until) if self.hold_until else None,
        )
