"""REST throughput: ``GET /plugins`` against a trivial Starlette JSON endpoint on the same server.

    uv run python benchmarks/rest.py [--plugins 50] [--seconds 3] [--connections 8]

A server process runs the real app under uvicorn on loopback with ``--plugins`` plugins of six
hooks each, every hook fired 100 times so each plugin's history is full. A trivial route
(Starlette's own ``JSONResponse({"status": "ok"})``) is added to the same app, behind the same
middleware. This process is the load generator: ``--connections`` keep-alive connections send
requests back to back for ``--seconds`` per endpoint, over raw sockets (an HTTP client library
would be the bottleneck). Each endpoint is measured twice, interleaved, and the better run kept.

Endpoints: the summaries (``GET /plugins``: state, health, stats, five-minute windows, no
history), the same with ``If-None-Match`` (304), and, for information, the full history
(``?history=100``, the answer every listing used to be).

Targets: summaries at least 0.3x the trivial endpoint, a 304 at least 0.8x.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import socket
import sys
import tempfile
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import uvicorn

from agent_pm.plugins import PluginBase

ROOT = Path(__file__).resolve().parent.parent
HOOKS = ("pre_plan", "post_plan", "pre_task", "post_task", "pre_review", "post_review")
HISTORY = 100
KEY = "bench-read-key-0123456789"
TARGET_RATIO = 0.3
TARGET_304 = 0.8


class SixHooks(PluginBase):
    name = "six_hooks"
    hooks = HOOKS

    async def pre_plan(self, **payload: Any) -> int:
        return 1

    pre_task = pre_review = post_plan = post_task = post_review = pre_plan


# -- the server (its own process) --------------------------------------------------------------


def serve(port: int, plugins: int, pipe: Connection) -> None:
    sys.path.insert(0, str(ROOT))
    asyncio.run(_serve(port, plugins, pipe))


class _Server(uvicorn.Server):
    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.listening = asyncio.Event()

    async def startup(self, sockets: Any = None) -> None:
        await super().startup(sockets)
        self.listening.set()


async def _serve(port: int, plugins: int, pipe: Connection) -> None:
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from agent_pm.api._app import create_app
    from agent_pm.settings import Settings

    manifest = Path(tempfile.mkdtemp()) / "plugins.yaml"
    manifest.write_text(
        "".join(
            f"- name: p{i}\n  module: __main__:SixHooks\n  enabled: true\n" for i in range(plugins)
        )
    )
    settings = Settings.from_env({"API_KEY": KEY, "ADMIN_API_KEY": "bench-admin-key-0123456789"})
    app = create_app(settings, manifest_path=manifest, watch=False)

    async def trivial(request: Any) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    app.router.routes.insert(0, Route("/trivial", trivial))
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
    server = _Server(config)
    task = asyncio.create_task(server.serve())
    await server.listening.wait()
    for hook in HOOKS:
        for _ in range(HISTORY):
            await app.state.registry.fire(hook)
    pipe.send("ready")
    await asyncio.to_thread(pipe.recv)
    server.should_exit = True
    await task


# -- the load generator (this process) ---------------------------------------------------------


async def connection(port: int, path: str, until: float, revalidate: bool) -> tuple[int, int]:
    """Send ``GET path`` back to back until ``until``; return (responses, body bytes).

    With ``revalidate`` each request carries the last ETag in ``If-None-Match``, as a polling
    client does (the answer changes at least every ten seconds, when windows move on).
    """
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    tag = ""
    done = size = 0
    while time.perf_counter() < until:
        extra = f"If-None-Match: {tag}\r\n" if tag else ""
        writer.write(
            f"GET {path} HTTP/1.1\r\nHost: bench\r\nX-API-Key: {KEY}\r\n{extra}\r\n".encode()
        )
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith((b"HTTP/1.1 200", b"HTTP/1.1 304")), head[:200]
        headers = dict(
            line.split(":", 1) for line in head.decode().lower().split("\r\n")[1:] if ":" in line
        )
        if revalidate:
            tag = headers["etag"].strip()
        size += len(await reader.readexactly(int(headers.get("content-length", "0"))))
        done += 1
    writer.close()
    return done, size


async def rate(
    port: int, path: str, connections: int, seconds: float, revalidate: bool = False
) -> tuple[float, float]:
    """(requests per second, mean body bytes) over ``connections`` concurrent connections."""
    started = time.perf_counter()
    results = await asyncio.gather(
        *(connection(port, path, started + seconds, revalidate) for _ in range(connections))
    )
    elapsed = time.perf_counter() - started
    done = sum(n for n, _ in results)
    return done / elapsed, sum(b for _, b in results) / max(done, 1)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def main(plugins: int, seconds: float, connections: int) -> None:
    port = _free_port()
    parent, child = multiprocessing.Pipe()
    process = multiprocessing.get_context("spawn").Process(
        target=serve, args=(port, plugins, child), daemon=True
    )
    process.start()
    await asyncio.to_thread(parent.recv)
    cases = {
        "trivial": ("/trivial", False),
        "summaries": ("/plugins", False),
        "304": ("/plugins", True),
        "history=100": ("/plugins?history=100", False),
    }
    for path, revalidate in cases.values():  # warm-up
        await rate(port, path, connections, 0.3, revalidate)
    runs: dict[str, list[tuple[float, float]]] = {name: [] for name in cases}
    for _ in range(2):
        for name, (path, revalidate) in cases.items():
            runs[name].append(await rate(port, path, connections, seconds, revalidate))
    parent.send("stop")
    process.join(10)
    best = {name: max(results)[0] for name, results in runs.items()}
    for name, results in runs.items():
        per_s = " / ".join(f"{r:,.1f}" for r, _ in results)
        ratio = best[name] / best["trivial"]
        print(f"{name:>12}  {per_s} req/s  {ratio:.3f}x  body {results[0][1] / 1000:,.1f} kB")
    listing, not_modified = best["summaries"] / best["trivial"], best["304"] / best["trivial"]
    verdict = (
        "meets both targets"
        if listing >= TARGET_RATIO and not_modified >= TARGET_304
        else "misses a target"
    )
    print(
        f"summary: GET /plugins ({plugins} plugins x {len(HOOKS)} hooks, full history recorded) "
        f"{listing:.3f}x and 304 {not_modified:.3f}x of trivial {best['trivial']:,.0f} req/s "
        f"({verdict}: {TARGET_RATIO}x, {TARGET_304}x)"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plugins", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--connections", type=int, default=8)
    args = parser.parse_args()
    asyncio.run(main(args.plugins, args.seconds, args.connections))
