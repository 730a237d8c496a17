"""Whose figures a read shows: this process's, the cluster's sum, or one node's (``?node=``).

In cluster mode the listing, the stats, the console and ``/metrics`` show the sum of every live
node's counters and windows, and health judged from that sum; ``?node=NAME`` shows one node's
alone. While Redis is unreachable they fall back to this process's own figures, and say so.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal, NamedTuple

import msgspec
from starlette.requests import HTTPConnection

from agent_pm.errors import ClusterUnavailableError, NodeNotFoundError
from agent_pm.plugins.registry import Views

if TYPE_CHECKING:
    from agent_pm.plugins.cluster.node import ClusterNode

__all__ = ["NODE_QUERY", "FigureScope", "Shown", "node_breakdown", "shown_figures"]

NODE_QUERY = ("node", str, "one cluster node's figures alone (default: the sum over every node)")


class FigureScope(msgspec.Struct, frozen=True):
    """Whose figures an answer holds: ``local``, this process alone (no cluster, or Redis is
    unreachable); ``cluster``, the sum over ``nodes``; ``node``, the one node in ``nodes``."""

    figures: Literal["local", "cluster", "node"] = "local"
    nodes: list[str] = msgspec.field(default_factory=list)


class Shown(NamedTuple):
    """The figures to show (``views`` ``None``: this process's own) and since when they hold
    (``generation``: answers built from them may be reused until it changes)."""

    scope: FigureScope
    views: Views | None
    generation: int = 0


async def shown_figures(request: HTTPConnection, node: str | None = None) -> Shown:
    """The figures ``request`` asks for, from ``node`` or its ``?node=`` (default: all)."""
    node = node or request.query_params.get("node") or None
    cluster: ClusterNode | None = getattr(request.app.state, "cluster", None)
    if cluster is None:
        if node is not None:
            raise NodeNotFoundError(f"no node named {node!r}: this server runs alone, no cluster")
        return Shown(FigureScope(), None)
    try:
        figures = await cluster.board.views(node)
    except ClusterUnavailableError:
        if node is not None and node != cluster.name:
            raise
        return Shown(FigureScope("local", [cluster.name]), None)
    kind: Literal["cluster", "node"] = "cluster" if node is None else "node"
    return Shown(FigureScope(kind, figures.nodes), figures.views, figures.generation)


async def node_breakdown(request: HTTPConnection) -> dict[str, Views | None]:
    """Each live node's figures alone (``None``: this process's), or nothing without Redis."""
    cluster: ClusterNode | None = getattr(request.app.state, "cluster", None)
    if cluster is None:
        return {}
    try:
        return await cluster.board.breakdown()
    except ClusterUnavailableError:
        return {}
