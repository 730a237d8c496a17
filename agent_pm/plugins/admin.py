"""The admin operations of the registry, all in one shape.

Every operation (enable, disable, config update, install, remove, reload of one plugin's code
or of the whole manifest, a move in or out of process) runs the same sequence under one lock:

1. **build the candidate**: the changed manifest through :class:`Manifest`'s ``set``/``add``/
   ``remove``, checked exactly as ``Manifest.load`` would read it back, and candidate records
   validated as a load (import, hooks, config, data paths, secrets, secret binding) and started;
2. **commit** the manifest through the registry's store (the file, or a cluster's shared
   copy), when the operation changes it;
3. **swap** the candidates in, retire the instances they replace and announce the change.

Any exception before the swap, expected or not, stops every candidate started so far
(``on_disable``) and leaves the running state, its secrets and config, and the file as they were.
Candidates are new records with their own secrets, so nothing of the running state is touched
before the swap.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypedDict, Unpack

import anyio
import anyio.to_thread

from agent_pm.errors import (
    AgentPMError,
    InstallRefusedError,
    LifecycleError,
    ManifestError,
    PluginExistsError,
    PluginLoadError,
    PluginNotFoundError,
    RevisionConflictError,
)
from agent_pm.plugins.base import PluginBase
from agent_pm.plugins.binding import check_binding
from agent_pm.plugins.discovery import CatalogueEntry, discover_plugins
from agent_pm.plugins.info import PluginInfo
from agent_pm.plugins.lifecycle import Lifecycle
from agent_pm.plugins.loader import fresh_import, import_plugin_class
from agent_pm.plugins.manifest import Manifest, ManifestItem, to_plain
from agent_pm.plugins.placement import Mode, Mover, Placement
from agent_pm.plugins.record import PluginRecord
from agent_pm.plugins.secrets import unmask_config
from agent_pm.plugins.store import ManifestStore
from agent_pm.plugins.windows import RECENT_WINDOW, WindowName
from agent_pm.settings import Settings

__all__ = ["AdminOperations", "InstallOptions"]

BUILTIN_PACKAGE = "agent_pm.plugins.builtin"


class InstallOptions(TypedDict, total=False):
    """What an install may set besides the module: the entry's name (default: the class's),
    whether it starts enabled (default: no), its description and config, and the manifest
    revision the change is based on."""

    name: str | None
    enabled: bool
    description: str | None
    config: dict[str, Any] | None
    revision: int | None


class AdminOperations:
    """The admin half of :class:`~agent_pm.plugins.registry.PluginRegistry`."""

    settings: Settings
    store: ManifestStore
    manifest_path: Path
    revision: int
    config_errors: list[str]
    _records: dict[str, PluginRecord]
    _manifest: Manifest | None
    _life: Lifecycle
    _lock: anyio.Lock
    _started: list[PluginRecord]
    clock: Callable[[], float]

    # Provided by the registry.
    def _find(self, name: str) -> PluginRecord:
        raise NotImplementedError

    def list_metadata(
        self, *, history: bool | int = False, window: WindowName = RECENT_WINDOW
    ) -> list[PluginInfo]:
        raise NotImplementedError

    @property
    def manifest_digest(self) -> str | None:
        raise NotImplementedError

    async def _retire(self, retiring: list[tuple[PluginRecord, PluginBase]]) -> None:
        raise NotImplementedError

    def _changed(self, records: Iterable[PluginRecord], removed: Iterable[str] = ()) -> None:
        raise NotImplementedError

    def _close_breakers(self, record: PluginRecord) -> None:
        raise NotImplementedError

    # -- the sequence --------------------------------------------------------------------

    @asynccontextmanager
    async def _admin(self, revision: int | None) -> AsyncIterator[None]:
        """Hold the admin lock; on any failure, stop the candidates started meanwhile."""
        async with self._lock:
            if revision is not None and revision != self.revision:
                raise RevisionConflictError(revision, self.revision)
            self._started = []
            try:
                yield
            except BaseException:
                with anyio.CancelScope(shield=True):
                    for record in self._started:
                        if record.instance is not None:
                            await self._life.stop(record, record.instance)
                raise
            finally:
                self._started = []

    async def _enabled(self, candidate: PluginRecord) -> PluginRecord:
        """``candidate``, started if its entry is enabled."""
        if candidate.entry is not None and candidate.entry.enabled:
            await self._start(candidate)
        return candidate

    def _validated(
        self,
        item: ManifestItem,
        previous: PluginRecord | None,
        cls: type[PluginBase] | None = None,
        sent: dict[str, Any] | None = None,
        moved: Placement | None = None,
    ) -> PluginRecord:
        """A validated candidate record for ``item``, not started.

        ``sent`` is the config an admin write gave; the secret binding is checked against it.
        ``moved`` is a new placement for it (a move in or out of process).
        """
        candidate = self._life.load(item, previous, cls, moved)
        assert item.entry is not None and candidate.cls is not None
        if sent is not None:
            stored = None
            if previous is not None and previous.entry is not None:
                stored = (previous.entry.config, previous.config)
            new = (item.entry.config, candidate.config)
            check_binding(candidate.cls, sent, new, stored, candidate.secrets)
        return candidate

    async def _start(self, candidate: PluginRecord) -> None:
        self._started.append(candidate)
        await self._life.start(candidate)

    async def _commit(
        self, updated: dict[str, PluginRecord], manifest: Manifest | None
    ) -> list[PluginRecord]:
        """Write ``manifest`` (if given), then make ``updated`` the records; the swapped-in ones.

        Instances no longer in ``updated`` are retired (stopped once their calls drain).
        """
        if manifest is not None:
            await self.store.commit(manifest, self.revision)
            self._manifest = manifest
        previous, self._records = self._records, updated
        self._started = []
        swapped = [r for name, r in updated.items() if previous.get(name) is not r]
        retiring = [
            (old, old.instance)
            for name, old in previous.items()
            if old.instance is not None and old.active and updated.get(name) is not old
        ]
        for old, _ in retiring:
            old.instance, old.state = None, "disabled"
        await self._retire(retiring)
        self._changed(swapped, removed=[name for name in previous if name not in updated])
        return swapped

    def _editable_manifest(self) -> Manifest:
        if self._manifest is None:
            raise ManifestError("the manifest failed to load; fix it and reload before editing")
        return self._manifest.copy()

    def _with(self, name: str, record: PluginRecord) -> dict[str, PluginRecord]:
        return {**self._records, name: record}

    # -- single-plugin operations --------------------------------------------------------

    async def set_enabled(
        self, name: str, enabled: bool, *, revision: int | None = None
    ) -> PluginInfo:
        """Enable or disable plugin ``name``, persist it, and return its metadata."""
        async with self._admin(revision):
            record = self._require_loadable(name)
            if record.active if enabled else record.state == "disabled":
                return record.metadata()
            manifest = self._editable_manifest()
            item = manifest.set(name, enabled=enabled)
            candidate = await self._enabled(self._validated(item, record))
            await self._commit(self._with(name, candidate), manifest)
            return candidate.metadata()

    async def update_config(
        self, name: str, config: dict[str, Any], *, revision: int | None = None
    ) -> PluginInfo:
        """Replace plugin ``name``'s config (validated; masked secrets keep their stored value).

        Changing a destination field keeps no stored secret: they must be given again.
        """
        async with self._admin(revision):
            record = self._require_loadable(name)
            assert record.entry is not None
            full = unmask_config(config, record.entry.config)
            manifest = self._editable_manifest()
            item = manifest.set(name, config=to_plain(full))
            candidate = await self._enabled(self._validated(item, record, sent=config))
            await self._commit(self._with(name, candidate), manifest)
            return candidate.metadata()

    async def reload_plugin(self, name: str, *, revision: int | None = None) -> PluginInfo:
        """Re-import plugin ``name``'s code and swap in a new instance.

        If the new code fails to import, validate or start, the old instance keeps running and
        the error is recorded and raised.
        """
        async with self._admin(revision):
            record = self._find(name)
            entry = record.entry
            if entry is None:
                raise PluginLoadError(
                    f"plugin {name!r} has an invalid manifest entry: {record.error}"
                )
            try:
                with fresh_import(entry.module) as cls:
                    candidate = await self._enabled(self._validated(record.item, record, cls))
                    if candidate.instance is not None:
                        await self._life.call(candidate, candidate.instance, "on_reload")
            except AgentPMError as exc:
                if not isinstance(exc, LifecycleError):  # a lifecycle error is noted already
                    self._life.note(record, "reload", str(exc))
                self._changed([record])
                raise
            await self._commit(self._with(name, candidate), None)
            return candidate.metadata()

    async def set_isolation(
        self,
        name: str,
        mode: Mode,
        *,
        revision: int | None = None,
        reason: str | None = None,
        by: Mover = "operator",
    ) -> PluginInfo:
        """Move plugin ``name`` to a worker process or back inline, without writing the manifest.

        The sequence of a reload: the instance for the new place (for ``process``, its worker)
        is built and started first; if it cannot start, the running one stays and the error is
        raised. A move back inline by an operator holds off automatic promotion for the
        plugin's ``hold_seconds``. The platform's own move (``by="platform"``) is dropped when
        the plugin is no longer an active ``auto`` plugin running inline.
        """
        async with self._admin(revision):
            record = self._require_loadable(name)
            placement = record.placement
            if by == "platform" and not (record.active and placement.declared == "auto"):
                return record.metadata()
            if placement.mode == mode and by == "platform":
                return record.metadata()
            moved = placement.moved(mode, by, reason, self.clock())
            if placement.mode == mode:  # nothing to rebuild: only who decided, and the hold
                record.placement = moved
                self._changed([record])
                return record.metadata()
            candidate = await self._enabled(self._validated(record.item, record, moved=moved))
            await self._commit(self._with(name, candidate), None)
            return candidate.metadata()

    async def remove(self, name: str, *, revision: int | None = None) -> None:
        """Disable plugin ``name`` and delete its manifest entry."""
        async with self._admin(revision):
            self._find(name)
            manifest = self._editable_manifest()
            manifest.remove(name)
            updated = {key: record for key, record in self._records.items() if key != name}
            await self._commit(updated, manifest)

    async def install(
        self, module: str, *, trusted: bool = False, **options: Unpack[InstallOptions]
    ) -> PluginInfo:
        """Add a manifest entry for the plugin class at ``module`` (``pkg.mod:Class``).

        Unless ``trusted`` (an entry point from the installed catalogue), the module must match
        ``PLUGIN_INSTALL_ALLOW`` or the built-in package, checked before anything is imported.
        The entry is validated before anything is written. If enabling fails, the entry is
        still saved, disabled, with the error recorded.
        """
        async with self._admin(options.get("revision")):
            if not trusted:
                self._check_install_allowed(module)
            manifest = self._editable_manifest()
            cls = import_plugin_class(module)
            plugin_name = options.get("name") or cls.name
            if not plugin_name:
                raise PluginLoadError(f"{module} declares no name; pass one")
            if plugin_name in self._records:
                raise PluginExistsError(f"a plugin named {plugin_name!r} already exists")
            raw: dict[str, Any] = {"name": plugin_name, "module": module}
            raw["enabled"] = options.get("enabled", False)
            description = options.get("description")
            raw["description"] = description if description is not None else cls.description
            # No `hooks` key: the entry follows the class's hooks, also after an upgrade.
            raw["config"] = dict(options.get("config") or {})
            item = manifest.add(raw)
            candidate = await self._installed(manifest, item, raw["config"])
            await self._commit(self._with(plugin_name, candidate), manifest)
            return candidate.metadata()

    async def _installed(
        self, manifest: Manifest, item: ManifestItem, sent: dict[str, Any]
    ) -> PluginRecord:
        """The candidate of a new entry; saved disabled, with its error, if it fails to start."""
        candidate = self._validated(item, None, sent=sent)
        if candidate.entry is None or not candidate.entry.enabled:
            return candidate
        try:
            await self._start(candidate)
        except LifecycleError as exc:
            candidate.item = manifest.set(item.key, enabled=False)
            candidate.error = str(exc)
        return candidate

    async def discover_plugins(self) -> list[CatalogueEntry]:
        """The entry-point catalogue, marking what this manifest already configures."""
        configured = [*self._records]
        configured += [r.entry.module for r in self._records.values() if r.entry is not None]
        return await anyio.to_thread.run_sync(discover_plugins, configured)

    async def install_entry_point(
        self, entry_point: str, **options: Unpack[InstallOptions]
    ) -> PluginInfo:
        """Install the plugin an entry point of the catalogue names; trusted, as it is installed."""
        catalogue = await self.discover_plugins()
        found = next((e for e in catalogue if e.entry_point == entry_point), None)
        if found is None:
            raise PluginNotFoundError(f"no installed entry point named {entry_point!r}")
        if found.error is not None:
            raise PluginLoadError(f"entry point {entry_point!r} is broken: {found.error}")
        return await self.install(found.module, trusted=True, **options)

    def _check_install_allowed(self, module: str) -> None:
        module_name = module.partition(":")[0]
        prefixes = (*self.settings.plugin_install_allow, BUILTIN_PACKAGE)
        for prefix in prefixes:
            stem = prefix.rstrip(".")
            if module_name == stem or module_name.startswith(stem + "."):
                return
        raise InstallRefusedError(
            f"module {module_name!r} is not allowed; add its package to PLUGIN_INSTALL_ALLOW"
        )

    def _require_loadable(self, name: str) -> PluginRecord:
        record = self._find(name)
        if record.entry is None or record.cls is None:
            raise PluginLoadError(f"plugin {name!r} is invalid: {record.error}")
        return record

    # -- the whole manifest --------------------------------------------------------------

    async def reload(
        self, *, revision: int | None = None, only_if_changed: bool = False
    ) -> list[PluginInfo]:
        """Re-read the manifest and apply only what changed.

        Unchanged plugins keep their instance and telemetry (``on_reload`` is called on active
        ones); changed entries are rebuilt; removed ones are disabled. The new manifest is checked
        first: if it does not parse, an edited entry does not validate (entry, import, config), or
        a running plugin's new instance fails to start, nothing changes, the reasons are kept in
        ``config_errors`` and the error is raised. With ``only_if_changed``, a file whose content
        is the one already applied (the registry's own write, say) is left alone.
        """
        async with self._admin(revision):
            try:
                manifest = await anyio.to_thread.run_sync(Manifest.load, self.manifest_path)
            except ManifestError as exc:
                self.config_errors = [str(exc)]
                raise
            if only_if_changed and manifest.digest == self.manifest_digest:
                self.config_errors = []
                return self.list_metadata()
            items = list(manifest.items())
            problems = self._rejections(items)
            if problems:
                self.config_errors = problems
                raise ManifestError(f"manifest not applied: {'; '.join(problems)}")
            await self.store.adopt(manifest, self.revision)
            try:
                updated = await self._rebuilt(items)
            except LifecycleError as exc:
                self.config_errors = [f"manifest not applied: {exc}"]
                raise
            previous = self._records
            await self._commit(updated, None)
            for item in items:
                updated[item.key].item = item
            self._manifest = manifest
            self.config_errors = []
            for name, record in updated.items():
                if previous.get(name) is record and record.instance is not None and record.active:
                    # Kept as it is, but an operator's reload starts its quarantine over.
                    self._close_breakers(record)
                    await self._life.call_quietly(record, record.instance, "on_reload")
            return self.list_metadata()

    def _rejections(self, items: list[ManifestItem]) -> list[str]:
        """Why the edited entries among ``items`` cannot be applied; empty when they can."""
        problems: list[str] = []
        for item in items:
            old = self._records.get(item.key)
            if old is not None and old.item.entry == item.entry and old.item.error == item.error:
                continue
            if item.entry is None:
                problems.append(f"{item.key}: {item.error}")
                continue
            try:
                self._life.load(item)
            except AgentPMError as exc:
                problems.append(f"{item.key}: {exc}")
        return problems

    async def _rebuilt(self, items: list[ManifestItem]) -> dict[str, PluginRecord]:
        """The records for ``items``: unchanged ones kept, changed ones built (started when
        enabled); ``LifecycleError`` if a running plugin's successor fails to start."""
        updated: dict[str, PluginRecord] = {}
        for item in items:
            old = self._records.get(item.key)
            if old is not None and _unchanged(old, item):
                updated[item.key] = old
                continue
            record = await self._life.build(item, old)
            self._started.append(record)
            updated[item.key] = record
            if record.state == "failed" and old is not None and old.active:
                raise LifecycleError(f"{item.key}: {record.error}")
        return updated


def _unchanged(record: PluginRecord, item: ManifestItem) -> bool:
    """Whether ``record`` can stay as it is for ``item``: same entry, and not broken (a plugin
    whose import or start failed is retried, since its code or environment may have changed)."""
    if record.item.entry != item.entry or record.item.error != item.error:
        return False
    return item.entry is None or record.state in ("enabled", "disabled")
