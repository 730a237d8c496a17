"""Cluster events: small facts one node tells every other, applied within milliseconds.

A *topic* (a breaker that opened or closed, a revoked session, a failed login) is a kind of
event with a handler on every node. :meth:`ClusterEvents.send` never waits: the event joins an
outbox that a background task writes, one pipeline per burst, as entries of the stream
``{prefix}events`` (``MAXLEN ~ 1000``) together with the lasting state the topic keeps in Redis
(say, the hash of open breakers). Every node blocks on that stream and hands each other node's
event to its topic; a node's own events were applied where they happened.

Whenever a node (re)connects, each topic first *joins*: it reads the state Redis holds and
shares what this node changed while it was cut off, then the node follows the stream from the
position noted before that read, so nothing said in between is missed. Without Redis, events
are dropped (each node acts alone) and counted.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Sequence
from typing import Any, Protocol

import anyio
from anyio.abc import TaskStatus
from coredis.tokens import PureToken

from agent_pm.plugins.cluster.doorbell import Doorbell
from agent_pm.plugins.cluster.link import Redis

__all__ = ["ClusterEvents", "Topic"]

logger = logging.getLogger(__name__)
STREAM_LENGTH = 1_000
OUTBOX_SIZE = 10_000
READ_BLOCK_MS = 1_000


class Topic(Protocol):
    """One kind of event: how it is stored in Redis, and how other nodes apply it."""

    kind: str

    async def join(self, redis: Redis) -> None:
        """(Re)connected: catch up with the state Redis holds, share this node's own."""

    def store(self, pipe: Any, payload: bytes) -> None:
        """Queue on ``pipe`` the lasting state change the event ``payload`` makes, if any."""

    def apply(self, payload: bytes) -> None:
        """Another node's event."""


class ClusterEvents:
    """Node ``node``'s end of the event stream ``{prefix}events``, for ``topics``."""

    def __init__(self, node: str, prefix: str, topics: Sequence[Topic] = ()) -> None:
        self.node = node
        self.topics = {topic.kind: topic for topic in topics}
        self.dropped = 0
        self._stream = f"{prefix}events"
        self._outbox: deque[tuple[str, bytes]] = deque()
        self._doorbell = Doorbell()  # rung when an event is sent
        self._linked = False
        self._writing = 0
        self._flushed = Doorbell()  # rung when a batch is written, or dropped

    async def written(self) -> None:
        """Wait until every event sent so far is written to Redis (or dropped with the link)."""
        await self._flushed.wait(lambda: not self._outbox and not self._writing)

    def add(self, topic: Topic) -> None:
        """Handle ``topic`` too (from the next connection on, when it joins)."""
        self.topics[topic.kind] = topic

    def send(self, kind: str, payload: bytes) -> None:
        """Tell every other node; returns at once (dropped, and counted, without Redis)."""
        if not self._linked or len(self._outbox) >= OUTBOX_SIZE:
            self.dropped += 1
            return
        self._outbox.append((kind, payload))
        self._doorbell.ring()

    # -- the service the link runs -------------------------------------------------------

    async def serve(self, redis: Redis, *, task_status: TaskStatus[None]) -> None:
        newest = await redis.xrevrange(self._stream, count=1)
        last: bytes | str = newest[0].identifier if newest else "0-0"
        self._linked = True  # from here on, events wait in the outbox for the sender
        for topic in list(self.topics.values()):
            await topic.join(redis)
        async with anyio.create_task_group() as group:
            group.start_soon(self._send, redis)
            task_status.started()
            while True:
                answer = await redis.xread({self._stream: last}, count=100, block=READ_BLOCK_MS)
                for entries in (answer or {}).values():
                    for entry in entries:
                        last = entry.identifier
                        self._apply(entry.field_values)

    def down(self) -> None:
        self._linked = False
        self.dropped += len(self._outbox) + self._writing
        self._outbox.clear()
        self._writing = 0
        self._flushed.ring()

    async def _send(self, redis: Redis) -> None:
        outbox = self._outbox
        while True:
            await self._doorbell.wait(lambda: outbox)
            batch = [outbox.popleft() for _ in range(len(outbox))]
            self._writing = len(batch)
            async with redis.pipeline(transaction=False) as pipe:
                for kind, payload in batch:
                    topic = self.topics.get(kind)
                    if topic is not None:
                        topic.store(pipe, payload)
                    fields: dict[str, str | bytes] = {"n": self.node, "k": kind, "d": payload}
                    pipe.xadd(
                        self._stream,
                        fields,
                        trim_strategy=PureToken.MAXLEN,
                        trim_operator=PureToken.APPROXIMATELY,
                        threshold=STREAM_LENGTH,
                    )
            self._writing = 0
            self._flushed.ring()

    def _apply(self, fields: Any) -> None:
        if _text(fields.get(b"n", b"")) == self.node:
            return
        topic = self.topics.get(_text(fields.get(b"k", b"")))
        if topic is None:
            return
        try:
            topic.apply(fields.get(b"d", b""))
        except ValueError as exc:  # msgspec's decode errors are ValueErrors
            logger.warning("ignored a %s event that does not decode: %s", topic.kind, exc)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
