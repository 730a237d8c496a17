"""``GET /cluster``: the nodes sharing this server's Redis and the revision each one runs."""

from __future__ import annotations

from typing import Literal

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from agent_pm.api._errors import JSONResponse
from agent_pm.api._openapi import Operation
from agent_pm.plugins.cluster.report import NodeReport, NodeStatus

__all__ = ["OPERATION", "ClusterView", "routes"]


class ClusterView(msgspec.Struct):
    """``embedded``: this process alone (no nodes listed). ``redis``: this node's own status and
    every live node's report, this node first; a node whose ``revision`` is behind or that has
    an ``error`` could not apply the newest manifest."""

    mode: Literal["embedded", "redis"]
    status: NodeStatus | None = None
    nodes: list[NodeReport] = msgspec.field(default_factory=list)


OPERATION = Operation("GET", "/cluster", "The cluster's nodes", ClusterView, errors=(503,))


async def cluster(request: Request) -> Response:
    node = request.app.state.cluster
    if node is None:
        return JSONResponse(ClusterView("embedded"))
    return JSONResponse(ClusterView("redis", node.status(), await node.control.reports()))


def routes() -> list[BaseRoute]:
    return [Route(OPERATION.path, cluster, methods=[OPERATION.method])]
