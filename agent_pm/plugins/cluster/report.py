"""What a cluster node reports about itself: plain structs, importable without a Redis client."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

import msgspec

__all__ = ["BusCounters", "LinkState", "NodeReport", "NodeStatus"]


class LinkState(msgspec.Struct, frozen=True):
    """How the node's link to Redis stands."""

    state: Literal["connecting", "up", "down"]
    since: datetime
    reconnects: int = 0
    error: str | None = None


class BusCounters(msgspec.Struct):
    """Messages this node forwarded to the stream, received from others, dropped, kept local."""

    forwarded: int = 0
    received: int = 0
    dropped: int = 0
    local: int = 0


class NodeReport(msgspec.Struct, frozen=True):
    """What one node runs: the revision it applied and why it could not apply a newer one."""

    node: str
    revision: int
    error: str | None = None
    updated: str = ""


class NodeStatus(msgspec.Struct, frozen=True):
    """This node's own view: its link, bus counters and the revision it runs."""

    node: str
    link: LinkState
    counters: BusCounters
    pending: int
    revision: int
    error: str | None
