"""A Python client of the live telemetry stream, and the ``plugins tail`` command built on it.

``stream()`` yields typed messages from ``/plugins/stream`` and survives restarts and network
trouble: it reconnects with exponential backoff and resumes after the last seq it saw, so
nothing the server's replay ring still holds is lost. It runs on asyncio (the ``websockets``
client does).
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Sequence
from typing import TextIO
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import anyio
import msgspec
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from agent_pm.audit import AuditMessage
from agent_pm.plugins.bus import Lagged, StateChange
from agent_pm.plugins.telemetry import HookSample
from agent_pm.protocol import Hello, StreamError

__all__ = ["Message", "stream", "tail"]

Message = Hello | HookSample | StateChange | Lagged | StreamError | AuditMessage
_decode = msgspec.json.Decoder(list[Message]).decode
# Refusals that another attempt cannot fix: a bad key, a foreign origin, a bad filter.
_FINAL_STATUSES = frozenset({400, 401, 403, 404})


async def stream(
    url: str,
    api_key: str,
    plugins: Sequence[str] | None = None,
    hooks: Sequence[str] | None = None,
    since: int | None = None,
    *,
    backoff: float = 0.5,
    max_backoff: float = 30.0,
) -> AsyncIterator[Message]:
    """Yield the stream's messages forever, reconnecting and resuming as needed.

    The first ``Hello`` is yielded, and again whenever the server's epoch changes (it restarted,
    and its seq numbers with it): reload any state built from earlier messages. Reconnections
    to the same epoch are silent. A refused handshake (bad key, origin or filter) raises
    ``websockets.exceptions.InvalidStatus``.
    """
    last, epoch, delay = since, None, backoff
    while True:
        try:
            async with _connect(url, api_key, plugins, hooks, last, epoch) as ws:
                async for text in ws:
                    delay = backoff
                    for message in _decode(text):
                        if isinstance(message, Hello):
                            if message.epoch == epoch:
                                continue
                            if epoch is not None or last is None:
                                # A new run of the server (or no resume point yet): carry on
                                # from its present, which this hello marks.
                                last = message.seq
                            epoch = message.epoch
                        elif not isinstance(message, StreamError):
                            last = message.seq
                        yield message
        except InvalidStatus as exc:
            if exc.response.status_code in _FINAL_STATUSES:
                raise
        except (OSError, ConnectionClosed, TimeoutError, msgspec.DecodeError):
            pass
        await anyio.sleep(delay * (0.5 + random.random() / 2))  # jitter, not crypto  # noqa: S311  # nosec B311
        delay = min(delay * 2, max_backoff)


def _connect(
    url: str,
    api_key: str,
    plugins: Sequence[str] | None,
    hooks: Sequence[str] | None,
    since: int | None,
    epoch: str | None,
) -> connect:
    # The filter and resume point travel in the query string so they apply before the first
    # live message: a subscribe message sent after connecting could race it.
    parts = urlsplit(url)
    query = parse_qsl(parts.query)
    if plugins:
        query.append(("plugins", ",".join(plugins)))
    if hooks:
        query.append(("hooks", ",".join(hooks)))
    if since is not None:
        query.append(("since", str(since)))
    if epoch is not None:
        query.append(("epoch", epoch))
    target = urlunsplit(parts._replace(query=urlencode(query)))
    headers = {"X-API-Key": api_key}
    # No compression: frames are small and it would cost the server CPU per connection.
    return connect(target, additional_headers=headers, compression=None, max_size=None)


def stream_url(base: str) -> str:
    """The stream's WebSocket URL on the server at ``base`` (``http://host:port``)."""
    parts = urlsplit(base)
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    return urlunsplit(
        parts._replace(scheme=scheme, path=parts.path.rstrip("/") + "/plugins/stream")
    )


async def tail(
    url: str,
    api_key: str,
    plugins: Sequence[str] | None,
    hooks: Sequence[str] | None,
    out: TextIO,
) -> None:
    """Print the live stream to ``out``, one readable line per message, until cancelled."""
    async for message in stream(url, api_key, plugins, hooks):
        out.write(describe(message) + "\n")
        out.flush()


def describe(message: Message) -> str:
    """One human-readable line for ``message``."""
    if isinstance(message, HookSample):
        line = (
            f"{message.timestamp:%H:%M:%S.%f}"[:-3]
            + f"  #{message.seq}  {message.plugin}.{message.hook}  {message.status}"
            + f"  {message.duration_ms:.2f} ms"
        )
        return f"{line}  {message.error}" if message.error else line
    if isinstance(message, StateChange):
        plugin = message.plugin
        line = f"#{message.seq}  {plugin.name}  state={plugin.state}"
        if plugin.state != "removed":
            line += f"  health={plugin.health.state} ({plugin.health.reason})"
        return f"{line}  {plugin.error}" if plugin.error else line
    if isinstance(message, Lagged):
        return f"#{message.seq}  ... {message.missed} messages missed (the stream fell behind)"
    if isinstance(message, Hello):
        return f"connected: epoch {message.epoch}, seq {message.seq}, revision {message.revision}"
    if isinstance(message, AuditMessage):
        r = message.record
        line = (
            f"#{message.seq}  audit  {r.actor} ({r.role}) via {r.source}: {r.action}"
            f" {r.plugin or '*'} -> {r.outcome}"
        )
        return f"{line}  {r.error}" if r.error else line
    return f"server error: {message.detail}"
