"""``/metrics``: Prometheus text exposition of hook telemetry.

Counters (invocations, failures, timeouts, skipped, deadlines) come straight from the registry's
per-hook stats, so they are exact. The duration histogram needs every sample, so
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
from typing import Any

import anyio
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from agent_pm.api.openapi import TEXT, Operation
from agent_pm.plugins.bus import Bus, Lagged, Subscription
from agent_pm.plugins.registry import PluginRegistry
from agent_pm.plugins.telemetry import HookSample

__all__ = ["BUCKETS", "OPERATION", "HookHistograms", "render", "routes"]

BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
OPERATION = Operation("GET", "/metrics", "Prometheus metrics", TEXT)
_COUNTERS = (
    ("invocations", "Hook invocations"),
    ("failures", "Hook invocations that raised"),
    ("timeouts", "Hook invocations cut at their timeout"),
    ("skipped", "Hook invocations skipped (missing secrets)"),
    ("deadlines", "Hook invocations cut when their caller's time ran out"),
)


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
    """Duration histograms per (plugin, hook), fed by a bus subscription."""

    def __init__(self) -> None:
        self.histograms: dict[tuple[str, str], Histogram] = {}
        self.dropped = 0
        self._subscription: Subscription | None = None

    def fold(self, messages: Iterable[Any]) -> None:
        for message in messages:
            if isinstance(message, HookSample):
                key = (message.plugin, message.hook)
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


def _labels(**labels: str) -> str:
    return "{" + ",".join(f'{key}="{_escape(value)}"' for key, value in labels.items()) + "}"


def _counters(plugins: list[dict[str, Any]]) -> Iterator[str]:
    for field, help_text in _COUNTERS:
        name = f"agent_pm_hook_{field}_total"
        yield f"# HELP {name} {help_text}.\n# TYPE {name} counter\n"
        for plugin in plugins:
            for hook, stats in plugin["hook_stats"].items():
                yield f"{name}{_labels(plugin=plugin['name'], hook=hook)} {stats[field]}\n"


def _histograms(histograms: HookHistograms) -> Iterator[str]:
    name = "agent_pm_hook_duration_seconds"
    yield f"# HELP {name} Hook invocation duration.\n# TYPE {name} histogram\n"
    for (plugin, hook), histogram in sorted(histograms.histograms.items()):
        cumulative = 0
        for bound, count in zip((*BUCKETS, "+Inf"), histogram.counts, strict=True):
            cumulative += count
            labels = _labels(plugin=plugin, hook=hook, le=str(bound))
            yield f"{name}_bucket{labels} {cumulative}\n"
        labels = _labels(plugin=plugin, hook=hook)
        yield f"{name}_sum{labels} {histogram.total}\n{name}_count{labels} {cumulative}\n"
    dropped = "agent_pm_metrics_dropped_samples_total"
    yield f"# HELP {dropped} Samples the histogram subscriber missed.\n"
    yield f"# TYPE {dropped} counter\n{dropped} {histograms.dropped}\n"


def _gauges(registry: PluginRegistry, plugins: list[dict[str, Any]]) -> Iterator[str]:
    active = "agent_pm_plugin_active"
    yield f"# HELP {active} Whether the plugin is active (1) or not (0).\n"
    yield f"# TYPE {active} gauge\n"
    for plugin in plugins:
        yield f"{active}{_labels(plugin=plugin['name'])} {int(plugin['active'])}\n"
    yield from _workers(plugins)
    yield from _loop_blocks(plugins)
    revision = "agent_pm_registry_revision"
    yield f"# HELP {revision} Revision of the plugin registry.\n"
    yield f"# TYPE {revision} gauge\n{revision} {registry.revision}\n"


def _workers(plugins: list[dict[str, Any]]) -> Iterator[str]:
    isolated, restarts = "agent_pm_plugin_isolated", "agent_pm_plugin_worker_restarts_total"
    yield f"# HELP {isolated} Whether the plugin runs in a worker process (1) or inline (0).\n"
    yield f"# TYPE {isolated} gauge\n"
    for plugin in plugins:
        running = plugin["isolation"]["mode"] != "inline"
        yield f"{isolated}{_labels(plugin=plugin['name'])} {int(running)}\n"
    yield f"# HELP {restarts} Worker processes restarted after a crash, limit or timeout.\n"
    yield f"# TYPE {restarts} counter\n"
    for plugin in plugins:
        if plugin["isolation"]["mode"] != "inline":
            count = plugin["isolation"]["restarts"]
            yield f"{restarts}{_labels(plugin=plugin['name'])} {count}\n"


def _loop_blocks(plugins: list[dict[str, Any]]) -> Iterator[str]:
    name = "agent_pm_loop_block_seconds"
    yield f"# HELP {name} How long one step of an inline async handler held the event loop.\n"
    yield f"# TYPE {name} histogram\n"
    for plugin in plugins:
        blocks = plugin.get("loop_blocks") or {"hooks": {}, "bounds_ms": []}
        bounds = [f"{bound / 1000:g}" for bound in blocks["bounds_ms"]] + ["+Inf"]
        for hook, seen in blocks["hooks"].items():
            cumulative = 0
            for bound, count in zip(bounds, seen["counts"], strict=True):
                cumulative += count
                labels = _labels(plugin=plugin["name"], hook=hook, le=bound)
                yield f"{name}_bucket{labels} {cumulative}\n"
            labels = _labels(plugin=plugin["name"], hook=hook)
            yield f"{name}_sum{labels} {seen['total_ms'] / 1000}\n"
            yield f"{name}_count{labels} {cumulative}\n"


def render(registry: PluginRegistry, histograms: HookHistograms) -> str:
    """The exposition text for the current state."""
    histograms.drain()
    plugins = registry.list_metadata(history=False)
    return "".join([*_gauges(registry, plugins), *_counters(plugins), *_histograms(histograms)])


def routes(histograms: HookHistograms) -> list[BaseRoute]:
    """The ``/metrics`` route."""

    async def metrics(request: Request) -> Response:
        registry: PluginRegistry = request.app.state.registry
        return Response(render(registry, histograms), media_type=CONTENT_TYPE)

    return [Route(OPERATION.path, metrics, methods=[OPERATION.method])]
