"""The figure board: every node's hook counters and window buckets in Redis, and their sum.

Each node writes its figures every ``PUBLISH_SECONDS`` to one hash, ``{prefix}figures:{node}``:
one field per plugin (its hooks' :class:`~agent_pm.plugins.cluster.figures.HookFigures`,
msgpack), rewritten only when that plugin recorded a call since, plus the field ``""`` holding
the time of the last write. The whole hash expires ``FIGURES_TTL_SECONDS`` after that write, so
a node that died leaves the cluster's figures within that time; a plugin the node no longer has
is deleted from it. Node names come from the ``{prefix}nodes`` set the control plane keeps.

Reads are on demand: :meth:`FigureBoard.views` fetches the other nodes' hashes, adds this
node's live figures, and merges them (``?node=`` asks for one node's alone). A result is reused
for ``CACHE_SECONDS``, so however many requests ask, a node reads and merges at most once a
second; the cluster's figures are therefore at most about two seconds old (this node's own part
at most one).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import NamedTuple

import anyio
import msgspec
from anyio.abc import TaskStatus

from agent_pm.errors import ClusterUnavailableError, NodeNotFoundError
from agent_pm.plugins.cluster.figures import PluginFigures, collect, decode, encode, merge
from agent_pm.plugins.cluster.link import LINK_ERRORS, Redis
from agent_pm.plugins.registry import PluginRegistry, Views
from agent_pm.plugins.telemetry import PluginTelemetry

__all__ = ["ClusterFigures", "FigureBoard"]

logger = logging.getLogger(__name__)
PUBLISH_SECONDS = 1.0
FIGURES_TTL_SECONDS = 10
CACHE_SECONDS = 1.0
_STAMP = ""


class ClusterFigures(NamedTuple):
    """Figures to show: ``views`` summed over ``nodes`` (one node: that node's alone; ``None``:
    this node's own, live). ``generation`` changes whenever they were read afresh (answers
    built from them may be cached until then).
    """

    views: Views | None
    nodes: list[str]
    generation: int


class FigureBoard:
    """Node ``node``'s figures on the board ``{prefix}figures:*``, and the cluster's sum."""

    def __init__(
        self,
        node: str,
        prefix: str,
        *,
        ttl_seconds: int = FIGURES_TTL_SECONDS,
        cache_seconds: float = CACHE_SECONDS,
    ) -> None:
        self.node = node
        self.ttl_seconds = ttl_seconds
        self.cache_seconds = cache_seconds
        self._prefix = prefix
        self._key = f"{prefix}figures:{node}"
        self._registry: PluginRegistry | None = None
        self._redis: Redis | None = None
        self._written: dict[str, tuple[int, int]] = {}
        self._fetched: tuple[float, dict[str, dict[str, PluginFigures]]] | None = None
        self._merged: dict[str | None, ClusterFigures] = {}
        self._generation = 0
        self._lock = anyio.Lock()
        self.clock: Callable[[], float] = time.time

    def attach(self, registry: PluginRegistry) -> None:
        """Publish ``registry``'s figures from now on."""
        self._registry = registry
        self.clock = registry.clock

    # -- the service the link runs -------------------------------------------------------

    async def serve(self, redis: Redis, *, task_status: TaskStatus[None]) -> None:
        self._written = {}  # Redis may have lost them: write every plugin afresh
        await self._publish(redis)
        self._redis = redis
        task_status.started()
        while True:
            await anyio.sleep(PUBLISH_SECONDS)
            await self._publish(redis)

    def down(self) -> None:
        self._redis = None
        self._fetched = None

    async def publish(self) -> None:
        """Write this node's figures now (they are written every second anyway)."""
        if self._redis is None:
            raise ClusterUnavailableError("Redis is unreachable: figures not published")
        await self._publish(self._redis)

    async def _publish(self, redis: Redis) -> None:
        telemetry = self._registry.telemetry() if self._registry is not None else {}
        marks = {name: _mark(each) for name, each in telemetry.items()}
        fresh = {
            name: encode(collect(telemetry[name]))
            for name, mark in marks.items()
            if self._written.get(name) != mark
        }
        gone = [name for name in self._written if name not in marks]
        fields: dict[str, bytes | str] = {**fresh, _STAMP: repr(time.time())}
        async with redis.pipeline(transaction=False) as pipe:
            pipe.hset(self._key, fields)
            if gone:
                pipe.hdel(self._key, gone)
            pipe.expire(self._key, self.ttl_seconds)
            pipe.sadd(f"{self._prefix}nodes", [self.node])
        self._written = marks

    # -- reads -----------------------------------------------------------------------------

    async def views(self, node: str | None = None) -> ClusterFigures:
        """The cluster's figures, or node ``node``'s alone; raises
        :class:`ClusterUnavailableError` without Redis and :class:`NodeNotFoundError` for a
        node that is not (or no longer) in the cluster."""
        others = await self._others()
        cached = self._merged.get(node)
        if cached is not None and cached.generation == self._generation:
            return cached
        if node == self.node:  # this process's own figures, live
            figures = ClusterFigures(None, [node], self._generation)
        elif node is None:
            views = merge([self._local(), *others.values()], self.clock)
            figures = ClusterFigures(views, [self.node, *others], self._generation)
        elif node in others:
            figures = ClusterFigures(merge([others[node]], self.clock), [node], self._generation)
        else:
            known = ", ".join([self.node, *others])
            raise NodeNotFoundError(f"no node named {node!r} in the cluster (nodes: {known})")
        self._merged[node] = figures
        return figures

    async def breakdown(self) -> dict[str, Views | None]:
        """Each node's figures alone (``None``: this node's own), this node first."""
        others = await self._others()
        return {self.node: None} | {name: (await self.views(name)).views for name in others}

    def _local(self) -> dict[str, PluginFigures]:
        telemetry = self._registry.telemetry() if self._registry is not None else {}
        return {name: collect(each) for name, each in telemetry.items()}

    async def _others(self) -> dict[str, dict[str, PluginFigures]]:
        """Every other live node's figures by name, read at most once per ``CACHE_SECONDS``."""
        async with self._lock:
            fetched = self._fetched
            if fetched is None or time.monotonic() - fetched[0] >= self.cache_seconds:
                fetched = self._fetched = (time.monotonic(), await self._fetch())
                self._generation += 1
            return fetched[1]

    async def _fetch(self) -> dict[str, dict[str, PluginFigures]]:
        redis = self._redis
        if redis is None:
            raise ClusterUnavailableError("Redis is unreachable: other nodes' figures are unknown")
        try:
            members = await redis.smembers(f"{self._prefix}nodes")
            names = sorted(n for n in (_text(m) for m in members) if n != self.node)
            async with redis.pipeline(transaction=False) as pipe:
                requests = [pipe.hgetall(f"{self._prefix}figures:{name}") for name in names]
            hashes = [await request for request in requests]
        except LINK_ERRORS as exc:
            raise ClusterUnavailableError(f"Redis did not answer: {exc}") from None
        return {
            name: _decoded(name, fields)
            for name, fields in zip(names, hashes, strict=True)
            if fields  # expired: the node is gone
        }


def _decoded(node: str, fields: Mapping[bytes, bytes]) -> dict[str, PluginFigures]:
    figures = {}
    for field, value in fields.items():
        name = _text(field)
        if name == _STAMP:
            continue
        try:
            figures[name] = decode(value)
        except (msgspec.DecodeError, msgspec.ValidationError):
            logger.warning("node %s published figures of %s that do not decode", node, name)
    return figures


def _mark(telemetry: PluginTelemetry) -> tuple[int, int]:
    """What changes whenever a plugin records a call: its telemetry (new on reload) and its
    call count."""
    return id(telemetry), sum(stats.invocations for stats in telemetry.stats.values())


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
