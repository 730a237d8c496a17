"""One node of a cluster: its bus and link to Redis, run for the ``async with`` block."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import anyio
import msgspec

from agent_pm.plugins.cluster.board import FigureBoard
from agent_pm.plugins.cluster.breakers import Breakers
from agent_pm.plugins.cluster.bus import ClusterBus
from agent_pm.plugins.cluster.control import ControlPlane
from agent_pm.plugins.cluster.events import ClusterEvents
from agent_pm.plugins.cluster.link import RedisLink
from agent_pm.plugins.cluster.report import NodeStatus
from agent_pm.plugins.registry import PluginRegistry
from agent_pm.settings import Settings

__all__ = ["ClusterNode", "default_node_name"]

# How long start-up waits for Redis before serving on local state (and keeps connecting).
CONNECT_WAIT_SECONDS = 5.0


def default_node_name() -> str:
    """``host:pid``: unique per worker process and readable in a per-node breakdown."""
    return f"{socket.gethostname()}:{os.getpid()}"


class ClusterNode:
    """The cluster services of one server process, sharing the Redis at ``settings.redis_url``.

    ``bus`` and ``control`` are the bus and manifest store of the process's registry, whose
    local copy of the manifest is ``manifest_path``. Entering starts the link and waits up to
    ``connect_wait`` seconds for Redis (and for the local copy to be brought up to date); a node
    that cannot reach it serves on local state and keeps trying in the background.
    """

    def __init__(
        self,
        settings: Settings,
        manifest_path: Path | None = None,
        *,
        node: str | None = None,
        connect_wait: float = CONNECT_WAIT_SECONDS,
    ) -> None:
        if not settings.redis_url:
            raise ValueError("a cluster node needs a Redis URL (AGENT_PM_REDIS_URL or --redis)")
        self.name = node or settings.node_name or default_node_name()
        prefix = settings.redis_prefix
        self.bus = ClusterBus(self.name, prefix)
        path = manifest_path or settings.plugin_config_path
        self.control = ControlPlane(self.name, prefix, path)
        self.board = FigureBoard(self.name, prefix)
        self.events = ClusterEvents(self.name, prefix)
        self.breakers = Breakers(self.events, prefix)
        services = (self.bus, self.control, self.board, self.events)
        self.link = RedisLink(settings.redis_url, services)
        self.connect_wait = connect_wait
        self._group: anyio.abc.TaskGroup | None = None

    def attach(self, registry: PluginRegistry) -> None:
        """Serve ``registry``: apply the cluster's changes and breakers to it, share its own,
        and publish its figures."""
        self.control.attach(registry)
        self.board.attach(registry)
        self.breakers.attach(registry)

    def status(self) -> NodeStatus:
        counters = msgspec.structs.replace(self.bus.counters)
        control = self.control
        return NodeStatus(
            self.name, self.link.state, counters, self.bus.pending, control.applied, control.error
        )

    async def __aenter__(self) -> ClusterNode:
        self._group = anyio.create_task_group()
        await self._group.__aenter__()
        await self._group.start(self.link.run)
        with anyio.move_on_after(self.connect_wait):
            await self.link.wait_up()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._group is not None
        self._group.cancel_scope.cancel()
        await self._group.__aexit__(None, None, None)
        self._group = None
