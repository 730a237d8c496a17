"""PluginRegistry: plugin states and hook dispatch; the admin operations are in :mod:`.admin`.

A root call (``fire``) and every ``emit`` it leads to share one budget of handler calls and are
cut by depth, so plugins emitting to each other can neither loop nor fan out without bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import dataclasses
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import anyio
import anyio.from_thread
import anyio.lowlevel
import anyio.to_thread

from agent_pm.audit import AuditLog
from agent_pm.errors import (
    EmitBudgetError,
    EmitLoopError,
    ManifestError,
    PluginNotFoundError,
    ReplayError,
    ShuttingDownError,
)
from agent_pm.plugins import context
from agent_pm.plugins.admin import AdminOperations
from agent_pm.plugins.background import Background
from agent_pm.plugins.base import Emitter, PluginBase
from agent_pm.plugins.bus import Bus, StateChange
from agent_pm.plugins.dispatch import Dispatcher, HookResult, Target
from agent_pm.plugins.info import PluginInfo
from agent_pm.plugins.lifecycle import Lifecycle
from agent_pm.plugins.manifest import Manifest
from agent_pm.plugins.promotion import Promoter
from agent_pm.plugins.quarantine import OpenBreaker
from agent_pm.plugins.record import PluginRecord
from agent_pm.plugins.recorder import FailureRecorder
from agent_pm.plugins.replay import Replays
from agent_pm.plugins.store import FileStore, ManifestStore
from agent_pm.plugins.table import DispatchTable
from agent_pm.plugins.telemetry import (
    HistoryEntry,
    HookSample,
    HookView,
    PluginTelemetry,
    Status,
    now,
)
from agent_pm.plugins.tracing import tracing_for
from agent_pm.plugins.windows import RECENT_WINDOW, WindowName, WindowRecorder
from agent_pm.settings import Settings

__all__ = ["PluginRegistry", "Views"]

# Hook figures per plugin and hook, to show instead of this process's own (a cluster's sum).
Views = Mapping[str, Mapping[str, HookView]]

logger = logging.getLogger(__name__)
# How often health is re-judged without calls (a window empties, a cooldown ends).
HEALTH_CHECK_SECONDS = 5.0


@dataclass(slots=True)
class _Budget:
    """Handler calls a root call and the emits it leads to may still make."""

    left: int


@dataclass(frozen=True, slots=True)
class _Chain:
    """Where a call stands in its root call's chain of emits."""

    depth: int
    budget: _Budget


_chain: contextvars.ContextVar[_Chain | None] = contextvars.ContextVar(
    "agent_pm_emit_chain", default=None
)


class PluginRegistry(AdminOperations, Emitter):
    """The plugins of one manifest; an async context manager that owns their lifecycle.

    ``async with PluginRegistry(path, settings) as registry:`` loads the manifest and enables the
    enabled entries; leaving the block disables them and waits for background work.
    ``clock`` (wall-clock seconds) times the telemetry windows, health, quarantine and
    promotion. ``audit_log`` records the platform's own moves of ``isolation: auto`` plugins
    (default: the audit log under ``DATA_DIR``).
    """

    def __init__(
        self,
        manifest_path: Path | str | None = None,
        settings: Settings | None = None,
        *,
        bus: Bus | None = None,
        store: ManifestStore | None = None,
        max_emit_depth: int = 8,
        max_emit_calls: int = 1_000,
        max_background: int = 1_000,
        tracer_provider: Any = None,
        clock: Callable[[], float] = time.time,
        audit_log: AuditLog | None = None,
    ) -> None:
        self.settings = settings or Settings.from_env()
        self.manifest_path = Path(manifest_path or self.settings.plugin_config_path)
        self.bus = bus or Bus()
        self.store: ManifestStore = store or FileStore()
        self.revision = 0
        self.config_errors: list[str] = []
        self.max_emit_depth = max_emit_depth
        self.max_emit_calls = max_emit_calls
        self.clock = clock
        self._started: list[PluginRecord] = []
        self._records: dict[str, PluginRecord] = {}
        # (plugin, hook) pairs whose breaker is not closed: fire consults breakers only for them.
        self._quarantined: set[tuple[str, str]] = set()
        self._table = DispatchTable()
        self._manifest: Manifest | None = None
        self._background = Background(max_background)
        self.promoter = Promoter(
            self,
            audit_log or AuditLog(self.settings.data_dir / "audit"),
            self._background,
            clock,
        )
        self._life = Lifecycle(self.settings, self, self._background, clock, self.promoter.blocked)
        self._tracing = tracing_for(self.settings.tracing, tracer_provider)
        self._dispatcher = Dispatcher(self._record_sample, self._tracing)
        self._lock = anyio.Lock()
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
        self._health_watch: anyio.CancelScope | None = None
        # Told whenever a breaker opens or closes here (a cluster shares it with other nodes).
        self.breaker_changed: Callable[[str, str, OpenBreaker | None], None] | None = None

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
        # Made here, in the event loop (anyio needs one), and cancelled on exit.
        self._health_watch = anyio.CancelScope()
        self._task_group.start_soon(self._watch_health, self._health_watch)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._health_watch is not None:
            self._health_watch.cancel()
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

    def list_metadata(
        self,
        *,
        history: bool | int = False,
        window: WindowName = RECENT_WINDOW,
        views: Views | None = None,
    ) -> list[PluginInfo]:
        """Metadata of every manifest entry, in manifest order; secrets masked.

        ``window`` picks the windowed stats; ``history`` adds all samples or the newest N.
        ``views`` replaces this process's counters and windows (see :meth:`telemetry`).
        """
        return [
            r.metadata(history=history, window=window, view=_view(views, r.name))
            for r in self._records.values()
        ]

    def metadata_for(
        self,
        name: str,
        *,
        history: bool | int = False,
        window: WindowName = RECENT_WINDOW,
        views: Views | None = None,
    ) -> PluginInfo:
        return self._find(name).metadata(history=history, window=window, view=_view(views, name))

    def windows(self, name: str, hook: str, views: Views | None = None) -> WindowRecorder:
        """The windowed telemetry of ``name``'s ``hook`` (404 when it has no such hook)."""
        record = self._find(name)
        view = _view(views, name)
        known = record.telemetry.windows if view is None else view
        if hook not in record.hooks and hook not in known:
            raise PluginNotFoundError(f"plugin {name!r} has no hook {hook!r}")
        if view is None:
            return record.telemetry.window(hook)
        found = view.get(hook)
        return found.window if found is not None else WindowRecorder(self.clock)

    def telemetry(self) -> dict[str, PluginTelemetry]:
        """Each plugin's own telemetry (this process's figures), by name."""
        return {name: record.telemetry for name, record in self._records.items()}

    def history(
        self, name: str, hook: str | None = None, limit: int | None = None
    ) -> dict[str, list[HistoryEntry]]:
        """Recorded samples of plugin ``name`` per hook, oldest first."""
        return self._find(name).telemetry.samples(hook, limit)

    def active_plugins(self) -> list[tuple[str, PluginBase]]:
        """``(name, instance)`` of every active plugin, in manifest order."""
        return [(r.name, r.instance) for r in self._records.values() if r.instance and r.active]

    def hooks(self) -> list[str]:
        """Every hook at least one active plugin subscribes to."""
        return sorted(self._table.targets)

    @property
    def manifest_digest(self) -> str | None:
        """SHA-256 of the manifest as last loaded or written (``""`` for an absent file), or
        ``None`` while no manifest could be loaded."""
        return self._manifest.digest if self._manifest is not None else None

    def record_of(self, name: str) -> PluginRecord | None:
        """The current record of plugin ``name``, if there is one."""
        return self._records.get(name)

    def _find(self, name: str) -> PluginRecord:
        try:
            return self._records[name]
        except KeyError:
            raise PluginNotFoundError(f"no plugin named {name!r}") from None

    # -- hook dispatch -------------------------------------------------------------------

    async def fire(
        self,
        hook: str,
        /,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 - a budget results report on, not a scope
        **payload: Any,
    ) -> list[HookResult]:
        """Run ``hook`` on every active subscribed plugin concurrently; one result each.

        ``timeout`` (a reserved keyword: no payload key can be named so) is the caller's budget
        in seconds: with it, or inside an anyio cancel scope with a deadline, or inside a hook
        call, each handler's timeout is capped at the time the caller has left.
        """
        budget = context.budget(_seconds(timeout))
        chain = _chain.get() or self._root()
        token = _chain.set(chain)
        try:
            return await self._dispatch(hook, payload, None, chain, budget)
        finally:
            _chain.reset(token)

    def fire_nowait(self, hook: str, /, *, timeout: float | None = None, **payload: Any) -> bool:
        """Fire ``hook`` in the registry's task group; callable from the loop or worker threads.

        The call keeps the request id but not the caller's deadline (it outlives the caller);
        ``timeout`` gives it a budget of its own. Returns ``False`` (and drops the call) when
        ``max_background`` calls are in flight.
        """
        chain = _chain.get() or self._root()
        return self._spawn(hook, payload, None, chain, _seconds(timeout))

    async def emit(self, source: str, hook: str, payload: dict[str, Any]) -> list[HookResult]:
        chain = self._deeper(source, hook)
        token = _chain.set(chain)
        try:
            return await self._dispatch(hook, payload, source, chain, context.budget(None))
        finally:
            _chain.reset(token)

    def emit_nowait(self, source: str, hook: str, payload: dict[str, Any]) -> bool:
        return self._spawn(hook, payload, source, self._deeper(source, hook), None)

    def _root(self) -> _Chain:
        return _Chain(0, _Budget(self.max_emit_calls))

    def _deeper(self, source: str, hook: str) -> _Chain:
        chain = _chain.get() or self._root()
        if chain.depth >= self.max_emit_depth:
            self._refuse_emit(
                source,
                EmitLoopError(
                    f"emit of {hook!r} cut at depth {chain.depth}: "
                    "plugins emit to each other in a loop"
                ),
            )
        return _Chain(chain.depth + 1, chain.budget)

    def _refuse_emit(self, source: str | None, error: EmitLoopError) -> None:
        if source in self._records:
            self._records[source].telemetry.add_error("emit", str(error))
        raise error

    async def _dispatch(
        self,
        hook: str,
        payload: dict[str, Any],
        source: str | None,
        chain: _Chain,
        budget: float | None,
    ) -> list[HookResult]:
        table = self._table
        targets = table.get(hook, source)
        if self._quarantined:
            targets = self._admit(hook, targets)
        if len(targets) > chain.budget.left:
            self._refuse_emit(
                source,
                EmitBudgetError(
                    f"{hook!r} not fired: its root call already made "
                    f"{self.max_emit_calls - chain.budget.left} handler calls, and "
                    f"{len(targets)} more would pass the budget of {self.max_emit_calls}"
                ),
            )
        chain.budget.left -= len(targets)
        task = _root_call_task(chain)
        table.enter()
        if task is not None:
            self._calls[task] = hook
        try:
            if self._tracing is None:
                results = await self._dispatcher.fire(hook, payload, targets, budget)
            else:
                with self._tracing.call(hook, source, budget):
                    results = await self._dispatcher.fire(hook, payload, targets, budget)
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
            (result,) = await self._dispatcher.fire(hook, payload, (target,), context.budget(None))
        finally:
            table.leave()
        return result

    def _admit(self, hook: str, targets: tuple[Target, ...]) -> tuple[Target, ...]:
        """``targets`` with those whose breaker is open answered ``quarantined``, unrun."""
        now = self.clock()
        admitted = []
        for target in targets:
            if (target.plugin, hook) in self._quarantined and target.skip_reason is None:
                breaker = self._records[target.plugin].monitor.breakers[hook]
                if not breaker.admit(now):
                    target = dataclasses.replace(
                        target, skip_reason=breaker.rejection(), skip_status="quarantined"
                    )
            admitted.append(target)
        return tuple(admitted)

    def _spawn(
        self,
        hook: str,
        payload: dict[str, Any],
        source: str | None,
        chain: _Chain,
        seconds: float | None,
    ) -> bool:
        """Fire ``hook`` in the background: the caller's request id, a budget of its own."""
        rid = context.request_id.get()

        async def run() -> None:
            _chain.set(chain)
            context.request_id.set(rid)
            context.deadline.set(None)
            # Cancelled by cancel_calls, the error has no caller: its handlers' samples say so.
            with contextlib.suppress(ShuttingDownError):
                await self._dispatch(hook, payload, source, chain, context.budget(seconds))

        return self._background.start(run)

    def _record_sample(
        self, target: Target, hook: str, status: Status, duration_ms: float, error: str | None
    ) -> str | None:
        # The secrets of the instance that made the call: after a rotation, the record holds
        # the new ones, and the old value would leak from a call still running on the old one.
        if error is not None:
            error = target.redactor.text(error)
        record = self._records.get(target.plugin)
        sample = HookSample(
            self.bus.next_seq(),
            target.plugin,
            hook,
            now(),
            status,
            duration_ms,
            error,
            request_id=context.request_id.get(),
        )
        if record is not None:
            record.telemetry.add(sample)
        self.bus.publish(sample)
        if record is not None:
            if (status == "timeout" or status == "deadline") and not target.is_async:
                self.promoter.timed_out(record, hook)
            health_changed, breaker_changed = record.observe(hook, status, duration_ms)
            if breaker_changed:
                self._track_breaker(record, hook)
            if health_changed or breaker_changed:
                self._announce(record)
        return error

    def _track_breaker(self, record: PluginRecord, hook: str, *, share: bool = True) -> None:
        breaker = record.monitor.breakers.get(hook)
        if record.monitor.quarantined(hook):
            self._quarantined.add((record.name, hook))
        else:
            self._quarantined.discard((record.name, hook))
        # A probe running is this node's own business: others hear when it ends.
        changed = self.breaker_changed
        if share and changed is not None and breaker is not None and breaker.state != "probing":
            changed(record.name, hook, breaker.shared())

    def follow_breaker(self, name: str, hook: str, shared: OpenBreaker | None) -> None:
        """Another node's breaker of ``name``'s ``hook`` opened (``shared``) or closed
        (``None``): do alike here, unless the plugin has no such hook or no quarantine."""
        record = self._records.get(name)
        breaker = record.monitor.breaker(hook) if record and hook in record.hooks else None
        if record is None or breaker is None:
            return
        breaker.follow(shared)
        self._track_breaker(record, hook, share=False)
        record.refresh_health()
        self._announce(record)

    def open_breakers(self) -> list[tuple[str, str, OpenBreaker]]:
        """Every breaker open here, to share with a cluster this node (re)joins."""
        found = []
        for name, hook in sorted(self._quarantined):
            shared = self._records[name].monitor.breakers[hook].shared()
            if shared is not None:
                found.append((name, hook, shared))
        return found

    def _announce(self, record: PluginRecord) -> None:
        self.bus.publish(StateChange(self.bus.next_seq(), record.metadata()))

    # -- health ----------------------------------------------------------------------------

    def check_health(self) -> list[str]:
        """Re-judge every plugin's health as of now; announce and return those that changed."""
        changed = [r for r in self._records.values() if r.refresh_health()]
        for record in changed:
            self._announce(record)
        return [record.name for record in changed]

    async def _watch_health(self, scope: anyio.CancelScope) -> None:
        with scope:
            while True:
                await anyio.sleep(HEALTH_CHECK_SECONDS)
                self.check_health()

    def reset_quarantine(self, name: str, hook: str | None = None) -> PluginInfo:
        """Close ``name``'s breakers (or only ``hook``'s); runtime state, nothing is written."""
        record = self._find(name)
        if hook is not None and hook not in record.hooks:
            raise PluginNotFoundError(f"plugin {name!r} has no hook {hook!r}")
        record.monitor.reset(hook)
        for each in record.hooks if hook is None else [hook]:
            self._quarantined.discard((name, each))
            if self.breaker_changed is not None:
                self.breaker_changed(name, each, None)
        record.refresh_health()
        self._announce(record)
        return record.metadata()

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
        """Rebuild the dispatch table, bump the revision and announce the changed plugins.

        An admin change (enable, reload, config) closes the plugin's breakers: quarantine is
        runtime state that an operator's action starts over.
        """
        self._table = DispatchTable(self._records.values(), self._table)
        self.revision = self.store.next_revision(self.revision)
        self.failures.track(self._records.values())
        for record in records:
            self._close_breakers(record)
            self._announce(record)
        for name in removed:
            self._quarantined = {pair for pair in self._quarantined if pair[0] != name}
            removal = PluginInfo(name=name, state="removed")
            self.bus.publish(StateChange(self.bus.next_seq(), removal))

    def _close_breakers(self, record: PluginRecord) -> None:
        record.monitor.reset()
        # The record may be new (a reload): the open breakers were its predecessor's.
        closed = sorted(hook for name, hook in self._quarantined if name == record.name)
        self._quarantined = {pair for pair in self._quarantined if pair[0] != record.name}
        if self.breaker_changed is not None:
            for hook in closed:
                self.breaker_changed(record.name, hook, None)


def _view(views: Views | None, name: str) -> Mapping[str, HookView] | None:
    """``name``'s part of ``views`` (no figures when it has none), or ``None`` without views."""
    return None if views is None else views.get(name, {})


def _root_call_task(chain: _Chain) -> asyncio.Task[Any] | None:
    """The asyncio task of a hook call made outside any handler (``None`` inside an emit, where
    cancelling the root call reaches it, and on other event loops)."""
    if chain.depth:
        return None
    try:
        return asyncio.current_task()
    except RuntimeError:
        return None


def _seconds(timeout: object) -> float | None:
    """``fire``'s ``timeout``: ``None`` or a number of seconds, at least zero."""
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not timeout >= 0:
        raise ValueError(f"timeout must be a number of seconds, at least 0; got {timeout!r}")
    return float(timeout)
