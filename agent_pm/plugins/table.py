"""The dispatch table: which handlers each hook reaches, and the calls still using it.

The registry swaps in a new table on every change. An instance taken out of service keeps
answering the calls that started before the swap; it is stopped (``on_disable``) only once the
old table has drained, so a plugin never has its clients closed under a call in flight.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable

import anyio

from agent_pm.plugins.dispatch import Target
from agent_pm.plugins.isolated import IsolatedPlugin
from agent_pm.plugins.record import PluginRecord

__all__ = ["DispatchTable"]


class DispatchTable:
    """An immutable hook → targets map with a count of the calls in flight through it."""

    __slots__ = ("_idle", "_previous", "inflight", "targets")

    def __init__(
        self, records: Iterable[PluginRecord] = (), previous: DispatchTable | None = None
    ) -> None:
        targets: dict[str, list[Target]] = {}
        for record in records:
            if record.active and record.instance is not None:
                for hook, target in _targets_of(record):
                    targets.setdefault(hook, []).append(target)
        self.targets = {hook: tuple(found) for hook, found in targets.items()}
        self.inflight = 0
        self._idle: anyio.Event | None = None
        # Calls still running through older tables may use instances this one dropped.
        self._previous = previous if previous is not None and previous.busy() else None

    def busy(self) -> bool:
        """Whether a call is in flight through this table or one it replaced."""
        return self.inflight > 0 or (self._previous is not None and self._previous.busy())

    def get(self, hook: str, exclude: str | None = None) -> tuple[Target, ...]:
        """The targets of ``hook``, without plugin ``exclude`` (an emitter)."""
        found = self.targets.get(hook, ())
        return tuple(t for t in found if t.plugin != exclude) if exclude else found

    def enter(self) -> None:
        self.inflight += 1

    def leave(self) -> None:
        self.inflight -= 1
        if not self.inflight and self._idle is not None:
            self._idle.set()

    async def drained(self) -> None:
        """Wait until no call uses this table or those it replaced."""
        table: DispatchTable | None = self
        while table is not None:
            if table.inflight:
                table._idle = anyio.Event()
                await table._idle.wait()
            table = table._previous


def _targets_of(record: PluginRecord) -> Iterable[tuple[str, Target]]:
    missing = record.secrets.missing
    skip = f"missing secrets: {', '.join(missing)}" if missing else None
    isolated = isinstance(record.instance, IsolatedPlugin)  # its steps run in its own loop
    for hook in record.hooks:
        handler = getattr(record.instance, hook)
        is_async = inspect.iscoroutinefunction(handler)
        blocks = record.loop_blocks
        steps = blocks.steps(hook) if is_async and blocks is not None and not isolated else None
        yield (
            hook,
            Target(
                record.name,
                handler,
                is_async,
                record.timeout,
                record.limiter,
                skip,
                record.secrets.redactor,
                steps=steps,
            ),
        )
