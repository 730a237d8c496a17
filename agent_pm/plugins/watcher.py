"""Manifest watching: apply edits made to the manifest file outside the service.

An editor, a config management tool or ``git pull`` changes ``config/plugins.yaml``; the watcher
notices within about a second and applies it like :meth:`PluginRegistry.reload`. Run it in the
app's task group, next to the registry::

    async with PluginRegistry(path, settings) as registry, anyio.create_task_group() as tg:
        await tg.start(watch_manifest, registry)
        ...
        tg.cancel_scope.cancel()

It polls the file's content digest rather than subscribing to file system events. Editors and
``git`` replace the file by renaming a new one over it, and Kubernetes swaps a symlinked
directory; an inotify watch on the file is lost on the first rename and a watch on the directory
sees the swap under another name, and none of it works on network or bind-mounted volumes. Reading
a manifest of a few kilobytes four times a second costs nothing, finds every kind of change,
needs no native dependency and behaves the same on asyncio and trio.

The digest is compared with the one the registry last loaded or wrote, and the registry compares
again under its admin lock (``reload(only_if_changed=True)``), so the service's own writes never
trigger a reload. A missing file is treated as an edit in progress (editors that write a backup by
renaming the original away), never as "remove every plugin".
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import anyio
import anyio.to_thread
from anyio.abc import TaskStatus

from agent_pm.audit import Actor, AuditLog
from agent_pm.audited import AuditedAdmin
from agent_pm.errors import AgentPMError, ManifestError
from agent_pm.plugins.manifest import current_digest
from agent_pm.plugins.registry import PluginRegistry

__all__ = ["ManifestWatcher", "watch_manifest"]

logger = logging.getLogger(__name__)
# Bytes of a file being written in place can be read half-way; a change is applied only once two
# reads this far apart agree.
SETTLE_SECONDS = 0.05


def file_digest(path: Path) -> str | None:
    """SHA-256 of the file at ``path``, or ``None`` while there is none (an edit in progress).

    A file the manifest cannot be (unreadable, too large, not a regular file: a FIFO must not
    block the poll) gets the digest of its refusal instead, so it is reported and audited once,
    as a rejected edit, rather than ignored.
    """
    try:
        digest = current_digest(path)
    except ManifestError as exc:
        return "refused:" + hashlib.sha256(str(exc).encode()).hexdigest()
    return digest or None  # "" is a missing file


class ManifestWatcher:
    """Polls ``registry.manifest_path`` and reloads the registry when its content changes."""

    def __init__(
        self,
        registry: PluginRegistry,
        *,
        poll_interval: float = 0.25,
        audit_log: AuditLog | None = None,
    ) -> None:
        self.registry = registry
        self.audit_log = audit_log
        self.poll_interval = poll_interval
        self.path = registry.manifest_path
        # The content last acted on: a bad edit is reported once, not at every poll.
        self._seen = registry.manifest_digest
        self._polled: anyio.Event | None = None

    @property
    def seen(self) -> str | None:
        """Digest of the file content the watcher last acted on."""
        return self._seen

    async def run(
        self,
        *,
        stop: anyio.Event | None = None,
        task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        """Watch until cancelled or until ``stop`` is set."""
        task_status.started()
        logger.info("watching %s for changes", self.path)
        while stop is None or not stop.is_set():
            await self.check()
            if self._polled is not None:
                self._polled.set()
                self._polled = None
            if stop is None:
                await anyio.sleep(self.poll_interval)
            else:
                with anyio.move_on_after(self.poll_interval):
                    await stop.wait()

    async def polled(self) -> None:
        """Wait until the running watcher has finished its next look at the file."""
        if self._polled is None:
            self._polled = anyio.Event()
        await self._polled.wait()

    async def check(self) -> bool:
        """Look at the file once; reload if it changed. Returns whether a reload was tried."""
        digest = await self._read()
        if digest is None or digest == self._seen:
            return False
        await anyio.sleep(SETTLE_SECONDS)
        if await self._read() != digest:
            return False  # still being written: the next poll looks again
        self._seen = digest
        if digest == self.registry.manifest_digest:
            if self.registry.config_errors:
                # Reverted to what is running: only the report of the bad edit goes away.
                await self._reload()
            return False
        await self._reload()
        return True

    async def _read(self) -> str | None:
        return await anyio.to_thread.run_sync(file_digest, self.path)

    async def _reload(self) -> None:
        registry = self.registry
        before = registry.revision
        try:
            await self._reload_manifest()
        except AgentPMError as exc:
            logger.error(
                "edit of %s not applied, the running plugins are unchanged: %s", self.path, exc
            )
            return
        if registry.revision != before:
            logger.info("applied the edit of %s (revision %d)", self.path, registry.revision)

    async def _reload_manifest(self) -> None:
        if self.audit_log is None:
            await self.registry.reload(only_if_changed=True)
            return
        actor = Actor(f"file:{self.path}", "admin", "watcher")
        await AuditedAdmin(self.registry, self.audit_log, actor).reload(only_if_changed=True)


async def watch_manifest(
    registry: PluginRegistry,
    audit_log: AuditLog | None = None,
    *,
    poll_interval: float = 0.25,
    stop: anyio.Event | None = None,
    task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Apply outside edits of ``registry``'s manifest until cancelled or ``stop`` is set; with
    ``audit_log``, each applied edit is recorded there."""
    watcher = ManifestWatcher(registry, poll_interval=poll_interval, audit_log=audit_log)
    await watcher.run(stop=stop, task_status=task_status)
