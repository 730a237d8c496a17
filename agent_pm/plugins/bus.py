"""The telemetry bus: publish/subscribe with bounded per-subscriber buffers and a replay ring.

Every hook sample and every plugin state change is published here with a sequence number that
strictly increases. Publishing never blocks: each subscriber has its own bounded buffer, and when
it is full the oldest message is dropped and counted, so the subscriber next receives a
:class:`Lagged` notice saying how many it missed. Recent messages stay in a replay ring so a
subscriber can backfill from a ``since`` sequence number.

The in-process :class:`Bus` is the embedded implementation; everything that publishes or
subscribes goes through its small interface (``next_seq``, ``publish``, ``subscribe``), so a
networked backend can stand in for it.
"""

from __future__ import annotations

import secrets
from collections import deque
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from itertools import count
from typing import Any, Protocol

import anyio
import msgspec

__all__ = ["Bus", "Lagged", "Message", "StateChange", "Subscription"]


class Message(Protocol):
    """What the bus carries: anything with a sequence number and a (plugin, hook) topic."""

    @property
    def seq(self) -> int: ...

    @property
    def topic(self) -> tuple[str, str | None]: ...


class StateChange(msgspec.Struct, frozen=True, tag="state", tag_field="type"):
    """A plugin's metadata after an admin, lifecycle or error event."""

    seq: int
    plugin: dict[str, Any]

    @property
    def topic(self) -> tuple[str, str | None]:
        return str(self.plugin.get("name", "")), None


class Lagged(msgspec.Struct, frozen=True, tag="lagged", tag_field="type"):
    """``missed`` messages up to and including ``seq`` were dropped for this subscriber."""

    missed: int
    seq: int

    @property
    def topic(self) -> tuple[str, str | None]:
        return "", None


class Subscription:
    """One subscriber's bounded view of the bus; use it through :meth:`Bus.subscribe`."""

    def __init__(self, capacity: int, plugins: Collection[str], hooks: Collection[str]) -> None:
        self.capacity = capacity
        self.plugins = frozenset(plugins)
        self.hooks = frozenset(hooks)
        self.missed = 0
        self.missed_until = 0
        self._buffer: deque[Any] = deque()
        self._wakeup: anyio.Event | None = None
        self.closed = False

    def wants(self, message: Message) -> bool:
        plugin, hook = message.topic
        if self.plugins and plugin not in self.plugins:
            return False
        return not (self.hooks and hook is not None and hook not in self.hooks)

    def push(self, message: Message) -> None:
        buffer = self._buffer
        if len(buffer) >= self.capacity:
            self.missed += 1
            self.missed_until = buffer.popleft().seq
        buffer.append(message)
        if self._wakeup is not None:
            self._wakeup.set()

    def __len__(self) -> int:
        return len(self._buffer)

    def drain(self, limit: int | None = None) -> list[Any]:
        """Take what is buffered (a ``Lagged`` notice first if messages were dropped)."""
        batch: list[Any] = []
        if self.missed:
            batch.append(Lagged(self.missed, self.missed_until))
            self.missed = 0
        buffer = self._buffer
        take = len(buffer) if limit is None else min(limit, len(buffer))
        batch.extend(buffer.popleft() for _ in range(take))
        return batch

    async def receive(self, limit: int | None = None) -> list[Any]:
        """Wait until something is buffered, then drain it."""
        while not self._buffer and not self.missed:
            if self.closed:
                raise anyio.EndOfStream
            self._wakeup = anyio.Event()
            try:
                await self._wakeup.wait()
            finally:
                self._wakeup = None
        return self.drain(limit)

    def close(self) -> None:
        self.closed = True
        if self._wakeup is not None:
            self._wakeup.set()


class Bus:
    """The in-process telemetry bus."""

    def __init__(self, replay_size: int = 10_000, buffer_size: int = 1_000) -> None:
        self.epoch = secrets.token_hex(8)
        self.replay_size = replay_size
        self.buffer_size = buffer_size
        self._counter = count(1)
        self._seq = 0
        self._ring: deque[Any] = deque(maxlen=replay_size)
        self._subscribers: list[Subscription] = []

    @property
    def seq(self) -> int:
        """The sequence number of the last published message."""
        return self._seq

    def next_seq(self) -> int:
        self._seq = next(self._counter)
        return self._seq

    def publish(self, message: Message) -> None:
        """Store ``message`` in the replay ring and hand it to every interested subscriber."""
        self._ring.append(message)
        for subscription in self._subscribers:
            if subscription.wants(message):
                subscription.push(message)

    def replay(self, since: int, subscription: Subscription) -> tuple[list[Any], int]:
        """Ring messages after ``since`` that ``subscription`` wants, and how many were evicted."""
        ring = self._ring
        oldest = ring[0].seq if ring else self._seq + 1
        evicted = max(0, min(oldest, self._seq + 1) - since - 1)
        kept = [m for m in ring if m.seq > since and subscription.wants(m)]
        return kept, evicted

    @contextmanager
    def subscribe(
        self,
        *,
        plugins: Collection[str] = (),
        hooks: Collection[str] = (),
        since: int | None = None,
        capacity: int | None = None,
    ) -> Iterator[Subscription]:
        """Subscribe for the ``with`` block, first backfilling what came after ``since``."""
        subscription = Subscription(capacity or self.buffer_size, plugins, hooks)
        if since is not None:
            backlog, evicted = self.replay(since, subscription)
            if evicted:
                subscription.missed = evicted
                subscription.missed_until = since + evicted
            for message in backlog:
                subscription.push(message)
        self._subscribers.append(subscription)
        try:
            yield subscription
        finally:
            self._subscribers.remove(subscription)
            subscription.close()

    def close(self) -> None:
        """Wake every subscriber so it sees the end of the stream."""
        for subscription in list(self._subscribers):
            subscription.close()
