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
    """One subscriber's bounded view of the bus; use it through :meth:`Bus.subscribe`.

    Live messages wait in a buffer of ``capacity`` (the oldest is dropped when it is full and
    reported by a :class:`Lagged` notice). Messages replayed from the ring wait in a separate
    backlog, bounded by the ring itself, so a backfill of the whole ring never overflows the
    live buffer; the backlog is delivered first.
    """

    def __init__(self, capacity: int, plugins: Collection[str], hooks: Collection[str]) -> None:
        self.capacity = capacity
        self.plugins = frozenset(plugins)
        self.hooks = frozenset(hooks)
        self.missed = 0
        self.missed_until = 0
        self._buffer: deque[Any] = deque()
        self._backlog: deque[Any] = deque()
        self._gap: Lagged | None = None
        self._wakeup: anyio.Event | None = None
        self._woken = False
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
        """How many live messages are buffered (never more than ``capacity``)."""
        return len(self._buffer)

    @property
    def backlog(self) -> int:
        """How many replayed messages are still waiting to be drained."""
        return len(self._backlog)

    def refilter(self, plugins: Collection[str], hooks: Collection[str]) -> None:
        """Forget everything buffered and select messages by these topics from now on."""
        self.plugins = frozenset(plugins)
        self.hooks = frozenset(hooks)
        self._buffer.clear()
        self._backlog.clear()
        self._gap = None
        self.missed = 0

    def backfill(self, messages: list[Any], evicted: int, until: int) -> None:
        """Queue replayed ``messages`` ahead of live ones, after a notice for ``evicted``."""
        self._gap = Lagged(evicted, until) if evicted else None
        self._backlog.extend(messages)
        if self._wakeup is not None and self._ready():
            self._wakeup.set()

    def drain(self, limit: int | None = None) -> list[Any]:
        """Take what is waiting, in sequence order, with ``Lagged`` notices where messages
        were dropped; at most ``limit`` messages besides the notices."""
        batch: list[Any] = []
        if self._gap is not None:
            batch.append(self._gap)
            self._gap = None
        room = _take(self._backlog, batch, limit)
        if self._backlog:
            return batch
        if self.missed:
            batch.append(Lagged(self.missed, self.missed_until))
            self.missed = 0
        _take(self._buffer, batch, room)
        return batch

    def _ready(self) -> bool:
        return bool(self._buffer or self.missed or self._backlog or self._gap or self._woken)

    async def receive(self, limit: int | None = None) -> list[Any]:
        """Wait until something is buffered (or :meth:`wake` is called), then drain it."""
        while not self._ready():
            if self.closed:
                raise anyio.EndOfStream
            self._wakeup = anyio.Event()
            try:
                await self._wakeup.wait()
            finally:
                self._wakeup = None
        self._woken = False
        return self.drain(limit)

    def wake(self) -> None:
        """Make a waiting :meth:`receive` return, even with nothing to deliver."""
        self._woken = True
        if self._wakeup is not None:
            self._wakeup.set()

    def close(self) -> None:
        self.closed = True
        if self._wakeup is not None:
            self._wakeup.set()


def _take(source: deque[Any], batch: list[Any], limit: int | None) -> int | None:
    """Move up to ``limit`` messages from ``source`` to ``batch``; return the room left."""
    take = len(source) if limit is None else min(limit, len(source))
    batch.extend(source.popleft() for _ in range(take))
    return None if limit is None else limit - take


class Bus:
    """The in-process telemetry bus."""

    def __init__(self, replay_size: int = 10_000, buffer_size: int = 1_000) -> None:
        self.epoch = secrets.token_hex(8)
        self.replay_size = replay_size
        self.buffer_size = buffer_size
        self._counter = count(1)
        self._seq = 0
        self._ring: deque[Any] = deque(maxlen=replay_size)
        self._json: dict[int, tuple[Any, bytes]] = {}
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
        ring = self._ring
        if len(ring) == self.replay_size:
            self._json.pop(ring[0].seq, None)
        ring.append(message)
        for subscription in self._subscribers:
            if subscription.wants(message):
                subscription.push(message)

    def encode(self, message: Any) -> bytes:
        """``message`` as JSON, encoded once however many subscribers send it.

        The bytes are cached while the message is in the replay ring; anything else (a
        ``Lagged`` notice, a message already evicted) is encoded on each call.
        """
        seq = message.seq
        cached = self._json.get(seq)
        # The identity check keeps a Lagged notice, which shares its seq, out of the cache.
        if cached is not None and cached[0] is message:
            return cached[1]
        data = _encoder.encode(message)
        ring = self._ring
        if ring and seq >= ring[0].seq and not isinstance(message, Lagged):
            self._json[seq] = (message, data)
        return data

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
            self._backfill(subscription, since)
        self._subscribers.append(subscription)
        try:
            yield subscription
        finally:
            self._subscribers.remove(subscription)
            subscription.close()

    def resubscribe(
        self,
        subscription: Subscription,
        *,
        plugins: Collection[str] = (),
        hooks: Collection[str] = (),
        since: int | None = None,
    ) -> None:
        """Give ``subscription`` new topics and restart it after ``since`` (``None``: now).

        What it had buffered is discarded; the backfill from the ring replaces it, so a
        subscriber that resubscribes from the last seq it took loses nothing the ring holds.
        """
        subscription.refilter(plugins, hooks)
        if since is not None:
            self._backfill(subscription, since)

    def _backfill(self, subscription: Subscription, since: int) -> None:
        backlog, evicted = self.replay(since, subscription)
        subscription.backfill(backlog, evicted, since + evicted)

    def close(self) -> None:
        """Wake every subscriber so it sees the end of the stream."""
        for subscription in list(self._subscribers):
            subscription.close()


_encoder = msgspec.json.Encoder()
