"""Plugin lifecycle: building a record from a manifest item, starting and stopping instances.

Every lifecycle method runs under the plugin's timeout, sync ones in a worker thread behind the
plugin's thread limiter; a failure is recorded in the plugin's error ring (secrets redacted) and
raised as ``LifecycleError``.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import math
import time
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

import anyio
import msgspec

from agent_pm.errors import AgentPMError, LifecycleError, PluginLoadError
from agent_pm.plugins.background import Background
from agent_pm.plugins.base import Emitter, PluginBase
from agent_pm.plugins.dispatch import run_in_thread
from agent_pm.plugins.isolated import WORKER_STARTUP_SECONDS, IsolatedPlugin, isolated_class
from agent_pm.plugins.loader import (
    config_schema,
    failure,
    handler_hooks,
    import_plugin_class,
    validate_config,
)
from agent_pm.plugins.loopblock import LoopBlocks
from agent_pm.plugins.manifest import Isolation, ManifestEntry, ManifestItem, PromotionSettings
from agent_pm.plugins.placement import Placement
from agent_pm.plugins.record import PluginRecord
from agent_pm.plugins.secrets import ResolvedSecrets, SecretResolver
from agent_pm.plugins.telemetry import PluginTelemetry
from agent_pm.settings import Settings

__all__ = ["Lifecycle"]

logger = logging.getLogger(__name__)


class Lifecycle:
    """Builds plugin records and runs their instances' lifecycle methods."""

    def __init__(
        self,
        settings: Settings,
        emitter: Emitter,
        background: Background | None = None,
        clock: Callable[[], float] = time.time,
        on_block: Callable[[str, str, float], None] | None = None,
    ) -> None:
        self.settings = settings
        self._background = background
        self.clock = clock
        self._on_block = on_block
        self._resolver = SecretResolver(settings)
        self._emitter = emitter

    def timeout_for(self, cls: type[PluginBase], override: float | None) -> float:
        """Per-hook timeout: the manifest's, else the class's, else ``HOOK_TIMEOUT_SECONDS``."""
        return override or cls.timeout or self.settings.hook_timeout_seconds

    def validate(self, cls: type[PluginBase], config: Mapping[str, Any]) -> Any:
        """``config`` converted and confined for ``cls``, as :func:`validate_config` says."""
        return validate_config(cls, config, self.settings)

    def loop_blocks(self, name: str, declared: Isolation) -> LoopBlocks | None:
        """A fresh loop-block record for plugin ``name``, or ``None`` when not measured (an
        ``auto`` plugin always is: its promotion depends on it)."""
        if not self.settings.loop_block_tracking and declared != "auto":
            return None
        return LoopBlocks(name, self.settings.loop_block_warn_ms, self._on_block)

    def placement(
        self, entry: ManifestEntry, previous: PluginRecord | None, moved: Placement | None
    ) -> Placement:
        """Where ``entry``'s plugin runs: ``moved`` there, or as ``previous`` ran, or as
        declared (its ``isolation``, else ``ISOLATION_DEFAULT``)."""
        declared = entry.isolation or self.settings.isolation_default
        settings = entry.promotion or PromotionSettings()
        if settings.block_ms is None:
            settings = msgspec.structs.replace(settings, block_ms=self.settings.loop_block_warn_ms)
        if moved is not None:
            return moved
        if previous is not None:
            return previous.placement.carried(declared, settings)
        return Placement.declared_as(declared, settings)

    def resolve(self, cls: type[PluginBase], name: str, config: dict[str, Any]) -> ResolvedSecrets:
        inline = config.get("secrets")
        return self._resolver.resolve(
            name,
            cls.required_secrets,
            inline if isinstance(inline, dict) else {},
            cls.optional_secrets,
        )

    def load(
        self,
        item: ManifestItem,
        previous: PluginRecord | None = None,
        cls: type[PluginBase] | None = None,
        moved: Placement | None = None,
    ) -> PluginRecord:
        """A validated record for ``item``, not started; raises ``AgentPMError`` if invalid.

        It carries on ``previous``'s telemetry, thread slots, loop-block record and placement
        (the same plugin, rebuilt); ``cls`` is a freshly imported class to use instead of
        importing the entry's module; ``moved`` a new placement (a move in or out of process).
        """
        record = self.record(item, previous)
        self._fill(record, previous, cls, moved)
        return record

    def _fill(
        self,
        record: PluginRecord,
        previous: PluginRecord | None,
        cls: type[PluginBase] | None = None,
        moved: Placement | None = None,
    ) -> None:
        """Import, check and configure ``record``'s plugin, as :meth:`load` says."""
        entry = record.entry
        if entry is None:
            raise PluginLoadError(f"plugin {record.name!r} is invalid: {record.item.error}")
        record.cls = cls or import_plugin_class(entry.module)
        record.config_schema = config_schema(record.cls)
        record.hooks = handler_hooks(record.cls, entry.hooks)
        record.config = self.validate(record.cls, entry.config)
        record.timeout = self.timeout_for(record.cls, entry.timeout_seconds)
        record.placement = placement = self.placement(entry, previous, moved)
        blocks = previous.loop_blocks if previous is not None else None
        record.loop_blocks = blocks or self.loop_blocks(record.name, placement.declared)
        if record.loop_blocks is not None:
            auto = placement.declared == "auto"
            threshold = placement.settings.block_ms if auto else None
            record.loop_blocks.listen_ms = threshold or math.inf
        record.secrets = self.resolve(record.cls, entry.name, entry.config)

    def record(self, item: ManifestItem, previous: PluginRecord | None) -> PluginRecord:
        """A bare record for ``item``, keeping ``previous``'s telemetry and thread slots."""
        if previous is None:
            return PluginRecord(item, telemetry=PluginTelemetry(self.clock))
        return PluginRecord(item, telemetry=previous.telemetry, limiter=previous.limiter)

    async def build(self, item: ManifestItem, previous: PluginRecord | None = None) -> PluginRecord:
        """A record for ``item``: invalid if it cannot be loaded, failed if it cannot start.

        An invalid record keeps the config schema of a class that imported, so the console can
        offer the form that fixes its config.
        """
        record = self.record(item, previous)
        try:
            self._fill(record, previous)
        except AgentPMError as exc:
            invalid = self.record(item, previous)
            invalid.config_schema = record.config_schema
            return self.invalid(invalid, str(exc))
        if item.entry is not None and item.entry.enabled:
            try:
                await self.start(record)
            except LifecycleError as exc:
                record.state, record.error = "failed", str(exc)
        return record

    def invalid(self, record: PluginRecord, error: str) -> PluginRecord:
        record.state, record.error = "invalid", error
        record.telemetry.add_error("load", error)
        logger.warning("plugin %s is invalid: %s", record.name, error)
        return record

    async def start(self, record: PluginRecord) -> PluginBase:
        """Construct, bind and enable a new instance of ``record`` and make it the record's.

        Raises ``LifecycleError`` on failure.
        """
        assert record.cls is not None
        try:
            instance = self._construct(record)
        except Exception as exc:
            message = self.note(record, "init", f"constructor failed: {failure(exc)}")
            # The plugin's own exception may quote its secrets: only the redacted text goes on.
            raise LifecycleError(message) from None
        instance.bind(record.name, record.secrets.values, record.secrets.missing, self._emitter)
        await self.call(record, instance, "on_enable")
        record.instance, record.state, record.error = instance, "enabled", None
        return instance

    def _construct(self, record: PluginRecord) -> PluginBase:
        """The instance, or for an isolated plugin its stand-in (the worker starts on enable)."""
        assert record.cls is not None
        entry = record.entry
        if entry is None or record.placement.mode == "inline":
            return record.cls(record.config)
        return isolated_class(record.cls)(
            record.config,
            module=entry.module,
            hooks=record.hooks,
            timeout=record.timeout,
            limits=entry.limits,
            environ=self.settings.environ,
            data_dir=str(self.settings.data_dir.resolve()),
            report=partial(self.note, record),
            background=self._background,
        )

    async def call(self, record: PluginRecord, instance: PluginBase, method: str) -> None:
        """Run a lifecycle method under the plugin's timeout; ``LifecycleError`` if it fails.

        A sync method runs in a worker thread holding one of the plugin's thread slots until it
        returns, so one that hangs can only ever occupy the plugin's own few threads.
        """
        function = getattr(instance, method)
        if getattr(PluginBase, method) is getattr(type(instance), method):
            return
        limit = max(record.timeout, 1.0)
        if method == "on_enable" and isinstance(instance, IsolatedPlugin):
            limit += WORKER_STARTUP_SECONDS  # its worker process starts first
        try:
            with anyio.fail_after(limit):
                if inspect.iscoroutinefunction(function):
                    await function()
                else:
                    await run_in_thread(function, record.limiter)
        except TimeoutError:
            raise LifecycleError(self.note(record, method, f"{method} timed out")) from None
        except Exception as exc:
            message = self.note(record, method, f"{method} failed: {failure(exc)}")
            raise LifecycleError(message) from None  # as above: no secret-quoting cause

    async def call_quietly(self, record: PluginRecord, instance: PluginBase, method: str) -> None:
        """Like :meth:`call`, for methods whose failure must not stop the operation."""
        with contextlib.suppress(LifecycleError):  # already recorded
            await self.call(record, instance, method)

    async def stop(self, record: PluginRecord, instance: PluginBase) -> None:
        await self.call_quietly(record, instance, "on_disable")

    def note(self, record: PluginRecord, stage: str, message: str) -> str:
        """Record ``message`` (secrets redacted) in the plugin's error ring and the log."""
        message = record.secrets.redactor.text(message)
        record.telemetry.add_error(stage, message)
        logger.warning("plugin %s: %s", record.name, message)
        return message
