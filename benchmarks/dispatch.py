"""Hook dispatch overhead: ``registry.fire`` against bare ``asyncio.gather`` and pluggy.

For N = 1, 10 and 50 trivial plugins, times one ``fire`` (concurrent, with timeouts and telemetry
on) against ``asyncio.gather`` of the same handler coroutines and against pluggy calling N sync
implementations, all in this run, in interleaved rounds (median of each). Time is the CPU time
of the event-loop thread, so other work on the machine does not count. Prints the time per call
and the ratios; the targets are at
most 1.0x ``asyncio.gather`` at N = 10 and N = 50.

Both run with tracing off. A third scenario times ``fire`` at N = 10 with tracing off, with
OpenTelemetry's API but no SDK (spans are no-ops), and with the SDK exporting every span to an
in-memory exporter (what recording costs before any network export).

A second scenario loads 100 plugins, 10 on the fired hook and 90 on another, serves the
registry's telemetry stream with uvicorn on loopback and attaches WebSocket subscribers from a
separate process that drains every frame; ``fire`` is timed before and while they are attached
(their frames are encoded and sent on the loop ``fire`` runs on). Target: at most 1.3x.

    uv run python benchmarks/dispatch.py [--subscribers 10] [--record-failures]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import multiprocessing
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import pluggy

from agent_pm.plugins import PluginBase, PluginRegistry
from agent_pm.settings import Settings

ROUNDS = 7
# The registries' settings; --record-failures turns failure recording on for every plugin.
ENVIRONMENT: dict[str, str] = {}
TARGET_RATIO = 1.0
TARGET_WITH_SUBSCRIBERS = 1.3


class Trivial(PluginBase):
    name = "trivial"
    hooks = ("post_plan",)

    async def post_plan(self, **payload: Any) -> int:
        return 1


class Elsewhere(PluginBase):
    name = "elsewhere"
    hooks = ("pre_plan",)

    async def pre_plan(self, **payload: Any) -> int:
        return 1


def manifest(directory: Path, count: int) -> Path:
    path = directory / f"plugins-{count}.yaml"
    entries = "".join(
        f"- name: p{i}\n  module: __main__:Trivial\n  enabled: true\n" for i in range(count)
    )
    path.write_text(entries)
    return path


def pluggy_caller(count: int) -> Callable[[], Any]:
    spec = pluggy.HookspecMarker("bench")
    impl = pluggy.HookimplMarker("bench")

    class Spec:
        @spec
        def post_plan(self, plan: Any) -> Any: ...

    class Impl:
        @impl
        def post_plan(self, plan: Any) -> int:
            return 1

    manager = pluggy.PluginManager("bench")
    manager.add_hookspecs(Spec)
    for _ in range(count):
        manager.register(Impl())
    return lambda: manager.hook.post_plan(plan={})


def clock() -> float:
    """CPU seconds of this thread, which runs the event loop: what fire costs the process,
    whatever else the machine runs (wall time on a loaded machine measures the scheduler)."""
    return time.thread_time()


async def timings(registry: PluginRegistry, count: int) -> dict[str, float]:
    """Per-call CPU seconds of ``fire``, ``gather`` and pluggy over the ``count`` subscribed
    plugins: each round times the three in turn, and each is the median of its rounds."""
    subscribed = [p for _, p in registry.active_plugins() if isinstance(p, Trivial)]
    handlers = [plugin.post_plan for plugin in subscribed]
    calls = max(200, 20_000 // count)
    plug = pluggy_caller(count)

    async def gather() -> Any:
        return await asyncio.gather(*(handler(plan={}) for handler in handlers))

    async def fire() -> Any:
        return await registry.fire("post_plan", plan={})

    async def pluggy_call() -> Any:
        return plug()

    await fire()
    calls_by_name = {"gather": gather, "fire": fire, "pluggy": pluggy_call}
    samples: dict[str, list[float]] = {name: [] for name in calls_by_name}
    for _ in range(ROUNDS):
        for name, call in calls_by_name.items():
            gc.collect()
            started = clock()
            for _ in range(calls):
                await call()
            samples[name].append((clock() - started) / calls)
    return {name: statistics.median(values) for name, values in samples.items()}


def settings(*, tracing: bool) -> Settings:
    """The registries' settings, with spans off or on (through whatever provider is given)."""
    return Settings.from_env({**ENVIRONMENT, "TRACING": "on" if tracing else "off"})


async def measure(count: int, directory: Path) -> dict[str, float]:
    async with PluginRegistry(manifest(directory, count), settings(tracing=False)) as registry:
        return await timings(registry, count)


def recording_provider() -> Any:
    """An OpenTelemetry SDK provider exporting every span to memory (cleared as it fills)."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    class Bounded(InMemorySpanExporter):
        def export(self, spans: Any) -> Any:
            if len(self.get_finished_spans()) > 10_000:
                self.clear()
            return super().export(spans)

    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(Bounded()))
    return provider


async def measure_tracing(directory: Path) -> dict[str, dict[str, float]]:
    """``fire`` at N = 10 with tracing off, the API without an SDK, and the SDK recording."""
    modes = {
        "tracing off": (settings(tracing=False), None),
        "OTel API, no SDK": (settings(tracing=True), None),
        "SDK, in-memory": (settings(tracing=True), recording_provider()),
    }
    results = {}
    for label, (chosen, provider) in modes.items():
        path = manifest(directory, 10)
        async with PluginRegistry(path, chosen, tracer_provider=provider) as registry:
            results[label] = await timings(registry, 10)
    return results


# -- 100 plugins, WebSocket subscribers attached ------------------------------------------------


def loaded_manifest(directory: Path, subscribed: int, others: int) -> Path:
    path = directory / "plugins-loaded.yaml"
    entries = [
        f"- name: s{i}\n  module: __main__:Trivial\n  enabled: true\n" for i in range(subscribed)
    ]
    entries += [
        f"- name: o{i}\n  module: __main__:Elsewhere\n  enabled: true\n" for i in range(others)
    ]
    path.write_text("".join(entries))
    return path


def drain(port: int, subscribers: int, pipe: Connection) -> None:
    """Child process: ``subscribers`` stream clients reading every frame until told to stop."""
    asyncio.run(_drain(port, subscribers, pipe))


async def _drain(port: int, subscribers: int, pipe: Connection) -> None:
    from websockets.asyncio.client import connect

    url = f"ws://127.0.0.1:{port}/plugins/stream"
    clients = [await connect(url, compression=None, max_size=None) for _ in range(subscribers)]
    frames = [0] * subscribers
    for client in clients:
        await client.recv()  # the hello: the connection is attached to the bus

    async def read(index: int) -> None:
        with contextlib.suppress(Exception):
            async for _ in clients[index]:
                frames[index] += 1

    readers = [asyncio.create_task(read(i)) for i in range(subscribers)]
    pipe.send("attached")
    await asyncio.to_thread(pipe.recv)
    for client in clients:
        await client.close()
    await asyncio.gather(*readers)
    pipe.send(sum(frames))


@contextlib.asynccontextmanager
async def stream_server(registry: PluginRegistry) -> AsyncIterator[int]:
    """Serve ``registry``'s telemetry stream on a free loopback port, in this event loop."""
    import socket

    import uvicorn
    from starlette.applications import Starlette

    from agent_pm.api import _stream as stream
    from agent_pm.server import Server

    app = Starlette(routes=stream.routes())
    app.state.registry = registry

    async def with_role(scope: Any, receive: Any, send: Any) -> None:
        scope.setdefault("state", {})["role"] = "read"
        await app(scope, receive, send)

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(with_role, lifespan="off", log_level="warning")
    server = Server(config)
    task = asyncio.create_task(server.serve([sock]))
    try:
        yield sock.getsockname()[1]
    finally:
        server.should_exit = True
        await task
        sock.close()


async def measure_loaded(directory: Path, subscribers: int) -> dict[str, Any]:
    path = loaded_manifest(directory, 10, 90)
    async with PluginRegistry(path, settings(tracing=False)) as registry:
        alone = await timings(registry, 10)
        async with stream_server(registry) as port:
            parent, child = multiprocessing.Pipe()
            process = multiprocessing.get_context("spawn").Process(
                target=drain, args=(port, subscribers, child), daemon=True
            )
            process.start()
            await asyncio.to_thread(parent.recv)
            attached = await timings(registry, 10)
            parent.send("stop")
            frames = await asyncio.to_thread(parent.recv)
            process.join(10)
    return {"alone": alone, "attached": attached, "frames": frames}


def _row(label: str, r: dict[str, float]) -> str:
    return (
        f"{label:>14} {r['fire'] * 1e6:>10.1f} {r['gather'] * 1e6:>10.1f}"
        f" {r['pluggy'] * 1e6:>10.1f} {r['fire'] / r['gather']:>12.2f}"
        f" {r['fire'] / r['pluggy']:>12.2f}"
    )


def _verdict(ratio: float, target: float = TARGET_RATIO) -> str:
    return f"{'meets' if ratio <= target else 'misses'} the {target}x target"


async def main(subscribers: int) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        results = {n: await measure(n, Path(tmp)) for n in (1, 10, 50)}
        loaded = await measure_loaded(Path(tmp), subscribers)
        traced = await measure_tracing(Path(tmp))
    columns = ("fire us", "gather us", "pluggy us", "fire/gather", "fire/pluggy")
    print(f"{'N':>4} " + " ".join(f"{c:>12}" for c in columns))
    for n, r in results.items():
        print(
            f"{n:>4} {r['fire'] * 1e6:>12.1f} {r['gather'] * 1e6:>12.1f} {r['pluggy'] * 1e6:>12.1f}"
            f" {r['fire'] / r['gather']:>12.2f} {r['fire'] / r['pluggy']:>12.2f}"
        )
    print(f"\n100 plugins loaded, 10 on the fired hook; {subscribers} WebSocket subscribers")
    columns = ("fire us", "gather us", "pluggy us")
    print(
        f"{'':>14} "
        + " ".join(f"{c:>10}" for c in columns)
        + f" {'fire/gather':>12} {'fire/pluggy':>12}"
    )
    print(_row("no subscribers", loaded["alone"]))
    print(_row(f"{subscribers} subscribers", loaded["attached"]))
    print("\nN = 10, tracing")
    print(
        f"{'':>14} "
        + " ".join(f"{c:>10}" for c in columns)
        + f" {'fire/gather':>12} {'fire/off':>12}"
    )
    off = traced["tracing off"]["fire"]
    for label, r in traced.items():
        print(_row(label[:14], r).rsplit(" ", 1)[0] + f" {r['fire'] / off:>12.2f}")
    ratio = results[10]["fire"] / results[10]["gather"]
    at_50 = results[50]["fire"] / results[50]["gather"]
    attached = loaded["attached"]
    with_subs = attached["fire"] / attached["gather"]
    print(
        f"summary: fire/gather at N=10 = {ratio:.2f}x ({_verdict(ratio)}), at N=50 = {at_50:.2f}x"
        f" ({_verdict(at_50)}); with 100 plugins and {subscribers} WebSocket subscribers"
        f" ({loaded['frames']} frames drained) = {with_subs:.2f}x"
        f" ({_verdict(with_subs, TARGET_WITH_SUBSCRIBERS)}),"
        f" fire/pluggy {attached['fire'] / attached['pluggy']:.1f}x; tracing at N=10: API"
        f" {traced['OTel API, no SDK']['fire'] / off:.2f}x, SDK in-memory"
        f" {traced['SDK, in-memory']['fire'] / off:.2f}x of tracing off"
    )
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscribers", type=int, default=10)
    parser.add_argument("--record-failures", action="store_true", help="record failed calls")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as data:
        if args.record_failures:
            ENVIRONMENT.update(RECORD_FAILURES="true", DATA_DIR=data)
        sys.exit(asyncio.run(main(args.subscribers)))
