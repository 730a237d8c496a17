"""Cluster mode: several server processes or hosts sharing one Redis (``serve --redis URL``).

Importing ``agent_pm.plugins`` never imports this package, nor the Redis client it needs (the
``agent-pm[redis]`` extra).
"""

from __future__ import annotations

from agent_pm.plugins.cluster.bus import BusCounters, ClusterBus
from agent_pm.plugins.cluster.link import LinkState, RedisLink
from agent_pm.plugins.cluster.node import ClusterNode, NodeStatus, default_node_name

__all__ = [
    "BusCounters",
    "ClusterBus",
    "ClusterNode",
    "LinkState",
    "NodeStatus",
    "RedisLink",
    "default_node_name",
]
