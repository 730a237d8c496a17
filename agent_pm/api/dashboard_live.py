"""The dashboard's live channel: coalesced, server-rendered HTML fragments over a WebSocket.

The channel subscribes to the telemetry bus and only *marks* what changed: which plugins, whether
any hook ran, whether the selected timeline moved, whether plugins came or went. At most every
``TICK`` seconds it renders those regions from the registry's current state and sends one message
``{"content": "<out-of-band fragments>", "seq": N, "epoch": E}`` that htmx's ws extension swaps
in by id. A burst of thousands of samples per second therefore costs the browser a handful of
swaps per second, each bounded (history rows are capped).

Resuming: the page embeds the bus ``seq`` it was rendered at; the client echoes the last ``seq``
it saw in a ``resume`` message on every (re)connect, and the bus replays what came after it. If
the replay ring no longer reaches back that far (a ``Lagged`` notice), or the server restarted
(another ``epoch``), every region is re-rendered instead.

Client messages: ``{"type": "resume", "since", "epoch", "pair"}`` and, from the selection form,
``{"pair": "plugin:hook"}``.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import anyio
from markupsafe import Markup
from starlette.websockets import WebSocket, WebSocketDisconnect

from agent_pm.api import dashboard_render as ui
from agent_pm.api.security import same_origin
from agent_pm.api.session import Session, session_from_scope
from agent_pm.plugins.bus import Lagged, StateChange
from agent_pm.plugins.telemetry import HookSample

__all__ = ["TICK", "LiveChannel", "live"]

TICK = 0.25
RESUME_WAIT = 2.0
BUFFER = 8_192
CLOSE_UNAUTHORIZED = 4401
logger = logging.getLogger(__name__)


class LiveChannel:
    """What one connected page needs next, accumulated between ticks."""

    def __init__(self, registry: Any, session: Session, selection: ui.Selection) -> None:
        self.registry = registry
        self.session = session
        self.selection = selection
        self.names = set(registry.names())
        self.seq = registry.bus.seq
        self.full = False
        self.plugins: set[str] = set()
        self.states: set[str] = set()
        self.hooks = False
        self.timeline = False
        self.selection_changed = False

    def absorb(self, batch: list[Any]) -> None:
        """Mark what ``batch`` changed."""
        for message in batch:
            if isinstance(message, HookSample):
                self.plugins.add(message.plugin)
                self.hooks = True
                if (message.plugin, message.hook) == (self.selection.plugin, self.selection.hook):
                    self.timeline = True
            elif isinstance(message, StateChange):
                name = str(message.plugin.get("name", ""))
                self.plugins.add(name)
                self.states.add(name)
                self.hooks = True
                if message.plugin.get("state") == "removed" or name not in self.names:
                    self.full = True
            elif isinstance(message, Lagged):
                self.full = True
            self.seq = max(self.seq, message.seq)

    @property
    def dirty(self) -> bool:
        return (
            self.full or self.hooks or self.timeline or self.selection_changed or bool(self.plugins)
        )

    def select(self, wanted: str | None) -> None:
        metas = self.registry.list_metadata(history=False)
        selection = ui.selection_for(metas, wanted)
        if selection != self.selection:
            self.selection = selection
            self.timeline = True

    async def render(self) -> str:
        """The fragments for everything marked, then forget the marks."""
        registry = self.registry
        if self.full:
            self.names = set(registry.names())
            content = await ui.full_fragments(registry, self.session, self.selection)
        else:
            content = self._partial(registry.list_metadata(history=False))
        self.full = self.hooks = self.timeline = self.selection_changed = False
        self.plugins, self.states = set(), set()
        return json.dumps({"content": content, "seq": self.seq, "epoch": registry.bus.epoch})

    def _partial(self, metas: list[dict[str, Any]]) -> str:
        parts = []
        if self.plugins:
            parts.append(ui.summary_rows(metas, oob=True, names=self.plugins & self.names))
        if self.hooks:
            parts.append(ui.hooks_panel(metas, oob=True))
        if self.timeline:
            parts.append(ui.timeline_panel(self.registry, self.selection, oob=True))
        if self.states and self.session.is_admin:
            parts.append(ui.admin_states(metas, self.session, self.states & self.names))
        if self.states:
            parts.append(
                ui.render(
                    "partials/config_errors.html", errors=self.registry.config_errors, oob=True
                )
            )
        return Markup("").join(parts)


async def live(websocket: WebSocket) -> None:
    """``/dashboard/live``: session cookie and same-origin required."""
    if not same_origin(websocket):
        await websocket.close(code=1008)
        return
    session = session_from_scope(websocket.scope)
    await websocket.accept()
    if session is None:
        await websocket.close(code=CLOSE_UNAUTHORIZED, reason="log in again")
        return
    registry = websocket.app.state.registry
    channel = LiveChannel(registry, session, ui.Selection())
    try:
        hello = await _first_message(websocket)
    except WebSocketDisconnect:
        return  # gone before saying hello (or closed by the server: message too big)
    since = _resume_point(hello, registry, channel)
    lock = anyio.Lock()
    try:
        with registry.bus.subscribe(since=since, capacity=BUFFER) as subscription:
            async with anyio.create_task_group() as tg:
                tg.start_soon(_listen, websocket, channel, lock, tg.cancel_scope)
                await _pump(websocket, channel, subscription, lock)
                tg.cancel_scope.cancel()
    except* (WebSocketDisconnect, OSError, anyio.ClosedResourceError):
        # The page went away mid-send: nothing left to tell it.
        pass


async def _first_message(websocket: WebSocket) -> dict[str, Any]:
    with anyio.move_on_after(RESUME_WAIT):
        return _parse(await websocket.receive_text())
    return {}


def _parse(text: str) -> dict[str, Any]:
    try:
        data = json.loads(text)
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _resume_point(hello: dict[str, Any], registry: Any, channel: LiveChannel) -> int | None:
    # The page already shows its selection; only what changed since ``since`` is sent.
    metas = registry.list_metadata(history=False)
    channel.selection = ui.selection_for(metas, hello.get("pair"))
    since = hello.get("since")
    bus = registry.bus
    if hello.get("epoch") != bus.epoch or not isinstance(since, int) or since > bus.seq:
        channel.full = True
        return None
    channel.seq = since
    return since


async def _listen(
    websocket: WebSocket, channel: LiveChannel, lock: anyio.Lock, scope: anyio.CancelScope
) -> None:
    """Selection changes from the page; the timeline is pushed at once."""
    try:
        while True:
            message = _parse(await websocket.receive_text())
            if "pair" in message:
                channel.select(str(message["pair"]))
                if channel.timeline:
                    channel.timeline = False
                    await _send(
                        websocket,
                        lock,
                        json.dumps(
                            {
                                "content": ui.timeline_panel(
                                    channel.registry, channel.selection, oob=True
                                )
                            }
                        ),
                    )
    except WebSocketDisconnect:
        scope.cancel()


async def _pump(
    websocket: WebSocket, channel: LiveChannel, subscription: Any, lock: anyio.Lock
) -> None:
    if channel.dirty:
        await _send(websocket, lock, await channel.render())
    last = 0.0
    while True:
        try:
            channel.absorb(await subscription.receive())
        except anyio.EndOfStream:
            # The registry is shutting down; the page reconnects to whatever comes next.
            await websocket.close(code=1012, reason="service restart")
            return
        wait = last + TICK - time.monotonic()
        if wait > 0:
            await anyio.sleep(wait)
        channel.absorb(subscription.drain())
        if channel.session.expires <= time.time():
            await websocket.close(code=CLOSE_UNAUTHORIZED, reason="session expired")
            return
        if channel.dirty:
            await _send(websocket, lock, await channel.render())
        last = time.monotonic()


async def _send(websocket: WebSocket, lock: anyio.Lock, text: str) -> None:
    async with lock:
        await websocket.send_text(text)
