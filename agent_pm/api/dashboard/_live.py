"""The console's live channel: only what changed, as HTML regions, over a WebSocket.

The channel subscribes to the telemetry bus and marks that something changed. At most once per
``TICK`` (at once for a state change) it renders the regions of the page it serves, compares
each region's key with the key it last sent, and sends one JSON message::

    {"patch": {id: html}, "prepend": {id: html}, "append": {id: html}, "seq": N, "epoch": E}

``patch`` replaces an element by id, ``prepend``/``append`` insert rows or cards into one. A
burst of thousands of samples per second therefore costs a page one small message per tick:
counters are patched, new history rows are prepended (at most ``ROWS_PER_TICK``, with a marker
naming the calls left out), and the latency chart is re-drawn at most every ``CHART_EVERY``.

Client messages: ``{"type": "hello", "since", "epoch", "view"}`` first, then
``{"type": "pause"}`` and ``{"type": "resume"}``. Resuming at the page's ``since`` sends nothing
unless something changed after it; another epoch, or a gap the bus cannot replay, re-sends every
region.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import anyio
from markupsafe import Markup
from starlette.requests import HTTPConnection
from starlette.websockets import WebSocket, WebSocketDisconnect

from agent_pm.api._figures import shown_figures
from agent_pm.api._security import same_origin
from agent_pm.api._session import Session, session_from_scope
from agent_pm.api.dashboard import _regions as regions
from agent_pm.api.dashboard._activity import FEED_ROWS, ActivityFilters, rows_html
from agent_pm.api.dashboard._render import render
from agent_pm.api.dashboard._view import DEFAULT_WINDOW, WINDOWS, Filters
from agent_pm.audit import AuditLog, AuditMessage, AuditRecord
from agent_pm.errors import AgentPMError
from agent_pm.plugins.bus import Lagged
from agent_pm.plugins.registry import Views
from agent_pm.plugins.telemetry import HookSample

__all__ = ["TICK", "LiveChannel", "live"]

TICK = 1.0
URGENT = 0.05
KEEPALIVE = 5.0
CHART_EVERY = 10.0
# Charts are redrawn at most every CHART_EVERY: each redraw sends the whole SVG.
CHARTS = frozenset({"latency-chart", "series-charts", "plugin-runtime"})
# Overview trend sparklines are drawn again at most as often (their ids end so).
SPARK = "-spark"
ROWS_PER_TICK = 10
HELLO_WAIT = 2.0
BUFFER = 8_192
CLOSE_UNAUTHORIZED = 4401


class LiveChannel:
    """One connected page: what it shows, what it was last sent, what changed since."""

    def __init__(
        self,
        registry: Any,
        session: Session,
        view: dict[str, Any],
        audit_log: AuditLog | None = None,
    ) -> None:
        self.registry = registry
        self.session = session
        self.view = view
        self.feed = _Feed(audit_log, view) if view.get("page") == "activity" else None
        self.sent: dict[str, str] = {}
        self.history_seq = 0
        self.drawn: dict[str, float] = {}
        self.changed = False
        self.urgent = False
        self.paused = False
        # The cluster's figures (or one node's, ``node`` in the view) as of the last refresh.
        self.views: Views | None = None

    async def refresh_figures(self, connection: HTTPConnection) -> None:
        """Take the figures the page shows afresh (a cluster's are re-read once a second)."""
        node = self.view.get("node")
        try:
            shown = await shown_figures(connection, node if isinstance(node, str) else None)
        except AgentPMError:  # that node left the cluster, or Redis is unreachable
            shown = await shown_figures(connection)
        self.views = shown.views

    async def prepare(self, connection: HTTPConnection) -> None:
        """Read what the next message is made of: the figures, and new audit records."""
        await self.refresh_figures(connection)
        if self.feed is not None:
            await self.feed.catch_up()

    @property
    def page(self) -> str:
        return str(self.view.get("page", ""))

    def absorb(self, batch: list[Any]) -> None:
        """Note what ``batch`` changed: samples wait for the tick, anything else is urgent."""
        for message in batch:
            self.changed = True
            if not isinstance(message, HookSample):
                self.urgent = True
            if isinstance(message, AuditMessage) and self.feed is not None:
                self.feed.due = True
            if isinstance(message, Lagged):
                self.sent.clear()

    def start(self, since: int | None) -> None:
        """Assume the page shows every region as of now, unless it missed something."""
        self.history_seq = since or 0
        if since is None or since != self.registry.bus.seq:
            self.changed = self.urgent = True
            self.sent.clear()
            return
        now = time.monotonic()
        for region, cell in self._cells().items():
            self.sent[region] = cell.key
            if region in CHARTS:  # a sparkline's first change after loading goes out at once
                self.drawn[region] = now

    def _cells(self) -> dict[str, regions.Cell]:
        registry = self.registry
        cells = {
            "manifest-errors": regions.Cell.of(
                render("partials/manifest_errors.html", errors=registry.config_errors)
            )
        }
        if self.page == "overview":
            filters = Filters.from_query(_query(str(self.view.get("query", ""))))
            cells.update(regions.overview_cells(registry, filters, self.views))
        elif self.page == "admin" and self.session.is_admin:
            metas = regions.metas_of(registry)
            cells.update(regions.admin_cells(metas, self.session, registry.revision))
        elif self.page == "plugin":
            meta = self._plugin_meta()
            if meta is not None:
                view = self._plugin_view(meta)
                admin, csrf = self.session.is_admin, self.session.csrf
                cells.update(regions.plugin_cells(meta, view, admin=admin, csrf=csrf))
                cells["latency-chart"] = regions.chart_cell(meta, view)
                cells["series-charts"] = regions.series_cell(registry, view, self.views)
        return cells

    def _plugin_meta(self) -> dict[str, Any] | None:
        window = str(self.view.get("window", ""))
        window = window if window in WINDOWS else DEFAULT_WINDOW
        name = str(self.view.get("plugin", ""))
        return regions.meta_of(self.registry, name, self.views, window)

    def _plugin_view(self, meta: dict[str, Any]) -> regions.PluginView:
        view = self.view
        return regions.plugin_view(
            meta,
            str(view.get("hook", "")),
            str(view.get("status", "")),
            str(view.get("window", "")),
        )

    def message(self) -> str | None:
        """The next message for the page, or ``None`` if nothing it shows changed."""
        self.changed = self.urgent = False
        patch: dict[str, str] = {}
        insert: dict[str, dict[str, str]] = {"prepend": {}, "append": {}}
        now = time.monotonic()
        cells = self._cells()
        # A card the page was never sent is new (appended), unless everything is being re-sent.
        known = set(self.sent) or set(cells)
        for region, cell in cells.items():
            if (
                _chart(region)
                and region in self.sent
                and now < self.drawn.get(region, 0) + CHART_EVERY
            ):
                self.changed = True  # drawn at the next chance
                continue
            if self.sent.get(region) == cell.key:
                continue
            if _chart(region):
                self.drawn[region] = now
            if self.page == "admin" and region.startswith("admin-") and region not in known:
                insert["append"]["admin-cards"] = (
                    insert["append"].get("admin-cards", "") + cell.html()
                )
            else:
                patch[region] = cell.html()
            self.sent[region] = cell.key
        if self.page == "admin":
            self._removed_cards(cells, patch)
        if self.page == "plugin":
            self._history(insert)
        if self.feed is not None and self.feed.records:
            insert["prepend"]["activity-body"] = self.feed.rows()
        content = {k: v for k, v in {"patch": patch, **insert}.items() if v}
        if not content:
            return None
        return self._encode(content)

    def _encode(self, content: dict[str, Any]) -> str:
        bus = self.registry.bus
        return json.dumps({**content, "seq": bus.seq, "epoch": bus.epoch})

    def keepalive(self) -> str:
        return self._encode({})

    def _removed_cards(self, cells: dict[str, regions.Cell], patch: dict[str, str]) -> None:
        for region in [r for r in self.sent if r.startswith("admin-") and r not in cells]:
            del self.sent[region]
            name = region.removeprefix("admin-")
            patch[region] = render(
                "partials/removed_card.html", name=name, card=regions.AdminCard()
            )

    def _history(self, insert: dict[str, dict[str, str]]) -> None:
        meta = self._plugin_meta()
        if meta is None:
            return
        view = self._plugin_view(meta)
        samples = [
            s
            for s in meta.get("hook_history", {}).get(view.hook, [])
            if s["seq"] > self.history_seq
        ]
        if not samples:
            return
        self.history_seq = samples[-1]["seq"]
        chosen = [s for s in reversed(samples) if not view.status or s["status"] == view.status]
        if not chosen:
            return
        shown, left = chosen[:ROWS_PER_TICK], chosen[ROWS_PER_TICK:]
        rows = Markup("").join(render("partials/history_row.html", s=s) for s in shown)
        if left:
            rows += render("partials/history_gap.html", left=left)
        insert["prepend"]["history-body"] = rows


class _Feed:
    """The activity page's part of a channel: audit records written after the newest it shows.

    They are read from the audit log itself (which also holds what other processes, a local CLI
    say, wrote there), when the bus announces a record and whenever the log's size changed.
    """

    def __init__(self, log: AuditLog | None, view: dict[str, Any]) -> None:
        self.log = log
        after = view.get("after")
        self.after = after if isinstance(after, int) else 0
        self.filters = ActivityFilters.from_query(_query(str(view.get("query", ""))))
        self.due = True
        self.size = -1
        self.records: list[AuditRecord] = []

    async def poll(self) -> None:
        """Look for records nobody announced (written by another process)."""
        if self.log is not None:
            size = await anyio.to_thread.run_sync(_size, self.log.path)
            self.due = self.due or size != self.size
            self.size = size

    async def catch_up(self) -> None:
        """Read what was written since the last record seen, keeping what the filters pass."""
        if self.log is None or not self.due:
            return
        found = await self.log.read(since=self.after, limit=FEED_ROWS)
        self.due = len(found) == FEED_ROWS
        if found:
            self.after = found[-1].id
        self.records += [record for record in found if self.filters.keeps(record)]

    def rows(self) -> str:
        """The new records' rows, newest first; taken once."""
        html = rows_html(list(reversed(self.records)))
        self.records = []
        return html


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _chart(region: str) -> bool:
    return region in CHARTS or region.endswith(SPARK)


def _query(text: str) -> dict[str, str]:
    return dict(parse_qsl(text))


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
    try:
        hello = await _hello(websocket)
    except WebSocketDisconnect:
        return  # gone before saying hello (or closed by the server: message too big)
    view = hello.get("view")
    view = view if isinstance(view, dict) else {}
    channel = LiveChannel(registry, session, view, getattr(websocket.app.state, "audit", None))
    await channel.refresh_figures(websocket)
    since = hello.get("since")
    resumable = hello.get("epoch") == registry.bus.epoch and isinstance(since, int)
    resumable = resumable and since <= registry.bus.seq
    lock = anyio.Lock()
    try:
        with registry.bus.subscribe(
            since=since if resumable else None, capacity=BUFFER
        ) as subscription:
            channel.start(since if resumable else None)
            async with anyio.create_task_group() as tg:
                tg.start_soon(_listen, websocket, channel, lock, tg.cancel_scope)
                await _pump(websocket, channel, subscription, lock)
                tg.cancel_scope.cancel()
    except* (WebSocketDisconnect, OSError, anyio.ClosedResourceError):
        # The page went away mid-send: nothing left to tell it.
        pass


async def _hello(websocket: WebSocket) -> dict[str, Any]:
    with anyio.move_on_after(HELLO_WAIT):
        return _parse(await websocket.receive_text())
    return {}


def _parse(text: str) -> dict[str, Any]:
    try:
        data = json.loads(text)
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


async def _listen(
    websocket: WebSocket, channel: LiveChannel, lock: anyio.Lock, scope: anyio.CancelScope
) -> None:
    """Pause and resume from the page; resuming sends what changed while paused at once."""
    try:
        while True:
            kind = _parse(await websocket.receive_text()).get("type")
            if kind == "pause":
                channel.paused = True
            elif kind == "resume" and channel.paused:
                channel.paused = False
                await _flush(websocket, channel, lock)
    except WebSocketDisconnect:
        scope.cancel()


async def _flush(websocket: WebSocket, channel: LiveChannel, lock: anyio.Lock) -> None:
    await channel.prepare(websocket)
    text = channel.message()
    if text is not None:
        await _send(websocket, lock, text)


async def _pump(
    websocket: WebSocket, channel: LiveChannel, subscription: Any, lock: anyio.Lock
) -> None:
    last = time.monotonic()
    if channel.changed:
        await _flush(websocket, channel, lock)
    while True:
        with anyio.move_on_after(KEEPALIVE) as idle:
            try:
                channel.absorb(await subscription.receive())
            except anyio.EndOfStream:
                # The registry is shutting down; the page reconnects to whatever comes next.
                await websocket.close(code=1012, reason="service restart")
                return
        if channel.session.expires <= time.time():
            await websocket.close(code=CLOSE_UNAUTHORIZED, reason="session expired")
            return
        if idle.cancelled_caught:
            # Quiet: re-check what no bus message announces (manifest errors, audit records of
            # other processes), say we are here.
            if channel.feed is not None:
                await channel.feed.poll()
            if not channel.paused:
                await channel.prepare(websocket)
                await _send(websocket, lock, channel.message() or channel.keepalive())
            continue
        await _gather(channel, subscription, last + TICK)
        channel.absorb(subscription.drain())
        if not channel.paused and channel.changed:
            await _flush(websocket, channel, lock)
            last = time.monotonic()


async def _gather(channel: LiveChannel, subscription: Any, tick: float) -> None:
    """Keep absorbing until the next tick, or ``URGENT`` after a state change, whichever comes
    first: a health change arriving while samples wait for their tick is not held back."""
    deadline = time.monotonic() + URGENT if channel.urgent else tick
    while (wait := deadline - time.monotonic()) > 0:
        with anyio.move_on_after(wait):
            try:
                channel.absorb(await subscription.receive())
            except anyio.EndOfStream:
                return  # the next receive in the pump closes the page's channel
        if channel.urgent:
            deadline = min(deadline, time.monotonic() + URGENT)


async def _send(websocket: WebSocket, lock: anyio.Lock, text: str) -> None:
    async with lock:
        await websocket.send_text(text)
