"""The REST endpoints of the flight recorder: list, replay and discard recorded failures.

Read keys see a failure's metadata; only admin keys see its payload (redacted of the plugin's
secrets, but still business data). Replays and discards need the admin key, as every POST and
DELETE does. Filters come from the query string; the bulk replay also takes them, with
``dry_run`` and ``limit``, from an optional JSON body whose fields win over the query's.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import replace
from datetime import datetime
from typing import Any

import anyio
import anyio.to_thread
import msgspec
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from agent_pm.api._openapi import Operation
from agent_pm.api._reading import decode_reason, natural, read_body
from agent_pm.api._rest import admin_of, registry_of, reply, safe_result
from agent_pm.errors import PluginNotFoundError
from agent_pm.plugins.failures import Failure, FailureFilter, FailureState, StoreStats, parse_since
from agent_pm.plugins.manifest import HookName
from agent_pm.plugins.registry import PluginRegistry
from agent_pm.plugins.replay import ReplayOutcome, ReplayReport, discard_effect, replay_effect

__all__ = ["OPERATIONS", "routes"]

DEFAULT_LIMIT = 100
MAX_LIMIT = 1_000
_STATES: tuple[FailureState, ...] = ("pending", "replayed")


class FailureList(msgspec.Struct):
    """A plugin's recorded failures, newest first (payloads for admin keys only); ``matched``
    counts every failure the filter matches, beyond ``limit`` too; ``store`` is the whole
    store's fill, bounds and evictions."""

    plugin: str
    failures: list[Failure]
    matched: int
    store: StoreStats


class FailureEnvelope(msgspec.Struct):
    """One recorded failure (its payload for admin keys only)."""

    failure: Failure


class ReplayBody(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Which pending failures to replay (every one when empty), oldest first; ``dry_run`` only
    counts them. Fields given here override the same query parameters."""

    hook: HookName | None = None
    since: str | None = None
    limit: int | None = None
    dry_run: bool | None = None


class Discarded(msgspec.Struct):
    """How many recorded failures were deleted."""

    plugin: str
    discarded: int


# -- request reading ---------------------------------------------------------------------------


def _limit(raw: Any) -> int:
    value = natural(str(raw)) if not isinstance(raw, int) or isinstance(raw, bool) else raw
    if value is None or not 1 <= value <= MAX_LIMIT:
        raise HTTPException(400, f"limit must be a whole number from 1 to {MAX_LIMIT}")
    return value


def _filter(name: str, fields: Mapping[str, Any]) -> FailureFilter:
    hook = fields.get("hook")
    if hook is not None:
        try:
            msgspec.convert(hook, HookName)
        except msgspec.ValidationError:
            raise HTTPException(400, f"{hook!r} is not a valid hook name") from None
    since: datetime | None = None
    if fields.get("since") is not None:
        try:
            since = parse_since(str(fields["since"]))
        except ValueError as exc:
            raise HTTPException(400, str(exc)) from None
    state = fields.get("state")
    if state is not None and state not in _STATES:
        raise HTTPException(400, "state must be pending or replayed")
    return FailureFilter(name, hook, since, state)


def _failure_id(request: Request) -> int:
    value = natural(request.path_params["id"])
    if value is None or value == 0:
        raise HTTPException(400, "a failure id is a positive whole number")
    return value


def _flag(raw: Any, key: str) -> bool:
    if isinstance(raw, bool):
        return raw
    text = str(raw).lower() if raw is not None else "false"
    if text in ("true", "1"):
        return True
    if text in ("false", "0"):
        return False
    raise HTTPException(400, f"{key} must be true or false")


def _is_admin(request: Request) -> bool:
    return bool(request.scope.get("state", {}).get("role") == "admin")


def _configured(registry: PluginRegistry, name: str) -> None:
    """404 unless ``name`` is a plugin of the manifest (only those can replay)."""
    if name not in registry.names():
        raise PluginNotFoundError(f"no plugin named {name!r}")


async def _known(registry: PluginRegistry, name: str) -> None:
    """404 unless ``name`` is a plugin of the manifest or has failures stored."""
    if name not in registry.names() and name not in await anyio.to_thread.run_sync(
        registry.failures.store.plugins
    ):
        raise PluginNotFoundError(f"no plugin named {name!r}")


# -- endpoints ---------------------------------------------------------------------------------


async def list_failures(request: Request) -> Response:
    name = request.path_params["name"]
    registry = registry_of(request)
    await _known(registry, name)
    query = request.query_params
    where = _filter(name, query)
    limit = _limit(query.get("limit", DEFAULT_LIMIT))
    store = registry.failures.store
    await registry.failures.settle()  # so a failure that just happened is listed

    def read() -> FailureList:
        failures, matched = store.page(where, limit, payloads=_is_admin(request))
        return FailureList(name, failures, matched, store.stats())

    return reply(request, await anyio.to_thread.run_sync(read))


async def get_failure(request: Request) -> Response:
    name, failure_id = request.path_params["name"], _failure_id(request)
    store = registry_of(request).failures.store
    failure = await anyio.to_thread.run_sync(store.get, name, failure_id)
    if not _is_admin(request):
        failure = msgspec.structs.replace(failure, payload=None)
    return reply(request, FailureEnvelope(failure))


async def replay_one(request: Request) -> Response:
    name, failure_id = request.path_params["name"], _failure_id(request)
    registry = registry_of(request)
    _configured(registry, name)
    force = _flag(request.query_params.get("force"), "force")
    replay = lambda: registry.replays.replay(name, failure_id, force=force)  # noqa: E731
    outcome = await admin_of(request).run("replay", name, replay, effect=replay_effect)
    return reply(request, _safe(outcome))


async def replay_matching(request: Request) -> Response:
    name = request.path_params["name"]
    registry = registry_of(request)
    _configured(registry, name)
    fields: dict[str, Any] = dict(request.query_params)
    body = await read_body(request)
    if body.strip():
        try:
            given = msgspec.json.decode(body, type=ReplayBody)
        except (msgspec.DecodeError, RecursionError, UnicodeDecodeError) as exc:
            raise HTTPException(400, f"malformed body: {decode_reason(exc)}") from None
        fields.update({k: v for k, v in msgspec.structs.asdict(given).items() if v is not None})
    if fields.get("state") not in (None, "pending"):
        raise HTTPException(400, "a bulk replay takes pending failures only")
    where = replace(_filter(name, fields), state=None)
    dry_run = _flag(fields.get("dry_run"), "dry_run")
    limit = _limit(fields.get("limit", DEFAULT_LIMIT))

    def replay() -> Any:
        return registry.replays.replay_matching(where, limit=limit, dry_run=dry_run)

    # A dry run changes nothing, so only real replays are audited.
    admin = admin_of(request)
    report = await (
        replay() if dry_run else admin.run("replay_all", name, replay, effect=replay_effect)
    )
    outcomes = [_safe(outcome) for outcome in report.outcomes]
    return reply(request, msgspec.structs.replace(report, outcomes=outcomes))


def _safe(outcome: ReplayOutcome) -> ReplayOutcome:
    if outcome.result is None:
        return outcome
    return msgspec.structs.replace(outcome, result=safe_result(outcome.result))


async def discard_one(request: Request) -> Response:
    name, failure_id = request.path_params["name"], _failure_id(request)
    store = registry_of(request).failures.store
    await anyio.to_thread.run_sync(store.get, name, failure_id)  # 404 when there is none
    where = FailureFilter(name, ids=(failure_id,))
    discard = lambda: anyio.to_thread.run_sync(store.discard, where)  # noqa: E731
    count = await admin_of(request).run("discard", name, discard, effect=discard_effect)
    return reply(request, Discarded(name, count))


async def discard_matching(request: Request) -> Response:
    name = request.path_params["name"]
    registry = registry_of(request)
    await _known(registry, name)
    where = _filter(name, request.query_params)
    discard = lambda: anyio.to_thread.run_sync(registry.failures.store.discard, where)  # noqa: E731
    count = await admin_of(request).run("discard", name, discard, effect=discard_effect)
    return reply(request, Discarded(name, count))


# -- the table -------------------------------------------------------------------------------

Handler = Callable[[Request], Awaitable[Response]]
_FILTER_QUERY: tuple[tuple[str, type, str], ...] = (
    ("hook", str, "only failures of this hook"),
    ("since", str, "only failures from this time on: ISO 8601, or a duration back (15m, 2h, 7d)"),
    ("state", str, "pending (not yet replayed successfully) or replayed"),
)
_REPLAY_QUERY: tuple[tuple[str, type, str], ...] = (
    ("hook", str, "only failures of this hook"),
    ("since", str, "only failures from this time on: ISO 8601, or a duration back (15m, 2h, 7d)"),
    ("limit", int, f"replay at most this many, the oldest first (default {DEFAULT_LIMIT})"),
    ("dry_run", bool, "only count the matching pending failures"),
)
_ONE = "/plugins/{name}/failures/{id}"
_TABLE: tuple[tuple[Operation, Handler], ...] = (
    (
        Operation(
            "GET",
            "/plugins/{name}/failures",
            "Recorded failed calls, newest first (payloads for admin keys only)",
            FailureList,
            errors=(400, 404, 503),
            query=(*_FILTER_QUERY, ("limit", int, f"at most this many (default {DEFAULT_LIMIT})")),
        ),
        list_failures,
    ),
    (
        Operation(
            "POST",
            "/plugins/{name}/failures/replay",
            "Replay the pending failures a filter matches, oldest first, paced (REPLAY_RATE)",
            ReplayReport,
            body=ReplayBody,
            errors=(404, 409, 429, 503),
            query=_REPLAY_QUERY,
        ),
        replay_matching,
    ),
    (
        Operation(
            "DELETE",
            "/plugins/{name}/failures",
            "Discard the recorded failures a filter matches",
            Discarded,
            errors=(404, 503),
            query=_FILTER_QUERY,
        ),
        discard_matching,
    ),
    (
        Operation(
            "GET",
            _ONE,
            "One recorded failure (its payload for admin keys only)",
            FailureEnvelope,
            errors=(400, 404, 503),
        ),
        get_failure,
    ),
    (
        Operation(
            "POST",
            _ONE + "/replay",
            "Replay one failure on the plugin's current instance alone",
            ReplayOutcome,
            errors=(404, 409, 503),
            query=(("force", bool, "replay even if it was replayed successfully before"),),
        ),
        replay_one,
    ),
    (
        Operation("DELETE", _ONE, "Discard one recorded failure", Discarded, errors=(404, 503)),
        discard_one,
    ),
)
OPERATIONS: tuple[Operation, ...] = tuple(op for op, _ in _TABLE)


def routes() -> list[BaseRoute]:
    """The flight recorder's routes."""
    return [Route(op.path, handler, methods=[op.method]) for op, handler in _TABLE]
