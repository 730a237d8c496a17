"""Audited administration: the registry's admin operations, each one written to the audit log.

Every surface that changes plugins (REST, the dashboard, the local CLI, the manifest watcher)
calls the registry through :class:`AuditedAdmin`. Around each operation it takes the plugin's
masked metadata and the registry revision before and after, keeps only the fields that changed,
and appends one :class:`~agent_pm.audit.AuditRecord` whatever the outcome (success, error or
cancellation), then publishes it on the bus. Metadata is what every surface already shows, with
secrets masked, so no secret reaches the log. The registry's own signatures stay its business:
options are passed through unchanged.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

import anyio
import msgspec

from agent_pm.audit import Actor, AuditLog, AuditMessage, Outcome
from agent_pm.errors import AgentPMError, PluginNotFoundError
from agent_pm.plugins import context
from agent_pm.plugins.info import PluginInfo
from agent_pm.plugins.placement import Mode

if TYPE_CHECKING:
    from agent_pm.plugins.registry import PluginRegistry

__all__ = ["AuditedAdmin", "diff", "snapshot"]

logger = logging.getLogger(__name__)
# The metadata fields an admin action can change; counters and history are not the log's business.
TRACKED = ("enabled", "state", "module", "description", "config", "error", "timeout_seconds")
# Of the isolation block: where the plugin runs, not how its worker is doing.
TRACKED_ISOLATION = ("mode", "promoted", "hold_until")
Metadata = dict[str, Any]
T = TypeVar("T")


def _flatten(value: Any, prefix: str, into: dict[str, Any]) -> dict[str, Any]:
    if isinstance(value, dict) and value:
        for key, item in value.items():
            _flatten(item, f"{prefix}.{key}" if prefix else str(key), into)
    elif prefix:
        into[prefix] = value
    return into


def diff(before: dict[str, Any], after: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The dotted paths whose values differ, with their values on each side (absent: omitted)."""
    old, new = _flatten(before, "", {}), _flatten(after, "", {})
    changed = sorted(
        path for path in old.keys() | new.keys() if old.get(path, ...) != new.get(path, ...)
    )
    return (
        {path: old[path] for path in changed if path in old},
        {path: new[path] for path in changed if path in new},
    )


def _tracked(info: PluginInfo) -> Metadata:
    metadata = msgspec.to_builtins(info)
    tracked = {key: metadata[key] for key in TRACKED if key in metadata}
    tracked["isolation"] = {key: metadata["isolation"].get(key) for key in TRACKED_ISOLATION}
    return tracked


def snapshot(registry: PluginRegistry, plugin: str | None) -> Metadata:
    """The masked metadata an action on ``plugin`` (every plugin for ``None``) may change."""
    if plugin is None:
        return {m.name: _tracked(m) for m in registry.list_metadata(history=False)}
    try:
        return _tracked(registry.metadata_for(plugin, history=False))
    except PluginNotFoundError:
        return {}


def _error_text(exc: BaseException) -> str:
    # Platform errors are written to be shown (the API answers with them); anything else may
    # quote values it should not, so only its type is kept.
    return str(exc) if isinstance(exc, AgentPMError) else f"unexpected {type(exc).__name__}"


class AuditedAdmin:
    """``registry``'s admin operations on behalf of ``actor``, recorded in ``log``."""

    def __init__(self, registry: PluginRegistry, log: AuditLog, actor: Actor) -> None:
        self.registry = registry
        self.log = log
        self.actor = actor

    async def set_enabled(self, name: str, enabled: bool, **options: Any) -> PluginInfo:
        action = "enable" if enabled else "disable"
        return await self.run(
            action, name, lambda: self.registry.set_enabled(name, enabled, **options)
        )

    async def update_config(self, name: str, config: dict[str, Any], **options: Any) -> PluginInfo:
        return await self.run(
            "update_config", name, lambda: self.registry.update_config(name, config, **options)
        )

    async def reload_plugin(self, name: str, **options: Any) -> PluginInfo:
        return await self.run("reload", name, lambda: self.registry.reload_plugin(name, **options))

    async def set_isolation(
        self, name: str, mode: Mode, *, reason: str | None = None, **options: Any
    ) -> PluginInfo:
        """Move ``name`` in or out of process; ``reason`` is recorded with the action."""
        return await self.run(
            "isolate",
            name,
            lambda: self.registry.set_isolation(name, mode, reason=reason, **options),
            reason=reason,
        )

    async def remove(self, name: str, **options: Any) -> None:
        await self.run("remove", name, lambda: self.registry.remove(name, **options))

    async def reload(self, **options: Any) -> list[PluginInfo]:
        return await self.run("reload_all", None, lambda: self.registry.reload(**options))

    async def reset_quarantine(self, name: str, hook: str | None = None) -> PluginInfo:
        """Close ``name``'s breakers (or only ``hook``'s); records the breaker states after."""

        async def reset() -> PluginInfo:
            return self.registry.reset_quarantine(name, hook)

        def effect(info: PluginInfo) -> dict[str, Any]:
            closed = {h: b for h, b in info.quarantine.items() if hook is None or h == hook}
            return {f"quarantine.{h}": breaker.state for h, breaker in closed.items()}

        return await self.run("reset_quarantine", name, reset, effect=effect)

    async def install(self, module: str, **options: Any) -> PluginInfo:
        return await self._install(lambda: self.registry.install(module, **options), options)

    async def install_entry_point(self, entry_point: str, **options: Any) -> PluginInfo:
        operation = lambda: self.registry.install_entry_point(entry_point, **options)  # noqa: E731
        return await self._install(operation, options)

    async def _install(
        self, operation: Callable[[], Awaitable[PluginInfo]], options: dict[str, Any]
    ) -> PluginInfo:
        # The name may come from the plugin class, known only once it is imported.
        named: list[str] = []

        async def install() -> PluginInfo:
            metadata = await operation()
            named.append(metadata.name)
            return metadata

        return await self.run("install", options.get("name"), install, named=named, new=True)

    async def run(
        self,
        action: str,
        plugin: str | None,
        operation: Callable[[], Awaitable[T]],
        *,
        named: list[str] | None = None,
        new: bool = False,
        effect: Callable[[T], dict[str, Any]] | None = None,
        reason: str | None = None,
    ) -> T:
        """Run ``operation`` (``action`` on ``plugin``; every plugin for ``None``) and record it.

        For an operation that creates the plugin, ``new`` says so and ``named`` receives its
        name once known. Surfaces audit actions beyond the registry's own this way (replays);
        ``effect`` turns such an operation's result into the dotted paths it changed beyond the
        plugin's metadata (``failures.42.replay``), recorded with ``after``.
        """
        registry = self.registry
        before = {} if new else snapshot(registry, plugin)
        revision = registry.revision
        outcome: Outcome = "ok"
        error: str | None = None
        results: list[T] = []
        try:
            results.append(await operation())
            return results[0]
        except anyio.get_cancelled_exc_class():
            outcome, error = "cancelled", "the request was cancelled"
            raise
        except BaseException as exc:
            outcome, error = "error", _error_text(exc)
            raise
        finally:
            plugin = named[0] if named else plugin
            # A failed install changed nothing, even if a plugin of that name exists.
            after = snapshot(registry, plugin) if outcome == "ok" or not new else {}
            old, changed = diff(before, after)
            if effect is not None and results:
                changed = {**changed, **effect(results[0])}
            fields = {
                "time": datetime.now(UTC),
                "actor": self.actor.name,
                "role": self.actor.role,
                "source": self.actor.source,
                "action": action,
                "plugin": plugin,
                "before": old,
                "after": changed,
                "revision_before": revision,
                "revision_after": registry.revision,
                "outcome": outcome,
                "error": error,
                "request_id": context.request_id.get(),
                "reason": reason,
            }
            with anyio.CancelScope(shield=True):
                await self._record(fields)

    async def _record(self, fields: dict[str, Any]) -> None:
        try:
            record = await self.log.append(fields)
        except OSError:
            logger.exception(
                "audit record of %s %s not written", fields["action"], fields["plugin"]
            )
            return
        bus = self.registry.bus
        bus.publish(AuditMessage(bus.next_seq(), record))
