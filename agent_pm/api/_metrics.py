"""``/metrics``: Prometheus text exposition of hook telemetry.

Counters (invocations, failures, timeouts, skipped, quarantined, deadlines) come straight from
the registry's per-hook stats, so they are exact (in a cluster: every live node's, summed; one
node's with ``?node=``); health and breaker states are one-hot gauges
(1 for the current state, 0 for the others). The duration histogram needs every sample, so
:class:`HookHistograms` folds them in from its own bounded bus subscription (a task drains it
continuously, and each scrape drains what is left); if it ever lags, the dropped samples are
counted, never buffered.

Written by hand rather than with ``prometheus-client``: the text format is a few lines, and the
client's global registry and thread-locking collectors would fit poorly with a registry whose
plugins come and go.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Iterator
from typing import Any, get_args

import anyio
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from agent_pm.api._figures import NODE_QUERY, FigureScope, Shown, shown_figures
from agent_pm.api._openapi import TEXT, Operation
from agent_pm.plugins.bus import Bus, Lagged, Subscription
from agent_pm.plugins.health import HealthState
from agent_pm.plugins.info import PluginInfo
from agent_pm.plugins.quarantine import BreakerState
from agent_pm.plugins.registry import PluginRegistry
from agent_pm.plugins.telemetry import HookSample

__all__ = ["BUCKETS", "OPERATION", "HookHistograms", "render", "routes"]

BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
OPERATION = Operation(
    "GET", "/metrics", "Prometheus metrics", TEXT, errors=(404, 503), query=(NODE_QUERY,)
)
_COUNTERS = (
    ("invocations", "Hook invocations"),
    ("failures", "Hook invocations that raised"),
    ("timeouts", "Hook invocations cut at their timeout"),
    ("skipped", "Hook invocations skipped (missing secrets)"),
    ("quarantined", "Hook invocations refused while the hook was quarantined"),
    ("deadlines", "Hook invocations cut when their caller's time ran out"),
)
_HEALTH_STATES = get_args(HealthState)
_BREAKER_STATES = get_args(BreakerState)


class Histogram:
    """Cumulative bucket counts and the sum of one plugin/hook's durations, in seconds."""

    __slots__ = ("counts", "total")

    def __init__(self) -> None:
        self.counts = [0] * (len(BUCKETS) + 1)
        self.total = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(BUCKETS, seconds)] += 1
        self.total += seconds


class HookHistograms:
    """Duration histograms per (node, plugin, hook), fed by a bus subscription; the node is
    ``""`` outside a cluster. In a cluster the bus carries every node's samples, so these
    cover the whole cluster (since this process started)."""

    def __init__(self) -> None:
        self.histograms: dict[tuple[str, str, str], Histogram] = {}
        self.dropped = 0
        self._subscription: Subscription | None = None

    def fold(self, messages: Iterable[Any]) -> None:
        for message in messages:
            if isinstance(message, HookSample):
                key = (message.node or "", message.plugin, message.hook)
                histogram = self.histograms.get(key)
                if histogram is None:
                    histogram = self.histograms[key] = Histogram()
                histogram.observe(message.duration_ms / 1000)
            elif isinstance(message, Lagged):
                self.dropped += message.missed

    def drain(self) -> None:
        if self._subscription is not None:
            self.fold(self._subscription.drain())

    async def run(self, bus: Bus, *, task_status: Any = anyio.TASK_STATUS_IGNORED) -> None:
        """Subscribe (then report started) and fold samples in until cancelled or the bus ends."""
        with bus.subscribe() as subscription:
            self._subscription = subscription
            task_status.started()
            try:
                while True:
                    self.fold(await subscription.receive())
            except anyio.EndOfStream:
                pass
            finally:
                self._subscription = None


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _family(name: str, kind: str, help_text: str) -> str:
    """The ``# HELP`` and ``# TYPE`` lines that open a metric family."""
    return f"# HELP {name} {help_text}\n# TYPE {name} {kind}\n"


def _labels(**labels: str) -> str:
    return "{" + ",".join(f'{key}="{_escape(value)}"' for key, value in labels.items()) + "}"


def _counters(plugins: list[PluginInfo]) -> Iterator[str]:
    for field, help_text in _COUNTERS:
        name = f"agent_pm_hook_{field}_total"
        yield _family(name, "counter", f"{help_text}.")
        for plugin in plugins:
            for hook, stats in plugin.hook_stats.items():
                value = getattr(stats, field)
                yield f"{name}{_labels(plugin=plugin.name, hook=hook)} {value}\n"


def _summed(histograms: HookHistograms, node: str | None) -> dict[tuple[str, str], Histogram]:
    """The histograms of ``node`` (every node's, summed, when ``None``) per (plugin, hook)."""
    summed: dict[tuple[str, str], Histogram] = {}
    for (origin, plugin, hook), histogram in histograms.histograms.items():
        if node is not None and origin != node:
            continue
        total = summed.setdefault((plugin, hook), Histogram())
        total.counts = [a + b for a, b in zip(total.counts, histogram.counts, strict=True)]
        total.total += histogram.total
    return summed


def _histograms(histograms: HookHistograms, node: str | None) -> Iterator[str]:
    name = "agent_pm_hook_duration_seconds"
    yield _family(name, "histogram", "Hook invocation duration.")
    for (plugin, hook), histogram in sorted(_summed(histograms, node).items()):
        cumulative = 0
        for bound, count in zip((*BUCKETS, "+Inf"), histogram.counts, strict=True):
            cumulative += count
            labels = _labels(plugin=plugin, hook=hook, le=str(bound))
            yield f"{name}_bucket{labels} {cumulative}\n"
        labels = _labels(plugin=plugin, hook=hook)
        yield f"{name}_sum{labels} {histogram.total}\n{name}_count{labels} {cumulative}\n"
    dropped = "agent_pm_metrics_dropped_samples_total"
    yield (
        _family(dropped, "counter", "Samples the histogram subscriber missed.")
        + f"{dropped} {histograms.dropped}\n"
    )


def _gauges(registry: PluginRegistry, plugins: list[PluginInfo]) -> Iterator[str]:
    active = "agent_pm_plugin_active"
    yield _family(active, "gauge", "Whether the plugin is active (1) or not (0).")
    for plugin in plugins:
        yield f"{active}{_labels(plugin=plugin.name)} {int(plugin.active)}\n"
    yield from _health(plugins)
    yield from _workers(plugins)
    yield from _loop_blocks(plugins)
    revision = "agent_pm_registry_revision"
    yield (
        _family(revision, "gauge", "Revision of the plugin registry.")
        + f"{revision} {registry.revision}\n"
    )


def _health(plugins: list[PluginInfo]) -> Iterator[str]:
    """One-hot state gauges: exactly one series per plugin (or hook) is 1."""
    health = "agent_pm_plugin_health"
    yield _family(health, "gauge", "Plugin health: 1 for its current state, 0 for the others.")
    for plugin in plugins:
        for state in _HEALTH_STATES:
            labels = _labels(plugin=plugin.name, state=state)
            yield f"{health}{labels} {int(plugin.health.state == state)}\n"
    hook_health = "agent_pm_hook_health"
    yield _family(hook_health, "gauge", "Hook health: 1 for its current state, 0 for the others.")
    for plugin in plugins:
        for hook, found in plugin.hook_health.items():
            for state in _HEALTH_STATES:
                labels = _labels(plugin=plugin.name, hook=hook, state=state)
                yield f"{hook_health}{labels} {int(found.state == state)}\n"
    breaker = "agent_pm_hook_quarantine"
    yield _family(
        breaker, "gauge", "Hook circuit breaker: 1 for its current state, 0 for the others."
    )
    trips = "agent_pm_hook_quarantine_trips"
    trip_lines = [_family(trips, "gauge", "Times the breaker opened since it last closed.")]
    for plugin in plugins:
        for hook, info in plugin.quarantine.items():
            for state in _BREAKER_STATES:
                labels = _labels(plugin=plugin.name, hook=hook, state=state)
                yield f"{breaker}{labels} {int(info.state == state)}\n"
            trip_lines.append(f"{trips}{_labels(plugin=plugin.name, hook=hook)} {info.trips}\n")
    yield from trip_lines


def _workers(plugins: list[PluginInfo]) -> Iterator[str]:
    isolated, restarts = "agent_pm_plugin_isolated", "agent_pm_plugin_worker_restarts_total"
    promoted, promotions = "agent_pm_plugin_promoted", "agent_pm_plugin_promotions_total"
    yield _family(
        isolated, "gauge", "Whether the plugin runs in a worker process (1) or inline (0)."
    )
    for plugin in plugins:
        running = plugin.isolation.mode != "inline"
        yield f"{isolated}{_labels(plugin=plugin.name)} {int(running)}\n"
    yield _family(
        restarts, "counter", "Worker processes restarted after a crash, limit or timeout."
    )
    for plugin in plugins:
        if plugin.isolation.mode != "inline":
            count = plugin.isolation.restarts
            yield f"{restarts}{_labels(plugin=plugin.name)} {count}\n"
    yield _family(
        promoted, "gauge", "Whether the platform moved the plugin to a worker process (1)."
    )
    for plugin in plugins:
        yield f"{promoted}{_labels(plugin=plugin.name)} {int(plugin.isolation.promoted)}\n"
    yield _family(promotions, "counter", "Moves of the plugin to a worker process by the platform.")
    for plugin in plugins:
        if plugin.isolation.declared == "auto":
            count = plugin.isolation.promotions
            yield f"{promotions}{_labels(plugin=plugin.name)} {count}\n"


def _loop_blocks(plugins: list[PluginInfo]) -> Iterator[str]:
    name = "agent_pm_loop_block_seconds"
    yield _family(
        name, "histogram", "How long one step of an inline async handler held the event loop."
    )
    for plugin in plugins:
        blocks = plugin.loop_blocks or {"hooks": {}, "bounds_ms": []}
        bounds = [f"{bound / 1000:g}" for bound in blocks["bounds_ms"]] + ["+Inf"]
        for hook, seen in blocks["hooks"].items():
            cumulative = 0
            for bound, count in zip(bounds, seen["counts"], strict=True):
                cumulative += count
                labels = _labels(plugin=plugin.name, hook=hook, le=bound)
                yield f"{name}_bucket{labels} {cumulative}\n"
            labels = _labels(plugin=plugin.name, hook=hook)
            yield f"{name}_sum{labels} {seen['total_ms'] / 1000}\n"
            yield f"{name}_count{labels} {cumulative}\n"


def _nodes(shown: Shown) -> Iterator[str]:
    name = "agent_pm_cluster_nodes"
    yield (
        _family(name, "gauge", "Cluster nodes whose figures these series sum.")
        + f"{name} {len(shown.scope.nodes)}\n"
    )


def render(registry: PluginRegistry, histograms: HookHistograms, shown: Shown | None = None) -> str:
    """The exposition text for the current state of ``shown``'s figures (this process's own
    when ``None``)."""
    shown = shown or Shown(FigureScope(), None)
    histograms.drain()
    plugins = registry.list_metadata(views=shown.views)
    node = shown.scope.nodes[0] if shown.scope.figures == "node" else None
    if shown.scope.figures == "local" and shown.scope.nodes:
        node = shown.scope.nodes[0]  # a cluster node cut off from Redis: its own samples
    return "".join(
        [
            *_gauges(registry, plugins),
            *_counters(plugins),
            *_histograms(histograms, node),
            *_nodes(shown),
        ]
    )


def routes(histograms: HookHistograms) -> list[BaseRoute]:
    """The ``/metrics`` route (``?node=``: one cluster node's figures alone)."""

    async def metrics(request: Request) -> Response:
        registry: PluginRegistry = request.app.state.registry
        shown = await shown_figures(request)
        return Response(render(registry, histograms, shown), media_type=CONTENT_TYPE)

    return [Route(OPERATION.path, metrics, methods=[OPERATION.method])]
