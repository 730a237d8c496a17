"""The link to Redis: one client, the services that run while it is up, reconnection with backoff.

A *service* (the telemetry stream, the control plane) has a ``serve(redis)`` coroutine that runs
for as long as the connection holds and raises when it breaks, and a ``down()`` method called once
the link is lost. When any service fails, the others are cancelled, every service hears
``down()``, and the link waits (0.1 s doubling to 5 s, with jitter) before it connects again and
starts them all afresh, which is where each one resynchronises.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from typing import Any, Protocol

import anyio
import coredis
from anyio.abc import TaskStatus
from coredis.exceptions import RedisError
from coredis.retry import NoRetryPolicy

from agent_pm.plugins.cluster.report import LinkState
from agent_pm.plugins.telemetry import now

__all__ = ["RedisLink", "Service", "connect"]

logger = logging.getLogger(__name__)
Redis = coredis.Redis[bytes]
# What a lost or refused connection raises; anything else is a bug and ends the server.
LINK_ERRORS = (RedisError, OSError, TimeoutError)


class Service(Protocol):
    """Work that runs while the link is up."""

    async def serve(self, redis: Redis, *, task_status: TaskStatus[None]) -> None:
        """Synchronise, report started, then run until cancelled; raise if the link breaks."""

    def down(self) -> None:
        """The link was lost: carry on without Redis until the next ``serve``."""


def connect(url: str) -> Redis:
    """A client for ``url`` that fails fast: the link does the retrying, with backoff."""
    client: Redis = coredis.Redis.from_url(
        url,
        retry_policy=NoRetryPolicy(),
        connect_timeout=2.0,
        stream_timeout=5.0,
    )
    return client


class Backoff:
    """Delays between connection attempts: doubling from ``low`` up to ``high``, jittered."""

    def __init__(self, low: float = 0.1, high: float = 5.0) -> None:
        self.low, self.high = low, high
        self.delay = low

    def next(self) -> float:
        delay = self.delay
        self.delay = min(self.high, delay * 2)
        # Nodes that lost Redis together should not all knock at the same instant.
        return delay * random.uniform(0.5, 1.0)  # noqa: S311  # nosec B311

    def reset(self) -> None:
        self.delay = self.low


class RedisLink:
    """Keeps ``services`` running against the Redis at ``url`` for as long as :meth:`run` runs."""

    def __init__(self, url: str, services: Sequence[Service], backoff: Backoff | None = None):
        self.url = url
        self.services = services
        self.backoff = backoff or Backoff()
        self._state = LinkState("connecting", now())
        self._changed = anyio.Event()

    @property
    def state(self) -> LinkState:
        return self._state

    @state.setter
    def state(self, state: LinkState) -> None:
        self._state = state
        self._changed.set()
        self._changed = anyio.Event()

    @property
    def up(self) -> bool:
        return self.state.state == "up"

    async def wait_up(self, up: bool = True) -> None:
        """Wait until the link is up (or, with ``up=False``, not up)."""
        while self.up != up:
            await self._changed.wait()

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Connect, serve, and reconnect whenever the link breaks, until cancelled."""
        client = connect(self.url)
        async with client:
            task_status.started()
            while True:
                try:
                    await self._session(client)
                except* LINK_ERRORS as group:
                    self._lost(_first(group))
                await anyio.sleep(self.backoff.next())

    async def _session(self, client: Redis) -> None:
        await client.ping()
        async with anyio.create_task_group() as group:
            for service in self.services:
                await group.start(_serve, service, client)
            self.backoff.reset()
            self.state = LinkState("up", now(), self.state.reconnects)
            logger.info("connected to Redis")

    def _lost(self, error: BaseException) -> None:
        was_up = self.up
        detail = str(error) or type(error).__name__
        self.state = LinkState("down", now(), self.state.reconnects + was_up, detail)
        for service in self.services:
            service.down()
        if was_up:
            logger.warning("lost Redis, running on local state until it returns: %s", detail)


def _first(error: BaseException) -> BaseException:
    """The first error a (nested) exception group holds."""
    while isinstance(error, BaseExceptionGroup):
        error = error.exceptions[0]
    return error


async def _serve(service: Service, client: Redis, *, task_status: Any) -> None:
    await service.serve(client, task_status=task_status)
