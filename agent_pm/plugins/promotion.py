"""Automatic promotion: moving a misbehaving ``isolation: auto`` plugin to a worker process.

The registry tells the :class:`Promoter` of every loop-holding step past a plugin's
``block_ms`` (loop-block attribution) and of every sync call that timed out; the plugin's
:class:`~agent_pm.plugins.placement.Placement` weighs the evidence. Once it gives a reason, the
move runs in the background as the platform's own admin operation: the same sequence as a
reload (the worker is started first; if it cannot start, the inline instance keeps running and
the next attempt waits a window), recorded in the audit log with actor ``platform`` and the
reason, and announced on the bus like any admin change.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from agent_pm.audit import Actor, AuditLog
from agent_pm.errors import AgentPMError
from agent_pm.plugins.background import Background
from agent_pm.plugins.dispatch import stuck_threads

if TYPE_CHECKING:
    from agent_pm.plugins.record import PluginRecord
    from agent_pm.plugins.registry import PluginRegistry

__all__ = ["PLATFORM", "Promoter"]

logger = logging.getLogger(__name__)
# Who the audit log names for the platform's own moves.
PLATFORM = Actor("platform", "admin", "platform")


class Promoter:
    """Promotes the misbehaving ``auto`` plugins of one registry, each move audited."""

    def __init__(
        self,
        registry: PluginRegistry,
        audit_log: AuditLog,
        background: Background,
        clock: Callable[[], float],
    ) -> None:
        self._registry = registry
        self.audit_log = audit_log
        self._background = background
        self._clock = clock

    def blocked(self, plugin: str, hook: str, ms: float) -> None:
        """A step of ``plugin``'s ``hook`` held the loop ``ms`` ms, past its ``block_ms``."""
        record = self._registry.record_of(plugin)
        if record is not None:
            self._consider(record, record.placement.blocked(hook, ms, self._clock()))

    def timed_out(self, record: PluginRecord, hook: str) -> None:
        """A sync call of ``record``'s ``hook`` ended at its timeout or deadline."""
        threads = stuck_threads(record.limiter)
        if threads:
            self._consider(record, record.placement.stuck(hook, threads, self._clock()))

    def _consider(self, record: PluginRecord, reason: str | None) -> None:
        if reason is None:
            return
        record.placement.pending = True
        if not self._background.start(self._promote, record.name, reason):
            record.placement.pending = False

    async def _promote(self, name: str, reason: str) -> None:
        # Imported here: agent_pm.audited imports this package (its metadata structs).
        from agent_pm.audited import AuditedAdmin

        admin = AuditedAdmin(self._registry, self.audit_log, PLATFORM)
        try:
            info = await admin.set_isolation(name, "process", reason=reason, by="platform")
        except AgentPMError as exc:
            logger.warning("plugin %s was not moved to a worker process: %s", name, exc)
            record = self._registry.record_of(name)
            if record is not None:
                record.placement.refused(self._clock())
        else:
            if info.isolation.promoted:
                logger.warning("plugin %s moved to a worker process: it %s", name, reason)
        finally:
            record = self._registry.record_of(name)
            if record is not None:
                record.placement.pending = False
