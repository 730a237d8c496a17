"""The control plane: one manifest, one revision, shared by every node through Redis.

Redis holds the manifest's text and revision (``{prefix}manifest``). The first node seeds it
from its file; every node keeps its file as a local copy, rewritten whenever the cluster's
manifest changes, and loads its plugins from it. Changes commit here (the registry's
:class:`~agent_pm.plugins.store.ManifestStore`):

- an admin operation commits with a compare-and-set on the revision it was based on, so of two
  nodes committing on the same revision exactly one succeeds and the other gets a conflict;
- an edit of a node's file (its watcher, or a manifest reload) is committed the same way, unless
  its text is the cluster's already;
- without Redis nothing is committed (:class:`ClusterUnavailableError`, HTTP 503).

Each commit appends a notice to a short stream (``{prefix}notices``) that every node blocks on,
so every node applies a newer revision as soon as it is committed; a node also checks the
revision whenever it (re)connects and every few seconds. A stream rather than pub/sub: a notice
sent while a node was between two reads still reaches it. A node that cannot apply a
revision (a plugin module missing on that host, say) keeps running the previous one and reports
the error in its status, which every node publishes under ``{prefix}node:{name}``.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import msgspec
from anyio.abc import TaskStatus

from agent_pm.errors import AgentPMError, ClusterUnavailableError, RevisionConflictError
from agent_pm.plugins.cluster.bus import READ_BLOCK_MS
from agent_pm.plugins.cluster.link import LINK_ERRORS, Redis
from agent_pm.plugins.cluster.report import NodeReport
from agent_pm.plugins.cluster.scripts import COMMIT, SEED
from agent_pm.plugins.manifest import Manifest, write_text
from agent_pm.plugins.registry import PluginRegistry
from agent_pm.plugins.telemetry import now

__all__ = ["ControlPlane"]

logger = logging.getLogger(__name__)
CHECK_SECONDS = 5.0
REPORT_TTL_SECONDS = 15


class ControlPlane:
    """Node ``node``'s side of the shared manifest; the store of its registry."""

    def __init__(self, node: str, prefix: str, path: Path) -> None:
        self.node = node
        self.path = path
        self.applied = 0
        self.error: str | None = None
        self._incoming: int | None = None
        self._keys = (f"{prefix}manifest", f"{prefix}notices")
        self._prefix = prefix
        self._digest: str | None = None
        self._registry: PluginRegistry | None = None
        self._redis: Redis | None = None

    def attach(self, registry: PluginRegistry) -> None:
        """Apply the changes that come from now on to ``registry``."""
        self._registry = registry

    # -- ManifestStore -------------------------------------------------------------------

    async def commit(self, manifest: Manifest, revision: int) -> None:
        text = manifest.dumps()
        await self._commit(text, revision)
        try:
            await anyio.to_thread.run_sync(manifest.save)
        except AgentPMError as exc:
            # Committed: Redis holds it and every node applies it; this file is only a copy.
            logger.error("committed revision %d but not its local copy: %s", self.applied, exc)

    async def adopt(self, manifest: Manifest, revision: int) -> None:
        if manifest.digest != self._digest:
            await self._commit(await anyio.to_thread.run_sync(self.path.read_text), revision)

    def next_revision(self, revision: int) -> int:
        return self._incoming or self.applied

    async def _commit(self, text: str, revision: int) -> None:
        redis = self._redis
        if redis is None:
            raise ClusterUnavailableError("Redis is unreachable: the change was not committed")
        keys = list(self._keys)
        try:
            answer: list[Any] = await redis.register_script(COMMIT)(
                keys=keys, args=[revision, text, self.node]
            )
        except LINK_ERRORS as exc:
            raise ClusterUnavailableError(f"Redis did not confirm the change: {exc}") from None
        done, current = int(answer[0]), int(answer[1])
        if not done:
            raise RevisionConflictError(revision, current)
        self._accept(current, text)

    def _accept(self, revision: int, text: str) -> None:
        self.applied = revision
        self._digest = hashlib.sha256(text.encode()).hexdigest()
        self.error = None

    # -- the service the link runs -------------------------------------------------------

    async def serve(self, redis: Redis, *, task_status: TaskStatus[None]) -> None:
        local = await anyio.to_thread.run_sync(_read, self.path)
        seeded: list[Any] = await redis.register_script(SEED)(
            keys=[self._keys[0]], args=[local, max(self.applied, 1)]
        )
        notices = self._keys[1]
        # Noted before the first look, so no notice falls in between.
        newest = await redis.xrevrange(notices, count=1)
        last: bytes | str = newest[0].identifier if newest else "0-0"
        await self._converge(int(seeded[0]), _text(seeded[1]))
        self._redis = redis
        await self._report(redis)
        async with anyio.create_task_group() as group:
            task_status.started()
            group.start_soon(self._check_every, redis, CHECK_SECONDS)
            while True:
                answer = await redis.xread({notices: last}, count=100, block=READ_BLOCK_MS)
                for entries in (answer or {}).values():
                    last = entries[-1].identifier
                    await self._check(redis)

    def down(self) -> None:
        self._redis = None

    async def _check_every(self, redis: Redis, interval: float) -> None:
        while True:
            await anyio.sleep(interval)
            await self._check(redis)
            await self._report(redis)

    async def _check(self, redis: Redis) -> None:
        revision, text = await redis.hmget(self._keys[0], ["revision", "text"])
        if revision is not None and text is not None:
            await self._converge(int(revision), _text(text))
            await self._report(redis)

    async def _converge(self, revision: int, text: str) -> None:
        """Make the file and the registry run ``revision``, unless this node runs it already."""
        if revision == self.applied and self.error is None:
            return
        digest = hashlib.sha256(text.encode()).hexdigest()
        if digest != await anyio.to_thread.run_sync(_digest, self.path):
            await anyio.to_thread.run_sync(write_text, self.path, text)
        registry = self._registry
        if registry is None:  # starting: the registry loads the file next
            self._accept(revision, text)
            return
        self._digest, self._incoming = digest, revision
        try:
            await registry.reload(only_if_changed=True)
        except AgentPMError as exc:
            self.error = f"revision {revision} not applied: {exc}"
            logger.error("%s", self.error)
            return
        finally:
            self._incoming = None
        self._accept(revision, text)
        # A revision whose text this node already runs changes no plugin, only the number.
        registry.revision = revision

    async def _report(self, redis: Redis) -> None:
        report = NodeReport(self.node, self.applied, self.error, now().isoformat())
        key = f"{self._prefix}node:{self.node}"
        await redis.set(key, msgspec.json.encode(report), ex=REPORT_TTL_SECONDS)
        await redis.sadd(f"{self._prefix}nodes", [self.node])

    async def reports(self) -> list[NodeReport]:
        """Every live node's report, this one's first; raises if Redis is unreachable."""
        redis = self._redis
        if redis is None:
            raise ClusterUnavailableError("Redis is unreachable: other nodes cannot be listed")
        names = sorted(_text(n) for n in await redis.smembers(f"{self._prefix}nodes"))
        raw = await redis.mget([f"{self._prefix}node:{n}" for n in names]) if names else ()
        gone = [n for n, r in zip(names, raw, strict=True) if r is None]
        if gone:
            await redis.srem(f"{self._prefix}nodes", gone)
        reports = [msgspec.json.decode(r, type=NodeReport) for r in raw if r is not None]
        return sorted(reports, key=lambda r: (r.node != self.node, r.node))


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except FileNotFoundError:
        return ""


def _digest(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except FileNotFoundError:
        return None


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
