"""``GET /plugins``: plugin summaries, answered from a cache that any change invalidates.

A full listing is built from every plugin's stats, health and windows; repeating that per
request would make a dashboard poll cost as much as the hooks themselves. The encoded answer is
kept per query and rebuilt only when the registry moved on: a new revision, any message on the
bus (every sample and every health change is one), new manifest errors, or the start of a new
ten-second bucket (when windowed figures shift without a call), or, in cluster mode, a fresh
read of the other nodes' figures. Its ``ETag`` is
``"<revision>.<digest of the body>"``: ``If-None-Match`` with it gets 304, and ``If-Match`` with it
still names the revision the listing was read at.
"""

from __future__ import annotations

import hashlib
import weakref
from typing import Any, get_args

import msgspec
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from agent_pm.api._figures import NODE_QUERY, Shown, shown_figures
from agent_pm.api._reading import query_int
from agent_pm.api._schemas import PluginList
from agent_pm.plugins.registry import PluginRegistry
from agent_pm.plugins.windows import RECENT_WINDOW, WINDOWS, WindowName

__all__ = ["LISTING_QUERY", "list_plugins", "query_window"]

LISTING_QUERY = (
    ("window", str, f"windowed stats over one of {', '.join(WINDOWS)} (default {RECENT_WINDOW})"),
    ("history", int, "include the newest N samples per hook (no history without it)"),
    NODE_QUERY,
)
_BUCKET_SECONDS = 10
_CACHED_QUERIES = 32


def query_window(request: Request) -> WindowName:
    """The ``window`` query parameter; 400 naming the allowed values when it is not one."""
    raw = request.query_params.get("window", RECENT_WINDOW)
    if raw not in get_args(WindowName):
        raise HTTPException(400, f"window must be one of {', '.join(WINDOWS)}; got {raw!r}")
    window: WindowName = raw  # type: ignore[assignment]  # checked just above
    return window


class _Listing(msgspec.Struct, frozen=True):
    state: tuple[Any, ...]
    etag: str
    body: bytes


_Cache = dict[tuple[WindowName, int | None, str | None], _Listing]
# One cache per registry, gone with it.
_caches: weakref.WeakKeyDictionary[PluginRegistry, _Cache] = weakref.WeakKeyDictionary()


def _listing(
    registry: PluginRegistry, window: WindowName, history: int | None, shown: Shown
) -> _Listing:
    state = (
        registry.revision,
        registry.bus.seq,
        int(registry.clock() // _BUCKET_SECONDS),
        tuple(registry.config_errors),
        shown.scope,
        shown.generation,
    )
    cache = _caches.setdefault(registry, {})
    node = shown.scope.nodes[0] if shown.scope.figures == "node" else None
    found = cache.get((window, history, node))
    if found is not None and found.state == state:
        return found
    plugins = registry.list_metadata(
        window=window, history=False if history is None else history, views=shown.views
    )
    listing_body = PluginList(plugins, registry.revision, registry.config_errors, shown.scope)
    body = msgspec.json.encode(listing_body)
    digest = hashlib.blake2b(body, digest_size=8).hexdigest()
    listing = _Listing(state, f'"{registry.revision}.{digest}"', body)
    if len(cache) >= _CACHED_QUERIES:
        cache.clear()
    cache[(window, history, node)] = listing
    return listing


async def list_plugins(request: Request) -> Response:
    registry: PluginRegistry = request.app.state.registry
    window, history = query_window(request), query_int(request, "history")
    listing = _listing(registry, window, history, await shown_figures(request))
    headers = {"ETag": listing.etag}
    tags = _tags(request.headers.get("if-none-match"))
    if listing.etag in tags or "*" in tags:
        return Response(status_code=304, headers=headers)
    return Response(listing.body, media_type="application/json", headers=headers)


def _tags(header: str | None) -> set[str]:
    if header is None:
        return set()
    return {tag.strip().removeprefix("W/") for tag in header.split(",")}
