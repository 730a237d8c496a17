"""Feedback collector: an HTTP endpoint that stores feedback and announces it with ``on_feedback``.

Routes, under the plugin prefix: ``POST /feedback`` takes a JSON :class:`Feedback` and answers
201 with the stored record; ``GET /feedback?limit=&offset=`` lists records newest first.
Errors answer ``{"error": <code>, "detail": <text>}``: 400 for a body that is not JSON or a bad
query number, 413 past 64 KiB, 422 for a body that does not match :class:`Feedback`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from contextlib import aclosing
from pathlib import Path
from typing import Annotated, Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from agent_pm.errors import AgentPMError
from agent_pm.plugins.base import PluginBase
from agent_pm.plugins.builtin._feedback_store import FeedbackStore
from agent_pm.plugins.paths import DataPath

__all__ = ["Feedback", "FeedbackCollectorPlugin"]

Endpoint = Callable[[Request], Awaitable[Response]]
MAX_BODY_BYTES = 64 * 1024
MAX_PAGE = 200
MAX_OFFSET = 10**12


class Feedback(msgspec.Struct, forbid_unknown_fields=True):
    """A feedback submission."""

    title: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
    rating: Annotated[int, msgspec.Meta(ge=1, le=5)]
    submitted_by: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
    comment: Annotated[str, msgspec.Meta(max_length=4000)] = ""
    source: Annotated[str, msgspec.Meta(min_length=1, max_length=50)] = "api"


class _BadRequest(Exception):
    """An invalid request, answered with ``status`` and an error body; never leaves the module."""

    def __init__(self, status: int, error: str, detail: str) -> None:
        super().__init__(detail)
        self.status, self.error, self.detail = status, error, detail


def _natural(raw: str) -> int | None:
    """``raw`` as a non-negative integer, or ``None``; long strings are refused before ``int``."""
    return int(raw) if raw.isascii() and raw.isdigit() and len(raw) <= 18 else None


def _json(content: Any, status: int = 200) -> Response:
    return Response(msgspec.json.encode(content), status, media_type="application/json")


async def _body(request: Request) -> bytes:
    """The request body, refused past :data:`MAX_BODY_BYTES` whatever ``Content-Length`` says."""
    declared = _natural(request.headers.get("content-length", ""))
    too_large = _BadRequest(413, "payload_too_large", f"body exceeds {MAX_BODY_BYTES} bytes")
    if declared is not None and declared > MAX_BODY_BYTES:
        raise too_large
    body = bytearray()
    # Close the stream explicitly when refusing early: trio will not finalise it for us.
    async with aclosing(request.stream()) as chunks:
        async for chunk in chunks:
            body += chunk
            if len(body) > MAX_BODY_BYTES:
                raise too_large
    return bytes(body)


def _feedback(body: bytes) -> Feedback:
    try:
        return msgspec.json.decode(body, type=Feedback)
    except msgspec.ValidationError as exc:  # a subclass of DecodeError: catch it first
        raise _BadRequest(422, "validation_error", str(exc)) from None
    except msgspec.DecodeError as exc:
        raise _BadRequest(400, "invalid_json", str(exc)) from None


def _number(params: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = params.get(name)
    if raw is None:
        return default
    value = _natural(raw)
    if value is None or not low <= value <= high:
        raise _BadRequest(400, "bad_request", f"{name} must be an integer in {low}..{high}")
    return value


class FeedbackCollectorPlugin(PluginBase):
    """Collects feedback over HTTP into SQLite and emits ``on_feedback`` for each record."""

    name = "feedback_collector"
    description = "Collect feedback over HTTP, store it in SQLite and announce it."

    class Config(msgspec.Struct, forbid_unknown_fields=True):
        """Where the database lives."""

        database_path: DataPath = "feedback/feedback.sqlite3"

    config: Config

    def __init__(self, config: Any = None) -> None:
        super().__init__(self.Config() if config is None else config)
        self._store: FeedbackStore | None = None

    def routes(self) -> list[BaseRoute]:
        """``POST /feedback`` and ``GET /feedback``."""
        return [
            Route("/feedback", self._endpoint(self.submit), methods=["POST"]),
            Route("/feedback", self._endpoint(self.listing), methods=["GET"]),
        ]

    async def on_enable(self) -> None:
        """Prepare the store, refusing a database this plugin did not create; the database file
        is opened on the first request."""
        store = FeedbackStore(Path(self.config.database_path), owner=self.plugin_name)
        await store.claim()
        self._store = store

    async def on_disable(self) -> None:
        """Close the database."""
        if self._store is not None:
            store, self._store = self._store, None
            await store.close()

    async def submit(self, request: Request) -> Response:
        """Store one submission, announce it, and answer 201 with the record."""
        feedback = _feedback(await _body(request))
        record = await self.store.add(msgspec.structs.asdict(feedback))
        self.log.info("stored feedback %d", record["id"])
        try:
            await self.emit("on_feedback", feedback=record)
        except AgentPMError:
            # The record is stored: failing the request now would only invite a duplicate.
            self.log.exception("emitting on_feedback for feedback %d failed", record["id"])
        return _json(record, 201)

    async def listing(self, request: Request) -> Response:
        """A page of records, newest first."""
        limit = _number(request.query_params, "limit", 50, 1, MAX_PAGE)
        offset = _number(request.query_params, "offset", 0, 0, MAX_OFFSET)
        items, total = await self.store.page(limit, offset)
        return _json({"items": items, "total": total, "limit": limit, "offset": offset})

    @property
    def store(self) -> FeedbackStore:
        """The store; only between ``on_enable`` and ``on_disable``."""
        if self._store is None:
            raise _BadRequest(503, "unavailable", "the feedback collector is not enabled")
        return self._store

    def _endpoint(self, handle: Endpoint) -> Endpoint:
        async def endpoint(request: Request) -> Response:
            try:
                return await handle(request)
            except _BadRequest as exc:
                return _json({"error": exc.error, "detail": exc.detail}, exc.status)

        return endpoint
