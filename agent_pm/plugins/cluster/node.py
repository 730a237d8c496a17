"""One node of a cluster: its bus and link to Redis, run for the ``async with`` block."""

from __future__ import annotations

import os
import socket
from types import TracebackType

import anyio
import msgspec

from agent_pm.plugins.cluster.bus import BusCounters, ClusterBus
from agent_pm.plugins.cluster.link import LinkState, RedisLink, Service
from agent_pm.settings import Settings

__all__ = ["ClusterNode", "NodeStatus", "default_node_name"]

# How long start-up waits for Redis before serving on local state (and keeps connecting).
CONNECT_WAIT_SECONDS = 5.0


def default_node_name() -> str:
    """``host:pid``: unique per worker process and readable in a per-node breakdown."""
    return f"{socket.gethostname()}:{os.getpid()}"


class NodeStatus(msgspec.Struct, frozen=True):
    """This node's view of the cluster, for ``/health``."""

    node: str
    link: LinkState
    counters: BusCounters
    pending: int


class ClusterNode:
    """The cluster services of one server process, sharing the Redis at ``settings.redis_url``.

    Entering starts the link and waits up to ``connect_wait`` seconds for Redis; a node that
    cannot reach it serves on local state and keeps trying in the background.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        node: str | None = None,
        services: tuple[Service, ...] = (),
        connect_wait: float = CONNECT_WAIT_SECONDS,
    ) -> None:
        if not settings.redis_url:
            raise ValueError("a cluster node needs a Redis URL (AGENT_PM_REDIS_URL or --redis)")
        self.name = node or settings.node_name or default_node_name()
        self.bus = ClusterBus(self.name, settings.redis_prefix)
        self.link = RedisLink(settings.redis_url, (self.bus, *services))
        self.connect_wait = connect_wait
        self._group: anyio.abc.TaskGroup | None = None

    def status(self) -> NodeStatus:
        counters = msgspec.structs.replace(self.bus.counters)
        return NodeStatus(self.name, self.link.state, counters, self.bus.pending)

    async def __aenter__(self) -> ClusterNode:
        self._group = anyio.create_task_group()
        await self._group.__aenter__()
        await self._group.start(self.link.run)
        with anyio.move_on_after(self.connect_wait):
            await self.link.wait_up()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._group is not None
        self._group.cancel_scope.cancel()
        await self._group.__aexit__(None, None, None)
        self._group = None
