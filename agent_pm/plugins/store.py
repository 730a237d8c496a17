"""Where the registry commits manifest changes: the file itself, or a cluster's shared copy.

An admin operation builds and validates its candidate, then *commits* it through the registry's
:class:`ManifestStore`, and only then swaps it in. The embedded :class:`FileStore` writes the file
atomically, refusing if the file was edited outside the service meanwhile. A cluster node's store
commits to Redis with a compare-and-set on the revision and keeps the file as a local copy.
"""

from __future__ import annotations

from typing import Protocol

import anyio.to_thread

from agent_pm.errors import ManifestChangedError
from agent_pm.plugins.manifest import Manifest, current_digest

__all__ = ["FileStore", "ManifestStore"]


class ManifestStore(Protocol):
    """The commit step of every change to the manifest."""

    async def commit(self, manifest: Manifest, revision: int) -> None:
        """Make ``manifest``, based on ``revision``, the stored one, or raise and change nothing."""

    async def adopt(self, manifest: Manifest, revision: int) -> None:
        """``manifest`` was read from the file, edited outside the service: store it too."""

    def next_revision(self, revision: int) -> int:
        """The registry's revision after a change made at ``revision``."""


class FileStore:
    """The manifest file is the store; the revision counts changes since the registry started."""

    async def commit(self, manifest: Manifest, revision: int) -> None:
        await anyio.to_thread.run_sync(_write, manifest, revision)

    async def adopt(self, manifest: Manifest, revision: int) -> None:
        """Nothing to do: the file already holds it."""

    def next_revision(self, revision: int) -> int:
        return revision + 1


def _write(manifest: Manifest, revision: int) -> None:
    # ``manifest`` is a copy of the one last loaded or written and carries its digest: if the
    # file no longer has it, someone edited it since, and writing would lose their edit.
    if current_digest(manifest.path) != manifest.digest:
        raise ManifestChangedError(revision)
    manifest.save()
