"""WebSocket frame bound: server RSS while clients send huge frames, against uvicorn's default.

    uv run python benchmarks/ws_frames.py [--clients 40] [--mib 15.9]

Two server processes serve the same operator app on an empty manifest: ``bounded`` is
``agent-pm serve`` (``ws_max_size`` = the stream's 64 KiB message limit) and ``default`` runs
the app under uvicorn's default 16 MiB limit, as the server did before. For each, ``--clients``
read-key connections to ``/plugins/stream`` send one frame of ``--mib`` MiB at the same time;
this process samples the server's RSS (``/proc/<pid>/status``, Linux) every 50 ms until every
connection is closed or answered, and prints the peak growth over the idle RSS. The ratio is
bounded growth over default growth. Target: the bounded server grows by less than one frame.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

ROOT = Path(__file__).resolve().parent.parent
KEY = "bench-admin-key-0123456789"
DEFAULT_SERVER = """
import sys, uvicorn
from agent_pm.api._app import create_app
uvicorn.run(create_app(watch=False), host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
"""


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start(kind: str, manifest: Path, data: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {**os.environ, "ADMIN_API_KEY": KEY, "PLUGIN_CONFIG_PATH": str(manifest)}
    env.update(DATA_DIR=str(data), PYTHONPATH=str(ROOT))
    if kind == "bounded":
        argv = [sys.executable, "-m", "agent_pm.cli", "serve", "--port", str(port), "--no-watch"]
    else:
        argv = [sys.executable, "-c", DEFAULT_SERVER, str(port)]
    quiet = subprocess.DEVNULL
    process = subprocess.Popen(argv, env=env, cwd=ROOT, stdout=quiet, stderr=quiet)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            httpx.get(f"{url}/health", timeout=1)
            return process, url
        except httpx.TransportError:
            time.sleep(0.05)
    raise RuntimeError(f"{kind} server did not start")


async def flood(url: str, clients: int, size: int) -> None:
    payload = "x" * size

    async def one() -> None:
        ws = url.replace("http", "ws", 1) + "/plugins/stream"
        try:
            async with connect(ws, additional_headers={"X-API-Key": KEY}, max_size=None) as c:
                await c.recv()  # hello
                await c.send(payload)
                await asyncio.wait_for(c.recv(), 60)  # an error reply, or the close
        except (ConnectionClosed, TimeoutError, OSError):
            pass

    await asyncio.gather(*(one() for _ in range(clients)))


async def measure(kind: str, clients: int, size: int) -> tuple[int, int]:
    with tempfile.TemporaryDirectory() as directory:
        manifest = Path(directory) / "plugins.yaml"
        manifest.write_text("[]\n")
        process, url = start(kind, manifest, Path(directory) / "data")
        try:
            idle = rss_kib(process.pid)
            peak = idle
            task = asyncio.create_task(flood(url, clients, size))
            while not task.done():
                peak = max(peak, rss_kib(process.pid))
                await asyncio.sleep(0.05)
            await task
            return idle, peak
        finally:
            process.terminate()
            process.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=40)
    parser.add_argument("--mib", type=float, default=15.9)
    args = parser.parse_args()
    size = int(args.mib * 1024 * 1024)
    growth = {}
    for kind in ("default", "bounded"):
        idle, peak = asyncio.run(measure(kind, args.clients, size))
        growth[kind] = peak - idle
        print(
            f"{kind:8} idle {idle / 1024:7.1f} MiB  peak {peak / 1024:7.1f} MiB  "
            f"growth {growth[kind] / 1024:7.1f} MiB"
        )
    print(
        f"summary: growth bounded/default x{growth['bounded'] / max(growth['default'], 1):.3f} "
        f"({args.clients} clients x {args.mib} MiB frames)"
    )


if __name__ == "__main__":
    main()
