"""Routes of an isolated plugin: forwarders that answer each request from its worker.

Imported only when the service mounts plugin routes, so the plugin core stays free of the web
layer.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Mount, Route
from starlette.types import Receive, Scope, Send

from agent_pm.errors import WorkerTimeoutError
from agent_pm.plugins import wire
from agent_pm.plugins.base import public
from agent_pm.plugins.dispatch import describe

if TYPE_CHECKING:
    from agent_pm.plugins.isolated import IsolatedPlugin

__all__ = ["Forwarder", "forwarders"]

# Request headers that carry the service's own credentials never reach a worker.
_PRIVATE_HEADERS = frozenset({b"authorization", b"cookie", b"x-api-key"})
# Request state (the caller's role, say) the plugin's routes may read.
_SCALARS = (str, int, float, bool)


def forwarders(plugin: IsolatedPlugin, specs: Sequence[wire.RouteSpec]) -> list[BaseRoute]:
    """One forwarding route per route the plugin declared, public where it was."""
    forward = Forwarder(plugin)
    found: list[BaseRoute] = []
    for spec in specs:
        route: BaseRoute
        if spec.mount:
            route = Mount(spec.path, app=forward)
        else:
            route = Route(spec.path, forward, methods=spec.methods)
        found.append(public(route) if spec.public else route)
    return found


class Forwarder:
    """An ASGI app that sends a request to the plugin's worker and relays the answer."""

    def __init__(self, plugin: IsolatedPlugin) -> None:
        self._plugin = plugin

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = wire.HttpRequest(
            scope["method"],
            self._inner_path(scope),
            scope.get("query_string", b""),
            [(k, v) for k, v in scope.get("headers", []) if k.lower() not in _PRIVATE_HEADERS],
            await _body(receive),
            {k: v for k, v in scope.get("state", {}).items() if isinstance(v, _SCALARS)},
        )
        try:
            response = await self._plugin.serve_http(request)
        except WorkerTimeoutError as exc:
            await JSONResponse({"error": str(exc)}, 504)(scope, receive, send)
            return
        except Exception as exc:
            await JSONResponse({"error": describe(exc)}, 502)(scope, receive, send)
            return
        headers = [(bytes(k), bytes(v)) for k, v in response.headers]
        await send({"type": "http.response.start", "status": response.status, "headers": headers})
        await send({"type": "http.response.body", "body": response.body})

    def _inner_path(self, scope: Scope) -> str:
        path: str = scope["path"][len(scope.get("app_root_path", "")) :]
        prefix = self._plugin.prefix()
        return path[len(prefix) :] or "/" if path.startswith(prefix) else path


async def _body(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(chunks)
