"""Hook figures as one node publishes them, and their sum over the nodes of a cluster.

A node's figures are, per plugin and hook, its lifetime counters and its window buckets
(:class:`~agent_pm.plugins.windows.WindowSnapshot`). Buckets are aligned to wall-clock time in
every process, so the cluster's windows are the plain sum of the nodes' (``WindowRecorder.merge``)
and health judged from them is the cluster's health. Importable without the Redis client.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping

import msgspec

from agent_pm.plugins.telemetry import HookStatsInfo, HookView, PluginTelemetry
from agent_pm.plugins.windows import WindowRecorder, WindowSnapshot

__all__ = ["HookFigures", "PluginFigures", "collect", "decode", "encode", "merge"]


class HookFigures(msgspec.Struct, frozen=True, array_like=True):
    """One hook's figures on one node: counters since the plugin was loaded, and windows."""

    stats: HookStatsInfo
    windows: WindowSnapshot


# Hook → figures of one plugin on one node.
PluginFigures = dict[str, HookFigures]
_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(PluginFigures)


def encode(figures: PluginFigures) -> bytes:
    return _encoder.encode(figures)


def decode(data: bytes) -> PluginFigures:
    """Figures published by a node; raises ``msgspec.DecodeError`` (or ``ValidationError``)."""
    return _decoder.decode(data)


def collect(telemetry: PluginTelemetry) -> PluginFigures:
    """A plugin's figures in this process, to publish."""
    return {
        hook: HookFigures(stats.info(), telemetry.windows[hook].snapshot())
        for hook, stats in telemetry.stats.items()
    }


def merge(
    parts: Iterable[Mapping[str, PluginFigures]], clock: Callable[[], float] = time.time
) -> dict[str, dict[str, HookView]]:
    """The sum of several nodes' figures (plugin → hook → figures), per plugin and hook.

    A node whose windows cannot merge (another layout, from another version) is left out of
    that hook's windows, not of the rest.
    """
    stats: dict[tuple[str, str], list[HookStatsInfo]] = {}
    windows: dict[tuple[str, str], list[WindowSnapshot]] = {}
    for part in parts:
        for plugin, hooks in part.items():
            for hook, figures in hooks.items():
                stats.setdefault((plugin, hook), []).append(figures.stats)
                windows.setdefault((plugin, hook), []).append(figures.windows)
    merged: dict[str, dict[str, HookView]] = {}
    for (plugin, hook), counters in stats.items():
        recorder = WindowRecorder(clock)
        for snapshot in windows[(plugin, hook)]:
            try:
                recorder.merge(snapshot)
            except ValueError:
                continue
        merged.setdefault(plugin, {})[hook] = HookView(_sum(counters), recorder)
    return merged


def _sum(counters: list[HookStatsInfo]) -> HookStatsInfo:
    if len(counters) == 1:
        return counters[0]
    invocations = sum(c.invocations for c in counters)
    total = sum(c.total_duration_ms for c in counters)
    return HookStatsInfo(
        invocations=invocations,
        failures=sum(c.failures for c in counters),
        timeouts=sum(c.timeouts for c in counters),
        skipped=sum(c.skipped for c in counters),
        quarantined=sum(c.quarantined for c in counters),
        deadlines=sum(c.deadlines for c in counters),
        total_duration_ms=round(total, 3),
        # The nodes' last calls are not ordered against each other: the largest is shown.
        last_duration_ms=max(c.last_duration_ms for c in counters),
        avg_duration_ms=round(total / invocations, 3) if invocations else 0.0,
    )
