"""Cluster-wide quarantine: a breaker that opens or closes on one node does so on every node.

The registry tells this topic whenever one of its breakers opens (the hook failed too often, or
a probe failed) or closes (a probe succeeded, an operator reset it, an admin change closed it).
The change goes out as a ``breaker`` event, which every other node follows at once
(:meth:`~agent_pm.plugins.registry.PluginRegistry.follow_breaker`): the same reason and the same
next probe time, so every node refuses the hook until then. Each node still lets its own probe
through when the time comes, and whichever probe ends first opens or closes the breaker for all.

Redis keeps the open breakers in the hash ``{prefix}breakers`` (one field per plugin and hook),
so a node that starts or reconnects opens them too, and shares the ones it opened while cut off
(an open breaker wins over a closed one at that moment: a reset made elsewhere during an outage
must be made again).
"""

from __future__ import annotations

from typing import Any

import msgspec

from agent_pm.plugins.cluster.events import ClusterEvents
from agent_pm.plugins.cluster.link import Redis
from agent_pm.plugins.quarantine import OpenBreaker
from agent_pm.plugins.registry import PluginRegistry

__all__ = ["BreakerChange", "Breakers"]


class BreakerChange(msgspec.Struct, frozen=True):
    """A breaker that opened (``breaker``) or closed (``None``) on some node."""

    plugin: str
    hook: str
    breaker: OpenBreaker | None = None

    @property
    def field(self) -> str:
        return f"{self.plugin}\n{self.hook}"


_decode = msgspec.json.Decoder(BreakerChange).decode


class Breakers:
    """The ``breaker`` topic of one node's :class:`ClusterEvents`."""

    kind = "breaker"

    def __init__(self, events: ClusterEvents, prefix: str) -> None:
        self._events = events
        self._key = f"{prefix}breakers"
        self._registry: PluginRegistry | None = None
        self._stored: list[BreakerChange] = []
        events.add(self)

    def attach(self, registry: PluginRegistry) -> None:
        """Share ``registry``'s breakers from now on, and open those the cluster has open."""
        self._registry = registry
        registry.breaker_changed = self._changed
        for change in self._stored:
            self.apply_change(change)

    def _changed(self, plugin: str, hook: str, breaker: OpenBreaker | None) -> None:
        self._events.send(self.kind, msgspec.json.encode(BreakerChange(plugin, hook, breaker)))

    async def join(self, redis: Redis) -> None:
        stored = await redis.hgetall(self._key)
        changes = []
        for value in stored.values():
            try:
                changes.append(_decode(value))
            except ValueError:
                continue  # another version's record: its breaker is left to that version
        self._stored = changes
        registry = self._registry
        if registry is None:
            return  # opened when the registry is attached
        for plugin, hook, breaker in registry.open_breakers():
            self._changed(plugin, hook, breaker)
        for change in changes:
            self.apply_change(change)

    def store(self, pipe: Any, payload: bytes) -> None:
        change = _decode(payload)
        if change.breaker is None:
            pipe.hdel(self._key, [change.field])
        else:
            pipe.hset(self._key, {change.field: payload})

    def apply(self, payload: bytes) -> None:
        self.apply_change(_decode(payload))

    def apply_change(self, change: BreakerChange) -> None:
        if self._registry is not None:
            self._registry.follow_breaker(change.plugin, change.hook, change.breaker)
