"""The telemetry bus: one shared ring of messages that every subscriber reads with a cursor.

Every hook sample and every plugin state change is published here with a sequence number that
strictly increases. Publishing stores the message in the ring and touches no subscriber: each
subscriber holds a cursor into the ring and applies its filters when it drains, so publishing
costs the same with one subscriber or a thousand. A subscriber waiting for messages is woken at
most once per event-loop iteration however many messages arrive in it.

Each subscriber is bounded: of the live messages it wants and has not drained, only the newest
``capacity`` are kept; the older ones are dropped and counted, and it next receives a
:class:`Lagged` notice saying how many it missed. The last ``replay_size`` messages can be
replayed to a subscriber from a ``since`` sequence number.

The in-process :class:`Bus` is the embedded implementation; everything that publishes or
subscribes goes through its small interface (``next_seq``, ``publish``, ``subscribe``), so a
networked backend can stand in for it. Such a backend may publish messages numbered elsewhere
(a cluster-wide sequence): ``seq`` is always the highest number published or handed out.
"""

from __future__ import annotations

import asyncio
import secrets
from bisect import bisect_right
from collections.abc import Callable, Collection, Hashable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Protocol

import anyio
import anyio.lowlevel
import msgspec

from agent_pm.plugins.info import PluginInfo

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
    plugin: PluginInfo
    node: str | None = None

    @property
    def topic(self) -> tuple[str, str | None]:
        return self.plugin.name, None


class Lagged(msgspec.Struct, frozen=True, tag="lagged", tag_field="type"):
    """``missed`` messages up to and including ``seq`` were dropped for this subscriber."""

    missed: int
    seq: int

    @property
    def topic(self) -> tuple[str, str | None]:
        return "", None


class Subscription:
    """One subscriber's cursor into the bus; use it through :meth:`Bus.subscribe`.

    Messages between ``cursor`` and ``live_from`` (ring positions) were replayed from a
    ``since``: that backlog is bounded by the replay window only and is delivered first. After
    ``live_from`` come live messages, of which only the newest ``capacity`` wanted ones are
    kept. A subscriber that falls behind the whole ring loses what left it, counted in its next
    :class:`Lagged` notice (all of it: the bus no longer knows which of those it wanted).
    """

    def __init__(
        self, bus: Bus, capacity: int, plugins: Collection[str], hooks: Collection[str]
    ) -> None:
        self.capacity = capacity
        self.plugins = frozenset(plugins)
        self.hooks = frozenset(hooks)
        self.cursor = self.live_from = bus.position
        self.closed = False
        self._bus = bus
        self._missed = 0
        self._missed_until = 0
        self._gap: Lagged | None = None
        self._wakeup: anyio.Event | None = None
        self._woken = False

    def wants(self, message: Message) -> bool:
        plugin, hook = message.topic
        if self.plugins and plugin not in self.plugins:
            return False
        return not (self.hooks and hook is not None and hook not in self.hooks)

    def __len__(self) -> int:
        """How many live messages are waiting (never more than ``capacity``)."""
        dropped, wanted = self._live()
        return len(wanted) - dropped

    @property
    def backlog(self) -> int:
        """How many replayed messages are still waiting to be drained."""
        return len(self._backlog())

    @property
    def missed(self) -> int:
        """Messages dropped for this subscriber and not yet reported by a ``Lagged`` notice."""
        return self._missed + self._lost()[0] + self._live()[0]

    def refilter(self, plugins: Collection[str], hooks: Collection[str]) -> None:
        """Forget everything waiting and select messages by these topics from now on."""
        self.plugins = frozenset(plugins)
        self.hooks = frozenset(hooks)
        self.cursor = self.live_from = self._bus.position
        self._gap = None
        self._missed = 0

    def backfill(self, start: int, evicted: int, until: int) -> None:
        """Deliver the ring from position ``start`` first, after a notice for ``evicted``."""
        self._gap = Lagged(evicted, until) if evicted else None
        self.cursor = start
        self.notify()

    def drain(self, limit: int | None = None) -> list[Any]:
        """Take what is waiting, in sequence order, with ``Lagged`` notices where messages
        were dropped; at most ``limit`` messages besides the notices."""
        batch: list[Any] = []
        if self._gap is not None:
            batch.append(self._gap)
            self._gap = None
        lost, until = self._lost()
        if lost:
            self._drop(lost, until)
            self.cursor += lost
        room = self._take(self._backlog(), self.live_from, batch, limit)
        if self.cursor < self.live_from:
            return batch
        dropped, wanted = self._live()
        if dropped:
            self._drop(dropped, self._bus.seq_at(wanted[dropped - 1]))
        if self._missed:
            batch.append(Lagged(self._missed, self._missed_until))
            self._missed = 0
        self._take(wanted[dropped:], self._bus.position, batch, room)
        return batch

    def _take(
        self, positions: Sequence[int], stop: int, batch: list[Any], limit: int | None
    ) -> int | None:
        """Move the messages at up to ``limit`` of ``positions`` to ``batch`` and the cursor
        past them (to ``stop`` once all are taken); return the room left."""
        taken = positions if limit is None else positions[:limit]
        batch.extend(self._bus.messages(taken))
        if len(taken) < len(positions):
            self.cursor = positions[len(taken)]
        else:
            self.cursor = max(self.cursor, stop)
        return None if limit is None else limit - len(taken)

    def _drop(self, count: int, until: int) -> None:
        self._missed += count
        self._missed_until = until

    def _lost(self) -> tuple[int, int]:
        """How many unread messages have left the ring, and the seq below the oldest kept."""
        oldest = self._bus.oldest
        if self.cursor >= oldest:
            return 0, 0
        return oldest - self.cursor, self._bus.seq_at(oldest) - 1

    def _backlog(self) -> Sequence[int]:
        """Ring positions of the replayed messages still waiting."""
        return self._bus.wanted(self, max(self.cursor, self._bus.oldest), self.live_from)

    def _live(self) -> tuple[int, Sequence[int]]:
        """Positions of the wanted live messages, and how many of the oldest are beyond
        ``capacity`` (dropped)."""
        start = max(self.cursor, self.live_from, self._bus.oldest)
        wanted = self._bus.wanted(self, start, self._bus.position)
        return max(0, len(wanted) - self.capacity), wanted

    async def receive(self, limit: int | None = None) -> list[Any]:
        """Wait until something is waiting (or :meth:`wake` is called), then drain it."""
        while True:
            batch = self.drain(limit)
            if batch or self._woken:
                self._woken = False
                return batch
            if self.closed:
                raise anyio.EndOfStream
            self._wakeup = anyio.Event()
            self._bus.wait(self)
            try:
                await self._wakeup.wait()
            finally:
                self._wakeup = None
                self._bus.unwait(self)

    def wake(self) -> None:
        """Make a waiting :meth:`receive` return, even with nothing to deliver."""
        self._woken = True
        self.notify()

    def notify(self) -> None:
        if self._wakeup is not None:
            self._wakeup.set()

    def close(self) -> None:
        self.closed = True
        self.notify()


class Bus:
    """The in-process telemetry bus."""

    def __init__(self, replay_size: int = 10_000, buffer_size: int = 1_000) -> None:
        self.epoch = secrets.token_hex(8)
        self.replay_size = replay_size
        self.buffer_size = buffer_size
        self._seq = 0
        # Ring slot of position p is p % len(ring): positions count every message published.
        self._ring: list[Any] = [None] * max(replay_size, buffer_size)
        self.position = 0
        self._json: dict[int, tuple[Any, bytes]] = {}
        self._subscribers: list[Subscription] = []
        self._waiting: dict[Subscription, None] = {}
        self._call_soon: Callable[[Callable[[], None]], Any] | None = None
        self._wake_scheduled = False
        self._frame: tuple[tuple[Any, Any, int, Hashable], str] | None = None

    @property
    def seq(self) -> int:
        """The sequence number of the last published message."""
        return self._seq

    @property
    def oldest(self) -> int:
        """The ring position of the oldest message still kept."""
        return max(0, self.position - len(self._ring))

    @property
    def replayable(self) -> int:
        """The ring position of the oldest message a ``since`` can still replay."""
        return max(0, self.position - self.replay_size)

    def seq_at(self, position: int) -> int:
        seq: int = self._ring[position % len(self._ring)].seq
        return seq

    def next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def publish(self, message: Message) -> None:
        """Store ``message`` in the ring; subscribers waiting are woken once this iteration.

        Call it from the event loop's thread: the wake-up is scheduled on the running loop.
        """
        ring = self._ring
        leaving = self.position - self.replay_size
        if leaving >= 0 and self._json:
            self._json.pop(ring[leaving % len(ring)].seq, None)
        ring[self.position % len(ring)] = message
        self.position += 1
        if message.seq > self._seq:
            self._seq = message.seq
        if self._waiting and not self._wake_scheduled:
            self._wake_scheduled = True
            assert self._call_soon is not None
            self._call_soon(self._wake_waiting)

    def _wake_waiting(self) -> None:
        self._wake_scheduled = False
        waiting, self._waiting = self._waiting, {}
        for subscription in waiting:
            subscription.notify()

    def wait(self, subscription: Subscription) -> None:
        """Wake ``subscription`` on the next publish (called from its ``receive``)."""
        self._call_soon = _loop_call_soon()
        self._waiting[subscription] = None

    def unwait(self, subscription: Subscription) -> None:
        self._waiting.pop(subscription, None)

    def wanted(self, subscription: Subscription, start: int, stop: int) -> Sequence[int]:
        """Ring positions in ``[start, stop)`` of the messages ``subscription`` wants."""
        if not (subscription.plugins or subscription.hooks):
            return range(start, max(start, stop))
        ring = self._ring
        size = len(ring)
        return [p for p in range(start, stop) if subscription.wants(ring[p % size])]

    def messages(self, positions: Sequence[int]) -> list[Any]:
        """The messages at ``positions`` (each still in the ring)."""
        ring = self._ring
        size = len(ring)
        if isinstance(positions, range) and positions:
            first, last = positions[0] % size, positions[-1] % size
            if first <= last:
                return ring[first : last + 1]
            return ring[first:] + ring[: last + 1]
        return [ring[p % size] for p in positions]

    def encode(self, message: Any) -> bytes:
        """``message`` as JSON, encoded once however many subscribers send it.

        The bytes are cached while the message can be replayed; anything else (a ``Lagged``
        notice, an older message) is encoded on each call.
        """
        seq = message.seq
        cached = self._json.get(seq)
        # The identity check keeps a Lagged notice, which shares its seq, out of the cache.
        if cached is not None and cached[0] is message:
            return cached[1]
        data = _encoder.encode(message)
        replayable = self.replayable
        if (
            self.position > replayable
            and seq >= self.seq_at(replayable)
            and not isinstance(message, Lagged)
        ):
            self._json[seq] = (message, data)
        return data

    def frame(self, batch: list[Any], topics: Hashable) -> str:
        """``batch`` as one JSON array, joined once for every subscriber that drains the same
        messages: the last frame is kept, keyed by its first and last message and the
        subscriber's ``topics`` (with a filter fixed, those two determine the messages between
        when no ``Lagged`` notice is among them, which callers ensure)."""
        key = (batch[0], batch[-1], len(batch), topics)
        cached = self._frame
        if cached is not None and _same_frame(cached[0], key):
            return cached[1]
        encode = self.encode
        text = (b"[" + b",".join([encode(message) for message in batch]) + b"]").decode()
        self._frame = (key, text)
        return text

    def replay_start(self, since: int) -> tuple[int, int]:
        """The ring position of the first message after ``since`` within the replay window,
        and how many messages after ``since`` already left that window."""
        first = self.replayable
        oldest = self.seq_at(first) if first < self.position else self._seq + 1
        evicted = max(0, min(oldest, self._seq + 1) - since - 1)
        positions = range(first, self.position)
        return first + bisect_right(positions, since, key=self.seq_at), evicted

    def replay(self, since: int, subscription: Subscription) -> tuple[list[Any], int]:
        """Ring messages after ``since`` that ``subscription`` wants, and how many were evicted."""
        start, evicted = self.replay_start(since)
        return self.messages(self.wanted(subscription, start, self.position)), evicted

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
        capacity = capacity or self.buffer_size
        self._reserve(capacity)
        subscription = Subscription(self, capacity, plugins, hooks)
        if since is not None:
            self._backfill(subscription, since)
        self._subscribers.append(subscription)
        try:
            yield subscription
        finally:
            self._subscribers.remove(subscription)
            self.unwait(subscription)
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

        What it had waiting is discarded; the backfill from the ring replaces it, so a
        subscriber that resubscribes from the last seq it took loses nothing the ring holds.
        """
        subscription.refilter(plugins, hooks)
        if since is not None:
            self._backfill(subscription, since)

    def _backfill(self, subscription: Subscription, since: int) -> None:
        start, evicted = self.replay_start(since)
        subscription.backfill(start, evicted, since + evicted)

    def _reserve(self, capacity: int) -> None:
        """Grow the ring so it can hold ``capacity`` messages for one subscriber."""
        size = len(self._ring)
        if capacity <= size:
            return
        ring: list[Any] = [None] * capacity
        for position in range(self.oldest, self.position):
            ring[position % capacity] = self._ring[position % size]
        self._ring = ring

    def close(self) -> None:
        """Wake every subscriber so it sees the end of the stream."""
        for subscription in list(self._subscribers):
            subscription.close()


def _same_frame(a: tuple[Any, Any, int, Hashable], b: tuple[Any, Any, int, Hashable]) -> bool:
    return a[0] is b[0] and a[1] is b[1] and a[2] == b[2] and a[3] == b[3]


def _loop_call_soon() -> Callable[[Callable[[], None]], Any]:
    """How to run a callback on the running event loop soon (asyncio or trio)."""
    try:
        return asyncio.get_running_loop().call_soon
    except RuntimeError:
        native: Any = anyio.lowlevel.current_token().native_token
        return native.run_sync_soon  # type: ignore[no-any-return]


_encoder = msgspec.json.Encoder()
