"""PluginBase: the interface every Agent PM plugin implements.

A plugin is a class with a few declarative attributes and handler methods named after the hooks
it subscribes to::

    class SlackAlerts(PluginBase):
        name = "slack_alerts"
        hooks = ("post_alignment_followup",)
        required_secrets = ("SLACK_BOT_TOKEN",)

        class Config(msgspec.Struct, forbid_unknown_fields=True):
            channel: str = "#alerts"

        async def post_alignment_followup(self, **payload): ...

Handlers and lifecycle methods may be plain or ``async def``; plain ones run in worker threads.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import msgspec

from agent_pm.plugins import context
from agent_pm.plugins.secrets import SecretLog

if TYPE_CHECKING:
    from starlette.routing import BaseRoute

    from agent_pm.plugins.dispatch import HookResult

__all__ = ["Emitter", "PluginBase", "public"]

RouteT = TypeVar("RouteT", bound="BaseRoute")


def public(route: RouteT) -> RouteT:
    """Mark a plugin route as reachable without an API key (a webhook receiver, say)."""
    route.agent_pm_public = True  # type: ignore[attr-defined]
    return route


class Emitter:
    """What a plugin needs from its registry to emit events; bound by the registry at load."""

    async def emit(self, source: str, hook: str, payload: dict[str, Any]) -> list[HookResult]:
        raise NotImplementedError

    def emit_nowait(self, source: str, hook: str, payload: dict[str, Any]) -> bool:
        raise NotImplementedError


class PluginBase:
    """Base class of plugins.

    Class attributes: ``name``, ``description``, ``hooks`` (hook names handled by methods of the
    same name), ``required_secrets``, ``optional_secrets`` (resolved the same way, never
    reported missing), an optional ``Config`` struct (config is validated and
    converted into it; unknown keys are rejected; file paths are typed
    :data:`~agent_pm.plugins.paths.DataPath` and resolved inside ``DATA_DIR``), ``destinations``
    (the config fields, or ``secrets.<KEY>`` names, that say where the plugin sends its secrets:
    an admin write changing one must give the secrets again), an optional ``timeout`` in seconds
    per hook call and an optional ``route_prefix`` (default ``/plugins/<name>``).

    Hooks are only names listed in ``hooks``; lifecycle and other ``PluginBase`` methods, private
    and dunder names are refused.
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    hooks: ClassVar[tuple[str, ...]] = ()
    required_secrets: ClassVar[tuple[str, ...]] = ()
    optional_secrets: ClassVar[tuple[str, ...]] = ()
    destinations: ClassVar[tuple[str, ...]] = ()
    Config: ClassVar[type[msgspec.Struct] | None] = None
    timeout: ClassVar[float | None] = None
    route_prefix: ClassVar[str | None] = None

    def __init__(self, config: Any = None) -> None:
        self.config: Any = {} if config is None else config
        self.plugin_name = type(self).name
        self.log = SecretLog(
            logging.getLogger(f"agent_pm.plugins.{self.plugin_name or type(self).__name__}")
        )
        self._secrets: Mapping[str, str] = {}
        self._missing: tuple[str, ...] = tuple(type(self).required_secrets)
        self._emitter: Emitter | None = None

    def bind(
        self,
        plugin_name: str,
        secrets: Mapping[str, str],
        missing: Sequence[str],
        emitter: Emitter | None,
    ) -> None:
        """Attach the registry context: the manifest name, resolved secrets and the emitter."""
        self.plugin_name = plugin_name
        # Secrets leave the plugin's records masked, whatever level and handlers are set.
        self.log = SecretLog(logging.getLogger(f"agent_pm.plugins.{plugin_name}"), secrets.values())
        self._secrets = dict(secrets)
        self._missing = tuple(missing)
        self._emitter = emitter

    def get_secret(self, key: str, default: str | None = None) -> str | None:
        """The resolved value of secret ``key``, or ``default`` when it is missing."""
        return self._secrets.get(key, default)

    def replay_of(self) -> int | None:
        """The id of the recorded failure the running hook call replays; ``None`` on a first
        delivery. A plugin whose calls must happen once can deduplicate on it."""
        return context.replay_of.get()

    def missing_secrets(self) -> list[str]:
        """Names of the required secrets no source provided."""
        return list(self._missing)

    def remaining(self) -> float | None:
        """Seconds this hook call has left before it is cut (its own timeout, or less if its
        caller has less time); ``None`` outside a hook call. Works in sync handlers too, so a
        handler can do less rather than be cut."""
        return context.remaining()

    async def emit(self, hook: str, **payload: Any) -> list[HookResult]:
        """Fire ``hook`` on the other active plugins and return their results, within the time
        this call has left."""
        if self._emitter is None:
            return []
        return await self._emitter.emit(self.plugin_name, hook, payload)

    def emit_nowait(self, hook: str, **payload: Any) -> bool:
        """Fire ``hook`` on the other plugins in the background; usable from sync handlers.

        Returns ``False`` when the registry's bound on in-flight background work is reached.
        """
        if self._emitter is None:
            return False
        return self._emitter.emit_nowait(self.plugin_name, hook, payload)

    def routes(self) -> Sequence[BaseRoute]:
        """Starlette routes to mount under ``route_prefix`` while the plugin is active."""
        return ()

    def on_enable(self) -> Any:
        """Called when the plugin becomes active: open clients, warm caches."""

    def on_disable(self) -> Any:
        """Called when the plugin stops being active: close what ``on_enable`` opened."""

    def on_reload(self) -> Any:
        """Called after the plugin's code or the manifest was reloaded."""
