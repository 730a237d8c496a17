"""What the stand-ins share: request recording and injected faults.

Faults are decided by a seeded ``random.Random`` so a demo run replays the same errors, and a
``script`` of statuses lets a test say exactly what the next answers are.
"""

from __future__ import annotations

import random
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

import anyio
import msgspec
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response

__all__ = ["CLIENT_GONE", "Faults", "RecordedRequest", "Serve", "StandIn"]

# The status recorded for a request whose client hung up before it was answered (nginx's 499).
CLIENT_GONE = 499
# Requests kept for inspection; a long demo run keeps only the most recent ones.
RECORD_LIMIT = 1_000

Serve = Callable[[Request, Any], Awaitable[Response]]


@dataclass
class Faults:
    """Injected misbehaviour: latency (always, or for a ``slow_rate`` share of requests), rate
    limiting (429 + ``Retry-After``) and server errors.

    ``script`` (and :meth:`queue`) holds statuses served first, one per request, before the
    random draws; a status under 400 there means "serve normally".
    """

    failure_rate: float = 0.0
    failure_status: int = 503
    rate_limit_rate: float = 0.0
    retry_after_seconds: int = 1
    latency_seconds: float = 0.0
    slow_rate: float = 0.0
    slow_seconds: float = 0.0
    seed: int | None = None
    script: Iterable[int] = ()

    def __post_init__(self) -> None:
        self._random = random.Random(self.seed)  # fault injection, not crypto  # noqa: S311  # nosec B311
        self._script = deque(self.script)

    def queue(self, *statuses: int) -> None:
        """Answer the next requests with ``statuses``, in order."""
        self._script.extend(statuses)

    def draw(self) -> int | None:
        """The status to fail the next request with, or ``None`` to serve it."""
        if self._script:
            status = self._script.popleft()
            return None if status < 400 else status
        roll = self._random.random()
        if roll < self.rate_limit_rate:
            return 429
        if roll < self.rate_limit_rate + self.failure_rate:
            return self.failure_status
        return None

    def delay(self) -> float:
        """Seconds to hold the next request: the fixed latency, plus sometimes a slow answer."""
        slow = self.slow_rate and self._random.random() < self.slow_rate
        return self.latency_seconds + (self.slow_seconds if slow else 0.0)

    def response(self, status: int) -> Response:
        """The canned answer for an injected failure."""
        headers = {"Retry-After": str(self.retry_after_seconds)} if status == 429 else {}
        return JSONResponse({"error": "injected failure"}, status_code=status, headers=headers)


@dataclass(frozen=True)
class RecordedRequest:
    """One request a stand-in received, and the status it answered with."""

    method: str
    path: str
    headers: dict[str, str]
    body: Any
    status: int


class StandIn:
    """Base of the stand-ins: records requests, injects faults, decodes JSON bodies."""

    def __init__(self, faults: Faults | None = None) -> None:
        self.faults = faults or Faults()
        self.requests: list[RecordedRequest] = []
        self.answered: Counter[int] = Counter()
        self._recorded = anyio.Event()

    def endpoint(self, serve: Serve) -> Callable[[Request], Awaitable[Response]]:
        """A Starlette endpoint running ``serve`` behind the recording, faults and auth check."""

        async def endpoint(request: Request) -> Response:
            return await self._handle(request, serve)

        return endpoint

    def unauthorized(self, request: Request) -> Response | None:
        """The answer to a request with bad credentials, ``None`` when they are good."""
        raise NotImplementedError

    async def _answer(self, request: Request, body: Any, serve: Serve) -> Response:
        status = self.faults.draw()
        if status is not None:
            return self.faults.response(status)
        refusal = self.unauthorized(request)
        return refusal if refusal is not None else await serve(request, body)

    async def _handle(self, request: Request, serve: Serve) -> Response:
        """Apply faults, then ``serve(request, body)``; record what happened either way."""
        try:
            raw = await request.body()
        except ClientDisconnect:
            # The caller gave up (a plugin's HTTP timeout): nobody is left to answer.
            self._record(request, None, CLIENT_GONE)
            return Response(status_code=CLIENT_GONE)
        delay = self.faults.delay()
        if delay:
            await anyio.sleep(delay)
        try:
            body = msgspec.json.decode(raw) if raw else None
        except msgspec.DecodeError:
            body = raw.decode("utf-8", "replace")
            response: Response = JSONResponse({"error": "malformed JSON"}, status_code=400)
        else:
            response = await self._answer(request, body, serve)
        self._record(request, body, response.status_code)
        return response

    async def answered_total(self, count: int) -> None:
        """Wait until the stand-in has answered ``count`` requests in all."""
        while self.answered.total() < count:
            await self._recorded.wait()

    def _record(self, request: Request, body: Any, status: int) -> None:
        self.answered[status] += 1
        self._recorded.set()
        self._recorded = anyio.Event()
        self.requests.append(
            RecordedRequest(request.method, request.url.path, dict(request.headers), body, status)
        )
        if len(self.requests) > RECORD_LIMIT:
            del self.requests[: RECORD_LIMIT // 2]
