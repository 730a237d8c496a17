"""The REST endpoints: plugin administration, hook firing and health.

Handlers are thin: read and validate the request, call one registry operation, encode its
result. Errors propagate as exceptions and become responses in :mod:`agent_pm.api._errors`.
Bodies are read with a size bound (413 past it) and decoded into msgspec structs (400 when
malformed); admin endpoints pass the ``If-Match`` revision to the registry (412 when stale).
"""

from __future__ import annotations

import math
import reprlib
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from agent_pm.api._errors import JSONResponse
from agent_pm.api._figures import NODE_QUERY, shown_figures
from agent_pm.api._health_routes import STATS_QUERY, plugin_stats, reset_quarantine
from agent_pm.api._listing import LISTING_QUERY, list_plugins, query_window
from agent_pm.api._openapi import Operation
from agent_pm.api._reading import (
    decode,
    decode_reason,
    expected_revision,
    query_int,
    read_body,
)
from agent_pm.api._schemas import (
    BusHealth,
    Catalogue,
    ConfigBody,
    Health,
    HookPayload,
    HookResults,
    InstallBody,
    IsolationBody,
    PluginEnvelope,
    PluginHistory,
    PluginList,
    PluginStats,
    Removed,
)
from agent_pm.api._security import Caller
from agent_pm.audit import CLI_USER_AGENT, Actor
from agent_pm.audited import AuditedAdmin
from agent_pm.errors import RevisionConflictError
from agent_pm.plugins.dispatch import HookResult
from agent_pm.plugins.info import PluginInfo
from agent_pm.plugins.manifest import HookName
from agent_pm.plugins.registry import PluginRegistry

__all__ = ["OPERATIONS", "routes", "safe_result"]

# Bounded, and it survives a __repr__ that raises.
_repr = reprlib.Repr()
_repr.maxstring = _repr.maxother = 200


# -- helpers ------------------------------------------------------------------------------------


def registry_of(request: Request) -> PluginRegistry:
    registry: PluginRegistry = request.app.state.registry
    return registry


def admin_of(request: Request) -> AuditedAdmin:
    """The registry's admin operations, audited as the request's caller."""
    state = request.scope.get("state", {})
    caller: Caller = state.get("caller") or Caller("unknown", state.get("role", "admin"))
    cli = request.headers.get("user-agent", "").startswith(CLI_USER_AGENT)
    actor = Actor(caller.name, caller.role, "cli" if cli else "rest")
    return AuditedAdmin(registry_of(request), request.app.state.audit, actor)


def reply(request: Request, content: Any, status: int = 200) -> JSONResponse:
    """Encode ``content``; the ``ETag`` carries the revision to send back in ``If-Match``."""
    revision = registry_of(request).revision
    return JSONResponse(content, status_code=status, headers={"ETag": f'"{revision}"'})


def safe_result(result: HookResult) -> HookResult:
    """``result``, its value replaced by a bounded ``repr`` when JSON cannot carry it."""
    try:
        msgspec.json.encode(result.value)
    except Exception:  # any failure to encode a plugin's value is the plugin's business
        return msgspec.structs.replace(result, value=_repr.repr(result.value))
    return result


# -- endpoints -----------------------------------------------------------------------------------


async def get_plugin(request: Request) -> Response:
    name = request.path_params["name"]
    history = query_int(request, "history")
    window, shown = query_window(request), await shown_figures(request)
    metadata = registry_of(request).metadata_for(
        name, window=window, history=True if history is None else history, views=shown.views
    )
    return reply(request, PluginEnvelope(metadata))


async def plugin_history(request: Request) -> Response:
    name = request.path_params["name"]
    hook = request.query_params.get("hook")
    limit = query_int(request, "limit")
    history = registry_of(request).history(name, hook, limit)
    return reply(request, PluginHistory(name, history))


async def discover(request: Request) -> Response:
    return reply(request, Catalogue(await registry_of(request).discover_plugins()))


async def install(request: Request) -> Response:
    body = await decode(request, InstallBody)
    if (body.entry_point is None) == (body.module is None):
        raise HTTPException(400, "give exactly one of entry_point or module")
    admin = admin_of(request)
    options: dict[str, Any] = {
        "name": body.name,
        "enabled": body.enabled,
        "description": body.description,
        "config": body.config,
        "revision": expected_revision(request),
    }
    if body.entry_point is not None:
        metadata = await admin.install_entry_point(body.entry_point, **options)
    else:
        assert body.module is not None
        metadata = await admin.install(body.module, **options)
    return reply(request, PluginEnvelope(metadata), status=201)


async def enable(request: Request) -> Response:
    return await _set_enabled(request, True)


async def disable(request: Request) -> Response:
    return await _set_enabled(request, False)


async def _set_enabled(request: Request, enabled: bool) -> Response:
    return await _changed(
        request, lambda admin, name, revision: admin.set_enabled(name, enabled, revision=revision)
    )


async def reload_plugin(request: Request) -> Response:
    return await _changed(
        request, lambda admin, name, revision: admin.reload_plugin(name, revision=revision)
    )


async def update_config(request: Request) -> Response:
    config = (await decode(request, ConfigBody)).config
    return await _changed(
        request, lambda admin, name, revision: admin.update_config(name, config, revision=revision)
    )


async def set_isolation(request: Request) -> Response:
    mode = (await decode(request, IsolationBody)).mode
    return await _changed(
        request, lambda admin, name, revision: admin.set_isolation(name, mode, revision=revision)
    )


async def _changed(
    request: Request, change: Callable[[AuditedAdmin, str, int | None], Awaitable[PluginInfo]]
) -> Response:
    """Apply ``change`` to the plugin the path names, at the ``If-Match`` revision if given."""
    name = request.path_params["name"]
    metadata = await change(admin_of(request), name, expected_revision(request))
    return reply(request, PluginEnvelope(metadata))


async def remove(request: Request) -> Response:
    name = request.path_params["name"]
    await admin_of(request).remove(name, revision=expected_revision(request))
    return reply(request, Removed(name))


async def reload_all(request: Request) -> Response:
    registry = registry_of(request)
    plugins = await admin_of(request).reload(revision=expected_revision(request))
    return reply(request, PluginList(plugins, registry.revision, registry.config_errors))


async def fire_hook(request: Request) -> Response:
    hook = request.path_params["hook"]
    try:
        msgspec.convert(hook, HookName)
    except msgspec.ValidationError:
        raise HTTPException(400, f"{hook!r} is not a valid hook name") from None
    body = await read_body(request)
    payload = _payload(body)
    if "timeout" in payload:
        raise HTTPException(400, "'timeout' is reserved: give the budget as ?timeout=SECONDS")
    timeout = _timeout(request)
    registry = registry_of(request)
    revision = expected_revision(request)
    if revision is not None and revision != registry.revision:
        raise RevisionConflictError(revision, registry.revision)
    results = await registry.fire(hook, timeout=timeout, **payload)
    try:
        return reply(request, HookResults(results))
    except Exception:  # encode once; only a failure pays for finding the culprits
        return reply(request, HookResults([safe_result(r) for r in results]))


def _timeout(request: Request) -> float | None:
    """The caller's budget from ``?timeout=``: seconds, a positive number."""
    raw = request.query_params.get("timeout")
    if raw is None:
        return None
    try:
        seconds = float(raw)
    except ValueError:
        seconds = math.nan
    if not 0 < seconds < math.inf:
        raise HTTPException(400, f"timeout must be a positive number of seconds, got {raw!r}")
    return seconds


def _payload(body: bytes) -> dict[str, Any]:
    if not body.strip():
        return {}
    try:
        return msgspec.json.decode(body, type=dict[str, Any])
    except (msgspec.DecodeError, RecursionError, UnicodeDecodeError) as exc:
        detail = f"the payload must be a JSON object: {decode_reason(exc)}"
        raise HTTPException(400, detail) from None


async def health(request: Request) -> Response:
    cluster = getattr(request.app.state, "cluster", None)
    if cluster is None:
        return JSONResponse(Health())
    status = cluster.status()
    link = status.link
    bus = BusHealth(
        "redis",
        link.state,
        status.node,
        reconnects=link.reconnects,
        pending=status.pending,
        **msgspec.structs.asdict(status.counters),
    )
    return JSONResponse(Health("ok" if link.state == "up" else "degraded", bus))


# -- the table -------------------------------------------------------------------------------

Handler = Callable[[Request], Awaitable[Response]]
_LIMIT_QUERY = (
    ("hook", str, "only this hook's samples"),
    ("limit", int, "at most this many samples per hook, the newest"),
)
# Order matters: fixed paths (discover, install, reload) come before /plugins/{name}.
_TABLE: tuple[tuple[Operation, Handler], ...] = (
    (Operation("GET", "/health", "Liveness", Health, public=True), health),
    (
        Operation(
            "GET",
            "/plugins",
            "Every plugin's summary: state, health, stats, windows",
            PluginList,
            errors=(304, 400, 404, 503),
            query=LISTING_QUERY,
        ),
        list_plugins,
    ),
    (
        Operation("GET", "/plugins/discover", "The entry-point catalogue", Catalogue),
        discover,
    ),
    (
        Operation(
            "POST",
            "/plugins/install",
            "Install a plugin by entry point or module",
            PluginEnvelope,
            status=201,
            body=InstallBody,
            errors=(404, 409, 422),
        ),
        install,
    ),
    (
        Operation(
            "POST",
            "/plugins/reload",
            "Re-read the manifest",
            PluginList,
            errors=(409,),
        ),
        reload_all,
    ),
    (
        Operation(
            "GET",
            "/plugins/{name}",
            "One plugin's metadata, with its history",
            PluginEnvelope,
            errors=(400, 404, 503),
            query=(
                LISTING_QUERY[0],
                ("history", int, "the newest N samples per hook (all)"),
                NODE_QUERY,
            ),
        ),
        get_plugin,
    ),
    (
        Operation(
            "GET",
            "/plugins/{name}/stats",
            "Windowed stats and series of its hooks",
            PluginStats,
            errors=(400, 404, 503),
            query=STATS_QUERY,
        ),
        plugin_stats,
    ),
    (
        Operation(
            "POST",
            "/plugins/{name}/quarantine/reset",
            "Close its quarantine breakers (all hooks, or ?hook=)",
            PluginEnvelope,
            errors=(400, 404),
            query=(("hook", str, "only this hook's breaker"),),
        ),
        reset_quarantine,
    ),
    (
        Operation(
            "GET",
            "/plugins/{name}/history",
            "Recorded hook samples",
            PluginHistory,
            errors=(400, 404),
            query=_LIMIT_QUERY,
        ),
        plugin_history,
    ),
    (
        Operation("POST", "/plugins/{name}/enable", "Enable", PluginEnvelope, errors=(404, 409)),
        enable,
    ),
    (
        Operation("POST", "/plugins/{name}/disable", "Disable", PluginEnvelope, errors=(404, 409)),
        disable,
    ),
    (
        Operation(
            "POST", "/plugins/{name}/reload", "Reload its code", PluginEnvelope, errors=(404, 409)
        ),
        reload_plugin,
    ),
    (
        Operation(
            "POST",
            "/plugins/{name}/config",
            "Replace its config",
            PluginEnvelope,
            body=ConfigBody,
            errors=(404, 409, 422),
        ),
        update_config,
    ),
    (
        Operation(
            "POST",
            "/plugins/{name}/isolation",
            "Move it to a worker process or back inline (not written to the manifest)",
            PluginEnvelope,
            body=IsolationBody,
            errors=(400, 404, 409),
        ),
        set_isolation,
    ),
    (
        Operation("DELETE", "/plugins/{name}", "Remove it", Removed, errors=(404, 409)),
        remove,
    ),
    (
        Operation(
            "POST",
            "/hooks/{hook}",
            "Fire a hook",
            HookResults,
            body=HookPayload,
            errors=(400, 503),  # 503: cancelled because the service is stopping
        ),
        fire_hook,
    ),
)
OPERATIONS: tuple[Operation, ...] = tuple(op for op, _ in _TABLE)


def routes() -> list[BaseRoute]:
    """The REST routes, in matching order."""
    return [Route(op.path, handler, methods=[op.method]) for op, handler in _TABLE]
