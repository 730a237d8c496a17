"""``GET /audit``: the audit log for admins, oldest first, paged with ``since`` and ``limit``."""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from agent_pm.api._errors import JSONResponse
from agent_pm.api._openapi import Operation
from agent_pm.api._reading import natural, query_int
from agent_pm.audit import AuditLog, AuditRecord

__all__ = ["DEFAULT_LIMIT", "MAX_LIMIT", "OPERATION", "AuditList", "parse_since", "routes"]

DEFAULT_LIMIT = 100
MAX_LIMIT = 1_000


class AuditList(msgspec.Struct, frozen=True):
    """Audit records, oldest first; pass the last ``id`` as ``since`` for the next page."""

    records: list[AuditRecord]


OPERATION = Operation(
    "GET",
    "/audit",
    "The audit log of admin actions (admin key only)",
    AuditList,
    errors=(400,),
    query=(
        ("since", str, "only records after this id, or after this ISO 8601 time"),
        ("limit", int, f"at most this many records (default {DEFAULT_LIMIT}, max {MAX_LIMIT})"),
    ),
)


def parse_since(raw: str | None) -> int | datetime | None:
    """``since`` as a record id or an ISO 8601 time (UTC when naive); ``ValueError`` else."""
    if raw is None or raw == "":
        return None
    number = natural(raw)
    if number is not None:
        return number
    try:
        when = datetime.fromisoformat(raw) if len(raw) <= 40 else None
    except ValueError:
        when = None
    if when is None:
        raise ValueError("since must be a record id or an ISO 8601 time")
    return when if when.tzinfo else when.replace(tzinfo=UTC)


async def audit(request: Request) -> Response:
    if request.scope.get("state", {}).get("role") != "admin":
        raise HTTPException(403, "this operation needs the admin key")
    limit = query_int(request, "limit")
    if limit is not None and not 1 <= limit <= MAX_LIMIT:
        raise HTTPException(400, f"limit must be between 1 and {MAX_LIMIT}")
    try:
        since = parse_since(request.query_params.get("since"))
    except ValueError as exc:
        raise HTTPException(400, str(exc)) from None
    log: AuditLog = request.app.state.audit
    records = await log.read(since, limit or DEFAULT_LIMIT)
    return JSONResponse(AuditList(records), headers={"Cache-Control": "no-store"})


def routes() -> list[BaseRoute]:
    """The ``/audit`` route."""
    return [Route(OPERATION.path, audit, methods=[OPERATION.method])]
