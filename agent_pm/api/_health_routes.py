"""REST for health over time: a plugin's windowed series, and resetting its quarantine."""

from __future__ import annotations

import msgspec
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from agent_pm.api._errors import JSONResponse
from agent_pm.api._figures import NODE_QUERY, node_breakdown, shown_figures
from agent_pm.api._listing import query_window
from agent_pm.api._reading import query_int, read_body
from agent_pm.api._schemas import HookSeries, PluginEnvelope, PluginStats, QuarantineReset
from agent_pm.plugins.registry import PluginRegistry
from agent_pm.plugins.windows import max_points

__all__ = ["STATS_QUERY", "plugin_stats", "reset_quarantine"]

STATS_QUERY = (
    ("hook", str, "only this hook (every hook of the plugin without it)"),
    ("window", str, "1m, 5m (default), 1h, 24h or all (series of all: the last 24h)"),
    ("points", int, "points in each series, 1 to the window's buckets (default: all of them)"),
    NODE_QUERY,
)


async def plugin_stats(request: Request) -> Response:
    registry: PluginRegistry = request.app.state.registry
    name = request.path_params["name"]
    window = query_window(request)
    most = max_points(window)
    points = query_int(request, "points")
    if points is None:
        points = most
    if not 1 <= points <= most:
        raise HTTPException(400, f"points must be between 1 and {most} for window {window}")
    shown = await shown_figures(request)
    info = registry.metadata_for(name, window=window, views=shown.views)
    hook = request.query_params.get("hook")
    hooks = [hook] if hook is not None else sorted({*info.hooks, *info.hook_windows})
    breakdown = await node_breakdown(request) if shown.scope.figures == "cluster" else {}
    series = {}
    for each in hooks:
        recorder = registry.windows(name, each, shown.views)
        series[each] = HookSeries(
            stats=recorder.stats(window),
            series=recorder.series(window, points),
            health=info.hook_health.get(each),
            quarantine=info.quarantine.get(each),
            nodes={
                node: registry.windows(name, each, views).stats(window)
                for node, views in breakdown.items()
            },
        )
    return JSONResponse(PluginStats(name, window, points, info.health, series, shown.scope))


async def reset_quarantine(request: Request) -> Response:
    """Close the breakers of a plugin, or of one hook (``?hook=`` or ``{"hook": ...}``)."""
    registry: PluginRegistry = request.app.state.registry
    name = request.path_params["name"]
    hook = request.query_params.get("hook")
    body = await read_body(request)
    if body.strip():
        try:
            hook = msgspec.json.decode(body, type=QuarantineReset).hook or hook
        except (ValueError, RecursionError) as exc:  # DecodeError and bad UTF-8 alike
            raise HTTPException(400, f"malformed body: {exc}") from None
    from agent_pm.api._rest import admin_of  # rest mounts these routes

    info = await admin_of(request).reset_quarantine(name, hook)
    return JSONResponse(PluginEnvelope(info), headers={"ETag": f'"{registry.revision}"'})
