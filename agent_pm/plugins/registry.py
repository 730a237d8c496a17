"""PluginRegistry: plugin states, hook dispatch and the admin operations that change them.

Admin operations are serialized by one lock. Each builds and validates its candidate first
(config, import, instance, lifecycle), then writes the manifest atomically, and only then swaps
the candidate in: a failure at any step leaves the previous state running and says why.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from pathlib import Path
from types import TracebackType
from typing import Any

import anyio
import anyio.from_thread
import anyio.lowlevel
import anyio.to_thread

from agent_pm.errors import (
    AgentPMError,
    EmitLoopError,
    InstallRefusedError,
    LifecycleError,
    ManifestError,
    PluginExistsError,
    PluginLoadError,
    PluginNotFoundError,
    ReplayError,
    RevisionConflictError,
    ShuttingDownError,
)
from agent_pm.plugins.background import Background
from agent_pm.plugins.base import Emitter, PluginBase
from agent_pm.plugins.bus import Bus, StateChange
from agent_pm.plugins.discovery import CatalogueEntry, discover_plugins
from agent_pm.plugins.dispatch import Dispatcher, HookResult, Target
from agent_pm.plugins.lifecycle import Lifecycle
from agent_pm.plugins.loader import (
    fresh_import,
    handler_hooks,
    import_plugin_class,
    validate_config,
)
from agent_pm.plugins.manifest import Manifest, ManifestItem, to_plain
from agent_pm.plugins.record import PluginRecord
from agent_pm.plugins.recorder import FailureRecorder
from agent_pm.plugins.replay import Replays
from agent_pm.plugins.secrets import redact, unmask_config
from agent_pm.plugins.store import FileStore, ManifestStore
from agent_pm.plugins.table import DispatchTable
from agent_pm.plugins.telemetry import HookSample, PluginTelemetry, Status, now
from agent_pm.settings import Settings

__all__ = ["PluginRegistry"]

logger = logging.getLogger(__name__)
BUILTIN_PACKAGE = "agent_pm.plugins.builtin"
_emit_depth: contextvars.ContextVar[int] = contextvars.ContextVar("agent_pm_emit_depth", default=0)


class PluginRegistry(Emitter):
    """The plugins of one manifest; an async context manager that owns their lifecycle.

    ``async with PluginRegistry(path, settings) as registry:`` loads the manifest and enables the
    enabled entries; leaving the block disables them and waits for background work.
    """

    def __init__(
        self,
        manifest_path: Path | str | None = None,
        settings: Settings | None = None,
        *,
        bus: Bus | None = None,
        store: ManifestStore | None = None,
        max_emit_depth: int = 8,
        max_background: int = 1_000,
    ) -> None:
        self.settings = settings or Settings.from_env()
        self.manifest_path = Path(manifest_path or self.settings.plugin_config_path)
        self.bus = bus or Bus()
        self.store: ManifestStore = store or FileStore()
        self.revision = 0
        self.config_errors: list[str] = []
        self.max_emit_depth = max_emit_depth
        self._records: dict[str, PluginRecord] = {}
        self._table = DispatchTable()
        self._manifest: Manifest | None = None
        self._life = Lifecycle(self.settings, self)
        self._dispatcher = Dispatcher(self._record_sample)
        self._lock = anyio.Lock()
        self._background = Background(max_background)
        self._task_group: anyio.abc.TaskGroup | None = None
        self.failures = FailureRecorder(self.settings)
        self.replays = Replays(
            self.fire_on,
            self.failures,
            self.settings.replay_rate,
            self.settings.replay_bulk_per_minute,
        )
        # Tasks running a root hook call (not an emit inside one), for cancel_calls.
        self._calls: dict[asyncio.Task[Any], str] = {}
        self._cancelled: set[asyncio.Task[Any]] = set()

    # -- lifecycle of the registry itself ---------------------------------------------------

    async def __aenter__(self) -> PluginRegistry:
        self._task_group = anyio.create_task_group()
        await self._task_group.__aenter__()
        self._background.attach(self._task_group)
        self._task_group.start_soon(self.failures.run)
        try:
            self._manifest = await anyio.to_thread.run_sync(Manifest.load, self.manifest_path)
        except ManifestError as exc:
            self.config_errors = [str(exc)]
            logger.error("manifest %s not loaded: %s", self.manifest_path, exc)
        else:
            for item in self._manifest.items():
                record = await self._life.build(item)
                self._records[record.name] = record
        self._changed(self._records.values())
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        with anyio.CancelScope(shield=True):
            await self._deactivate([r for r in self._records.values() if r.active])
        self._background.close()
        self.failures.close()
        assert self._task_group is not None
        try:
            if isinstance(exc, Exception):
                # The body failed: stop background work and let the error propagate as itself;
                # handed to the task group it would come out wrapped in an ExceptionGroup.
                self._task_group.cancel_scope.cancel()
                await self._task_group.__aexit__(None, None, None)
            else:
                await self._task_group.__aexit__(exc_type, exc, tb)
        finally:
            self._task_group = None
            self.bus.close()

    # -- reads ---------------------------------------------------------------------------

    def get(self, name: str) -> PluginBase | None:
        """The running instance of plugin ``name``, or ``None`` while it is not active."""
        return self._find(name).instance

    def names(self) -> list[str]:
        return list(self._records)

    def list_metadata(self, *, history: bool = True) -> list[dict[str, Any]]:
        """Metadata of every manifest entry, in manifest order; secrets masked."""
        return [record.metadata(history=history) for record in self._records.values()]

    def metadata_for(self, name: str, *, history: bool = True) -> dict[str, Any]:
        return self._find(name).metadata(history=history)

    def history(
        self, name: str, hook: str | None = None, limit: int | None = None
    ) -> dict[str, list[Any]]:
        """Recorded samples of plugin ``name`` per hook, oldest first."""
        return self._find(name).telemetry.samples(hook, limit)

    def active_plugins(self) -> list[tuple[str, PluginBase]]:
        """``(name, instance)`` of every active plugin, in manifest order."""
        return [(r.name, r.instance) for r in self._records.values() if r.instance and r.active]

    def hooks(self) -> list[str]:
        """Every hook at least one active plugin subscribes to."""
        return sorted(self._table.targets)

    def _find(self, name: str) -> PluginRecord:
        try:
            return self._records[name]
        except KeyError:
            raise PluginNotFoundError(f"no plugin named {name!r}") from None

    # -- hook dispatch -------------------------------------------------------------------

    async def fire(self, hook: str, /, **payload: Any) -> list[HookResult]:
        """Run ``hook`` on every active subscribed plugin concurrently; one result each."""
        return await self._dispatch(hook, payload, None)

    def fire_nowait(self, hook: str, /, **payload: Any) -> bool:
        """Fire ``hook`` in the registry's task group; callable from the loop or worker threads.

        Returns ``False`` (and drops the call) when ``max_background`` calls are in flight.
        """
        return self._spawn(hook, payload, None, _emit_depth.get())

    async def emit(self, source: str, hook: str, payload: dict[str, Any]) -> list[HookResult]:
        depth = self._check_emit_depth(source, hook)
        token = _emit_depth.set(depth + 1)
        try:
            return await self._dispatch(hook, payload, source)
        finally:
            _emit_depth.reset(token)

    def emit_nowait(self, source: str, hook: str, payload: dict[str, Any]) -> bool:
        depth = self._check_emit_depth(source, hook)
        return self._spawn(hook, payload, source, depth + 1)

    def _check_emit_depth(self, source: str, hook: str) -> int:
        depth = _emit_depth.get()
        if depth >= self.max_emit_depth:
            message = f"emit of {hook!r} cut at depth {depth}: plugins emit to each other in a loop"
            if source in self._records:
                self._records[source].telemetry.add_error("emit", message)
            raise EmitLoopError(message)
        return depth

    async def _dispatch(
        self, hook: str, payload: dict[str, Any], source: str | None
    ) -> list[HookResult]:
        table = self._table
        task = _root_call_task()
        table.enter()
        if task is not None:
            self._calls[task] = hook
        try:
            results = await self._dispatcher.fire(hook, payload, table.get(hook, source))
        except asyncio.CancelledError:
            if task is None or task not in self._cancelled:
                raise
            self._cancelled.discard(task)
            task.uncancel()
            raise ShuttingDownError(
                "the service is stopping: this hook call was cancelled"
            ) from None
        finally:
            table.leave()
            if task is not None:
                self._calls.pop(task, None)
        if self.failures.recording:
            self.failures.note(hook, payload, results, self.revision)
        return results

    def cancel_calls(self) -> list[str]:
        """Cancel every root hook call in flight; the hooks they were running, one per call.

        Each cancelled handler is recorded as an ``error`` sample ("cancelled"), emits it made go
        with it, and the caller gets :class:`ShuttingDownError`. The service calls this when it
        stops, once in-flight requests have had their time. Calls are tracked on asyncio only.
        """
        hooks = []
        for task, hook in list(self._calls.items()):
            if task not in self._cancelled and not task.done():
                self._cancelled.add(task)
                task.cancel()
                hooks.append(hook)
        return hooks

    async def fire_on(self, name: str, hook: str, payload: dict[str, Any]) -> HookResult:
        """Run ``hook`` on plugin ``name``'s current instance alone (a replay): no other
        subscriber sees the call, and it is not recorded as a new failure."""
        record = self._find(name)
        table = self._table
        target = next((t for t in table.get(hook) if t.plugin == name), None)
        if target is None:
            reason = "is not active" if not record.active else f"does not handle {hook!r}"
            raise ReplayError(f"plugin {name!r} {reason}")
        table.enter()
        try:
            (result,) = await self._dispatcher.fire(hook, payload, (target,))
        finally:
            table.leave()
        return result

    def _spawn(self, hook: str, payload: dict[str, Any], source: str | None, depth: int) -> bool:
        return self._background.start(self._run_background, hook, payload, source, depth)

    async def _run_background(
        self, hook: str, payload: dict[str, Any], source: str | None, depth: int
    ) -> None:
        _emit_depth.set(depth)
        # Cancelled by cancel_calls, the error has no caller: its handlers' samples say so.
        with contextlib.suppress(ShuttingDownError):
            await self._dispatch(hook, payload, source)

    def _record_sample(
        self, target: Target, hook: str, status: Status, duration_ms: float, error: str | None
    ) -> str | None:
        record = self._records.get(target.plugin)
        if error is not None and record is not None:
            error = redact(error, record.secrets.values.values())
        sample = HookSample(
            self.bus.next_seq(), target.plugin, hook, now(), status, duration_ms, error
        )
        if record is not None:
            record.telemetry.add(sample)
        self.bus.publish(sample)
        return error

    # -- admin operations ----------------------------------------------------------------

    @asynccontextmanager
    async def _admin(self, revision: int | None) -> AsyncIterator[None]:
        async with self._lock:
            if revision is not None and revision != self.revision:
                raise RevisionConflictError(revision, self.revision)
            yield

    def _editable_manifest(self) -> Manifest:
        if self._manifest is None:
            raise ManifestError("the manifest failed to load; fix it and reload before editing")
        return self._manifest.copy()

    async def _save(self, manifest: Manifest) -> None:
        await self.store.commit(manifest, self.revision)
        self._manifest = manifest

    async def set_enabled(
        self, name: str, enabled: bool, *, revision: int | None = None
    ) -> dict[str, Any]:
        """Enable or disable plugin ``name``, persist it, and return its metadata."""
        async with self._admin(revision):
            record = self._require_loadable(name)
            if enabled and record.active:
                return record.metadata()
            if not enabled and record.state == "disabled":
                return record.metadata()
            manifest = self._editable_manifest()
            manifest.find(name)["enabled"] = enabled
            if enabled:
                instance = await self._life.start(record, record.config)
                await self._save_or_stop(manifest, record, instance)
                record.instance, record.state, record.error = instance, "enabled", None
            else:
                await self._save(manifest)
                await self._deactivate([record])
            record.item = _reitem(record.item, manifest, name)
            self._changed([record])
            return record.metadata()

    async def update_config(
        self, name: str, config: dict[str, Any], *, revision: int | None = None
    ) -> dict[str, Any]:
        """Replace plugin ``name``'s config (validated; masked secrets keep their stored value)."""
        async with self._admin(revision):
            record = self._require_loadable(name)
            assert record.entry is not None and record.cls is not None
            full = unmask_config(config, record.entry.config)
            converted = validate_config(record.cls, full)
            manifest = self._editable_manifest()
            manifest.find(name)["config"] = to_plain(full)
            old = record.instance if record.active else None
            previous_secrets = record.secrets
            record.secrets = self._life.resolve(record.cls, name, full)
            try:
                instance = None
                if record.entry.enabled:
                    instance = await self._life.start(record, converted)
                await self._save_or_stop(manifest, record, instance)
            except AgentPMError:
                record.secrets = previous_secrets
                raise
            record.item = _reitem(record.item, manifest, name)
            record.config = converted
            if instance is not None:
                record.instance, record.state, record.error = instance, "enabled", None
            if old is not None:
                await self._retire([(record, old)])
            self._changed([record])
            return record.metadata()

    async def reload_plugin(self, name: str, *, revision: int | None = None) -> dict[str, Any]:
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
                    candidate = await self._reloaded(record, cls)
            except LifecycleError:
                self._changed([record])
                raise
            except AgentPMError as exc:
                self._life.note(record, "reload", str(exc))
                self._changed([record])
                raise
            old = record.instance if record.active else None
            self._records[name] = candidate
            if old is not None:
                await self._retire([(candidate, old)])
            self._changed([candidate])
            return candidate.metadata()

    async def _reloaded(self, record: PluginRecord, cls: type[PluginBase]) -> PluginRecord:
        """A record for ``record``'s entry with the re-imported ``cls``, started if enabled."""
        entry = record.entry
        assert entry is not None
        config = validate_config(cls, entry.config)
        candidate = PluginRecord(
            record.item,
            cls=cls,
            config=config,
            hooks=handler_hooks(cls, entry.hooks),
            timeout=self._life.timeout_for(cls, entry.timeout_seconds),
            telemetry=record.telemetry,
            limiter=record.limiter,
        )
        candidate.secrets = self._life.resolve(cls, record.name, entry.config)
        if entry.enabled:
            candidate.instance = await self._life.start(candidate, config)
            try:
                await self._life.call(candidate, candidate.instance, "on_reload")
            except LifecycleError:
                await self._life.stop(candidate, candidate.instance)
                raise
            candidate.state = "enabled"
        return candidate

    async def reload(
        self, *, revision: int | None = None, only_if_changed: bool = False
    ) -> list[dict[str, Any]]:
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
                await self._apply(items)
            except LifecycleError as exc:
                self.config_errors = [f"manifest not applied: {exc}"]
                raise
            self.config_errors = []
            self._manifest = manifest
            return self.list_metadata()

    @property
    def manifest_digest(self) -> str | None:
        """SHA-256 of the manifest as last loaded or written (``""`` for an absent file), or
        ``None`` while no manifest could be loaded."""
        return self._manifest.digest if self._manifest is not None else None

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
                cls = import_plugin_class(item.entry.module)
                handler_hooks(cls, item.entry.hooks)
                validate_config(cls, item.entry.config)
            except AgentPMError as exc:
                problems.append(f"{item.key}: {exc}")
        return problems

    async def _apply(self, items: list[ManifestItem]) -> None:
        """Build the changed entries, then swap them in; undo if a running plugin's successor
        fails to start."""
        previous = self._records
        updated: dict[str, PluginRecord] = {}
        built: list[PluginRecord] = []
        try:
            for item in items:
                old = previous.get(item.key)
                if old is not None and _unchanged(old, item):
                    updated[item.key] = old
                    continue
                telemetry = old.telemetry if old is not None else PluginTelemetry()
                record = await self._life.build(item, telemetry)
                built.append(record)
                updated[item.key] = record
                if record.state == "failed" and old is not None and old.active:
                    raise LifecycleError(f"{item.key}: {record.error}")
        except BaseException:
            with anyio.CancelScope(shield=True):
                for record in built:
                    if record.instance is not None:
                        await self._life.stop(record, record.instance)
            raise
        await self._swap(previous, updated, items)

    async def _swap(
        self,
        previous: dict[str, PluginRecord],
        updated: dict[str, PluginRecord],
        items: list[ManifestItem],
    ) -> None:
        for item in items:
            updated[item.key].item = item
        self._records = updated
        for name, old in previous.items():
            if updated.get(name) is old and old.active and old.instance is not None:
                await self._life.call_quietly(old, old.instance, "on_reload")
        await self._deactivate(
            [old for name, old in previous.items() if updated.get(name) is not old and old.active]
        )
        changed = [r for n, r in updated.items() if previous.get(n) is not r]
        self._changed(changed, removed=[n for n in previous if n not in updated])

    async def remove(self, name: str, *, revision: int | None = None) -> None:
        """Disable plugin ``name`` and delete its manifest entry."""
        async with self._admin(revision):
            record = self._find(name)
            manifest = self._editable_manifest()
            index = next(i.index for i in manifest.items() if i.key == name)
            del manifest.root[index]
            await self._save(manifest)
            await self._deactivate([record] if record.active else [])
            del self._records[name]
            self._changed([], removed=[name])

    async def install(
        self,
        module: str,
        *,
        name: str | None = None,
        enabled: bool = False,
        description: str | None = None,
        config: dict[str, Any] | None = None,
        revision: int | None = None,
        trusted: bool = False,
    ) -> dict[str, Any]:
        """Add a manifest entry for the plugin class at ``module`` (``pkg.mod:Class``).

        Unless ``trusted`` (an entry point from the installed catalogue), the module must match
        ``PLUGIN_INSTALL_ALLOW`` or the built-in package, checked before anything is imported.
        The config is validated before anything is written. If enabling fails, the entry is
        still saved, disabled, with the error recorded.
        """
        async with self._admin(revision):
            if not trusted:
                self._check_install_allowed(module)
            manifest = self._editable_manifest()
            cls = import_plugin_class(module)
            plugin_name = name or cls.name
            if not plugin_name:
                raise PluginLoadError(f"{module} declares no name; pass one")
            if plugin_name in self._records:
                raise PluginExistsError(f"a plugin named {plugin_name!r} already exists")
            entry_config = dict(config or {})
            validate_config(cls, entry_config)
            raw: dict[str, Any] = {"name": plugin_name, "module": module, "enabled": enabled}
            raw["description"] = description if description is not None else cls.description
            # No `hooks` key: the entry follows the class's hooks, also after an upgrade.
            raw["config"] = entry_config
            manifest.root.append(raw)
            items = {item.key: item for item in manifest.items()}
            item = items[plugin_name]
            if item.entry is None:
                raise PluginLoadError(f"cannot install {plugin_name!r}: {item.error}")
            record = await self._life.build(item)
            if enabled and not record.active:
                manifest.find(plugin_name)["enabled"] = False
                record.item = _reitem(item, manifest, plugin_name)
                record.state = "disabled"
            await self._save_or_stop(manifest, record, record.instance)
            self._records[plugin_name] = record
            self._changed([record])
            return record.metadata()

    async def discover_plugins(self) -> list[CatalogueEntry]:
        """The entry-point catalogue, marking what this manifest already configures."""
        configured = [*self._records]
        configured += [r.entry.module for r in self._records.values() if r.entry is not None]
        return await anyio.to_thread.run_sync(discover_plugins, configured)

    async def install_entry_point(
        self,
        entry_point: str,
        *,
        name: str | None = None,
        enabled: bool = False,
        description: str | None = None,
        config: dict[str, Any] | None = None,
        revision: int | None = None,
    ) -> dict[str, Any]:
        """Install the plugin an entry point of the catalogue names; trusted, as it is installed."""
        catalogue = await self.discover_plugins()
        found = next((e for e in catalogue if e.entry_point == entry_point), None)
        if found is None:
            raise PluginNotFoundError(f"no installed entry point named {entry_point!r}")
        if found.error is not None:
            raise PluginLoadError(f"entry point {entry_point!r} is broken: {found.error}")
        return await self.install(
            found.module,
            name=name,
            enabled=enabled,
            description=description,
            config=config,
            revision=revision,
            trusted=True,
        )

    # -- building and running plugins ----------------------------------------------------

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

    async def _save_or_stop(
        self, manifest: Manifest, record: PluginRecord, instance: PluginBase | None
    ) -> None:
        """Commit the manifest; if that fails, stop the candidate instance that was started."""
        try:
            await self._save(manifest)
        except AgentPMError:
            if instance is not None:
                await self._life.stop(record, instance)
            raise

    async def _deactivate(self, records: list[PluginRecord]) -> None:
        """Take ``records`` out of service and stop their instances."""
        retiring = [(r, r.instance) for r in records if r.instance is not None]
        for record in records:
            record.instance, record.state = None, "disabled"
        await self._retire(retiring)

    async def _retire(self, retiring: list[tuple[PluginRecord, PluginBase]]) -> None:
        """Route new calls away from ``retiring`` instances and stop them (``on_disable``).

        While calls that started earlier are still running, the stop waits for them (at most
        the plugin's timeout) in the background, so the admin operation does not.
        """
        if not retiring:
            return
        previous = self._table
        self._table = DispatchTable(self._records.values(), previous)
        if previous.busy() and self._task_group is not None:
            self._task_group.start_soon(self._stop_when_drained, previous, retiring)
            return
        for record, instance in retiring:
            await self._life.stop(record, instance)

    async def _stop_when_drained(
        self, previous: DispatchTable, retiring: list[tuple[PluginRecord, PluginBase]]
    ) -> None:
        with anyio.move_on_after(max(record.timeout for record, _ in retiring)):
            await previous.drained()
        with anyio.CancelScope(shield=True):
            for record, instance in retiring:
                await self._life.stop(record, instance)

    def _changed(self, records: Iterable[PluginRecord], removed: Iterable[str] = ()) -> None:
        """Rebuild the dispatch table, bump the revision and announce the changed plugins."""
        self._table = DispatchTable(self._records.values(), self._table)
        self.revision = self.store.next_revision(self.revision)
        self.failures.track(self._records.values())
        for record in records:
            self.bus.publish(StateChange(self.bus.next_seq(), record.metadata(history=False)))
        for name in removed:
            self.bus.publish(StateChange(self.bus.next_seq(), {"name": name, "state": "removed"}))


def _root_call_task() -> asyncio.Task[Any] | None:
    """The asyncio task of a hook call made outside any handler (``None`` inside an emit, where
    cancelling the root call reaches it, and on other event loops)."""
    if _emit_depth.get():
        return None
    try:
        return asyncio.current_task()
    except RuntimeError:
        return None


def _unchanged(record: PluginRecord, item: ManifestItem) -> bool:
    """Whether ``record`` can stay as it is for ``item``: same entry, and not broken (a plugin
    whose import or start failed is retried, since its code or environment may have changed)."""
    if record.item.entry != item.entry or record.item.error != item.error:
        return False
    return item.entry is None or record.state in ("enabled", "disabled")


def _reitem(item: ManifestItem, manifest: Manifest, name: str) -> ManifestItem:
    """The item for ``name`` as it now stands in ``manifest``."""
    for candidate in manifest.items():
        if candidate.key == name:
            return candidate
    return item
