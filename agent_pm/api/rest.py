"""The REST endpoints: plugin administration, hook firing and health.

Handlers are thin: read and validate the request, call one registry operation, encode its
result. Errors propagate as exceptions and become responses in :mod:`agent_pm.api.errors`.
Bodies are read with a size bound (413 past it) and decoded into msgspec structs (400 when
malformed); admin endpoints pass the ``If-Match`` revision to the registry (412 when stale).
"""

from __future__ import annotations

import reprlib
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar

import msgspec
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from agent_pm.api.errors import JSONResponse
from agent_pm.api.openapi import Operation
from agent_pm.errors import RevisionConflictError
from agent_pm.plugins.discovery import CatalogueEntry
from agent_pm.plugins.dispatch import HookResult
from agent_pm.plugins.manifest import HookName, ModulePath, PluginName
from agent_pm.plugins.registry import PluginRegistry

__all__ = ["MAX_BODY_BYTES", "OPERATIONS", "routes", "safe_result"]

MAX_BODY_BYTES = 1024 * 1024
T = TypeVar("T")
Metadata = Annotated[dict[str, Any], msgspec.Meta(description="A plugin's registry metadata")]
_repr = reprlib.Repr()
_repr.maxstring = _repr.maxother = 200


# -- bodies and responses --------------------------------------------------------------------


class InstallBody(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Install by ``entry_point`` (from the catalogue) or ``module`` (``pkg.mod:Class``)."""

    entry_point: str | None = None
    module: ModulePath | None = None
    name: PluginName | None = None
    enabled: bool = False
    description: str | None = None
    config: dict[str, Any] | None = None


class ConfigBody(msgspec.Struct, forbid_unknown_fields=True):
    """The new config; it replaces the old one and is validated against the plugin's schema."""

    config: dict[str, Any]


class HookPayload(msgspec.Struct):
    """Documentation stand-in: the body of ``/hooks/{hook}`` is any JSON object (the payload)."""


class PluginList(msgspec.Struct):
    plugins: list[Metadata]
    revision: int


class PluginEnvelope(msgspec.Struct):
    plugin: Metadata


class PluginHistory(msgspec.Struct):
    plugin: str
    history: dict[str, list[dict[str, Any]]]


class Catalogue(msgspec.Struct):
    entry_points: list[CatalogueEntry]


class Removed(msgspec.Struct):
    removed: str


class HookResults(msgspec.Struct):
    results: list[HookResult]


class Health(msgspec.Struct):
    status: str = "ok"


# -- request helpers ---------------------------------------------------------------------------


def registry_of(request: Request) -> PluginRegistry:
    registry: PluginRegistry = request.app.state.registry
    return registry


async def read_body(request: Request, limit: int = MAX_BODY_BYTES) -> bytes:
    """The request body, refused with 413 as soon as it grows past ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None:
        length = _natural(declared)
        if length is None:
            raise HTTPException(400, "invalid Content-Length header")
        if length > limit:
            raise HTTPException(413, f"request body is larger than {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise HTTPException(413, f"request body is larger than {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def decode(request: Request, kind: type[T]) -> T:
    """The body decoded into ``kind``; 400 with msgspec's reason when it does not fit."""
    body = await read_body(request)
    if not body.strip():
        raise HTTPException(400, "a JSON request body is required")
    try:
        return msgspec.json.decode(body, type=kind)
    except (msgspec.DecodeError, RecursionError) as exc:
        raise HTTPException(400, f"malformed body: {exc}") from None


def expected_revision(request: Request) -> int | None:
    """The revision of ``If-Match`` (a number, quoted or not); ``None`` without the header."""
    raw = request.headers.get("if-match")
    if raw is None or raw.strip() == "*":
        return None
    revision = _natural(raw.strip().removeprefix("W/").strip('"'))
    if revision is None:
        raise HTTPException(400, "If-Match must be a registry revision number")
    return revision


def reply(request: Request, content: Any, status: int = 200) -> JSONResponse:
    """Encode ``content``; the ``ETag`` carries the revision to send back in ``If-Match``."""
    revision = registry_of(request).revision
    return JSONResponse(content, status_code=status, headers={"ETag": f'"{revision}"'})


def _query_int(request: Request, key: str) -> int | None:
    raw = request.query_params.get(key)
    if raw is None:
        return None
    value = _natural(raw)
    if value is None:
        raise HTTPException(400, f"{key} must be a non-negative integer")
    return value


def _natural(text: str) -> int | None:
    """``text`` as a non-negative integer in ASCII digits, else ``None`` (``"²"`` is a digit)."""
    return int(text) if text.isascii() and text.isdigit() else None


def safe_result(result: HookResult) -> HookResult:
    """``result``, its value replaced by a bounded ``repr`` when JSON cannot carry it."""
    try:
        msgspec.json.encode(result.value)
    except Exception:  # any failure to encode a plugin's value is the plugin's business
        return msgspec.structs.replace(result, value=_safe_repr(result.value))
    return result


def _safe_repr(value: Any) -> str:
    try:
        return _repr.repr(value)
    except Exception:
        return f"<unrepresentable {type(value).__name__}>"


# -- endpoints -----------------------------------------------------------------------------------


async def list_plugins(request: Request) -> Response:
    registry = registry_of(request)
    return reply(request, PluginList(registry.list_metadata(), registry.revision))


async def get_plugin(request: Request) -> Response:
    name = request.path_params["name"]
    return reply(request, PluginEnvelope(registry_of(request).metadata_for(name)))


async def plugin_history(request: Request) -> Response:
    name = request.path_params["name"]
    hook = request.query_params.get("hook")
    limit = _query_int(request, "limit")
    history = registry_of(request).history(name, hook, limit)
    return reply(request, PluginHistory(name, history))


async def discover(request: Request) -> Response:
    return reply(request, Catalogue(await registry_of(request).discover_plugins()))


async def install(request: Request) -> Response:
    body = await decode(request, InstallBody)
    if (body.entry_point is None) == (body.module is None):
        raise HTTPException(400, "give exactly one of entry_point or module")
    registry = registry_of(request)
    options: dict[str, Any] = {
        "name": body.name,
        "enabled": body.enabled,
        "description": body.description,
        "config": body.config,
        "revision": expected_revision(request),
    }
    if body.entry_point is not None:
        metadata = await registry.install_entry_point(body.entry_point, **options)
    else:
        assert body.module is not None
        metadata = await registry.install(body.module, **options)
    return reply(request, PluginEnvelope(metadata), status=201)


async def enable(request: Request) -> Response:
    return await _set_enabled(request, True)


async def disable(request: Request) -> Response:
    return await _set_enabled(request, False)


async def _set_enabled(request: Request, enabled: bool) -> Response:
    name = request.path_params["name"]
    registry = registry_of(request)
    metadata = await registry.set_enabled(name, enabled, revision=expected_revision(request))
    return reply(request, PluginEnvelope(metadata))


async def reload_plugin(request: Request) -> Response:
    name = request.path_params["name"]
    registry = registry_of(request)
    metadata = await registry.reload_plugin(name, revision=expected_revision(request))
    return reply(request, PluginEnvelope(metadata))


async def update_config(request: Request) -> Response:
    name = request.path_params["name"]
    registry = registry_of(request)
    body = await decode(request, ConfigBody)
    metadata = await registry.update_config(name, body.config, revision=expected_revision(request))
    return reply(request, PluginEnvelope(metadata))


async def remove(request: Request) -> Response:
    name = request.path_params["name"]
    await registry_of(request).remove(name, revision=expected_revision(request))
    return reply(request, Removed(name))


async def reload_all(request: Request) -> Response:
    registry = registry_of(request)
    plugins = await registry.reload(revision=expected_revision(request))
    return reply(request, PluginList(plugins, registry.revision))


async def fire_hook(request: Request) -> Response:
    hook = request.path_params["hook"]
    try:
        msgspec.convert(hook, HookName)
    except msgspec.ValidationError:
        raise HTTPException(400, f"{hook!r} is not a valid hook name") from None
    body = await read_body(request)
    payload = _payload(body)
    registry = registry_of(request)
    revision = expected_revision(request)
    if revision is not None and revision != registry.revision:
        raise RevisionConflictError(revision, registry.revision)
    results = await registry.fire(hook, **payload)
    return reply(request, HookResults([safe_result(r) for r in results]))


def _payload(body: bytes) -> dict[str, Any]:
    if not body.strip():
        return {}
    try:
        return msgspec.json.decode(body, type=dict[str, Any])
    except (msgspec.DecodeError, RecursionError) as exc:
        raise HTTPException(400, f"the payload must be a JSON object: {exc}") from None


async def health(request: Request) -> Response:
    return JSONResponse(Health())


# -- the table -------------------------------------------------------------------------------

Handler = Callable[[Request], Awaitable[Response]]
_LIMIT_QUERY = (
    ("hook", str, "only this hook's samples"),
    ("limit", int, "at most this many samples per hook, the newest"),
)
# Order matters: fixed paths (discover, install, reload) come before /plugins/{name}.
_TABLE: tuple[tuple[Operation, Handler], ...] = (
    (Operation("GET", "/health", "Liveness", Health, public=True), health),
    (Operation("GET", "/plugins", "Every plugin's metadata", PluginList), list_plugins),
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
        Operation("GET", "/plugins/{name}", "One plugin's metadata", PluginEnvelope, errors=(404,)),
        get_plugin,
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
        Operation("DELETE", "/plugins/{name}", "Remove it", Removed, errors=(404, 409)),
        remove,
    ),
    (
        Operation(
            "POST", "/hooks/{hook}", "Fire a hook", HookResults, body=HookPayload, errors=(400,)
        ),
        fire_hook,
    ),
)
OPERATIONS: tuple[Operation, ...] = tuple(op for op, _ in _TABLE)


def routes() -> list[BaseRoute]:
    """The REST routes, in matching order."""
    return [Route(op.path, handler, methods=[op.method]) for op, handler in _TABLE]
