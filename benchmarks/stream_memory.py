"""Stream memory: server RSS with one stuck WebSocket subscriber against a run without it.

    uv run python benchmarks/stream_memory.py [--seconds 40] [--rate 1000]

Two server processes run side by side for ``--seconds``, each serving ``/plugins/stream`` with
uvicorn and firing a hook at ``--rate`` samples per second, each with one client here reading
every frame. The ``stuck`` server also has a subscriber that completes the handshake over a raw
socket and then never reads a byte, so the kernel's buffers fill and the server's sends block.
This process samples both servers' RSS (``/proc/<pid>/status``, Linux) every half second.

Prints RSS at the start and peak and the peak growth of each; the ratio is the stuck server's
peak RSS over the baseline's. Target: at most 1.1x, and the stuck server's growth bounded by
its connection buffer (it should be closed with 1013 after ``send_timeout``), not by the run.
"""

from __future__ import annotations

import argparse
import array
import asyncio
import base64
import contextlib
import fcntl
import multiprocessing
import os
import socket
import sys
import termios
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
TARGET_RATIO = 1.1
SAMPLE_EVERY = 0.5


# -- the servers (each in its own process) -----------------------------------------------------


def serve(port: int, rate: float, pipe: Connection) -> None:
    sys.path.insert(0, str(ROOT))
    asyncio.run(_serve(port, rate, pipe))


async def _serve(port: int, rate: float, pipe: Connection) -> None:
    import uvicorn
    from _stream_app import stream_app

    from agent_pm.server import Server

    app, served = stream_app()

    config = uvicorn.Config(served, host="127.0.0.1", port=port, log_level="warning")
    listening = asyncio.Event()

    class Server(Server):
        async def startup(self, sockets: Any = None) -> None:
            await super().startup(sockets)
            listening.set()

    server = Server(config)
    task = asyncio.create_task(server.serve())
    await listening.wait()
    pipe.send("ready")
    stop = asyncio.create_task(asyncio.to_thread(pipe.recv))
    fired, start = 0, time.perf_counter()
    while not stop.done():
        due = int((time.perf_counter() - start) * rate) - fired
        for _ in range(due):
            await app.state.registry.fire("pre_plan")
        fired += max(due, 0)
        await asyncio.sleep(0.005)
    server.should_exit = True
    await task


# -- the clients and the measurement (this process) --------------------------------------------


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def stuck_subscriber(port: int) -> socket.socket:
    """A WebSocket handshake sent over a raw socket that is then never read."""
    sock = socket.create_connection(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    request = (
        f"GET /plugins/stream HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    sock.sendall(request.encode())
    return sock


async def reader(port: int, frames: list[int]) -> None:
    from websockets.asyncio.client import connect

    url = f"ws://127.0.0.1:{port}/plugins/stream"
    async with connect(url, compression=None, max_size=None) as ws:
        with contextlib.suppress(Exception):
            async for _ in ws:
                frames[0] += 1


async def main(seconds: float, rate: float) -> None:
    ports = {kind: _free_port() for kind in ("baseline", "stuck")}
    pipes, processes = {}, {}
    for kind, port in ports.items():
        pipes[kind], child = multiprocessing.Pipe()
        processes[kind] = multiprocessing.get_context("spawn").Process(
            target=serve, args=(port, rate, child), daemon=True
        )
        processes[kind].start()
    for pipe in pipes.values():
        await asyncio.to_thread(pipe.recv)
    frames = {kind: [0] for kind in ports}
    readers = [asyncio.create_task(reader(ports[kind], frames[kind])) for kind in ports]
    stuck = stuck_subscriber(ports["stuck"])
    await asyncio.sleep(1)  # both streams running before the first sample
    rss: dict[str, list[int]] = {kind: [] for kind in ports}
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        for kind, process in processes.items():
            assert process.pid is not None
            rss[kind].append(rss_kib(process.pid))
        await asyncio.sleep(SAMPLE_EVERY)
    print(f"the stuck subscriber left {unread(stuck) / 1024:,.0f} KiB unread in its socket")
    stuck.close()
    for pipe in pipes.values():
        pipe.send("stop")
    for process in processes.values():
        await asyncio.to_thread(process.join, 10)
    for task in readers:
        task.cancel()
    await asyncio.gather(*readers, return_exceptions=True)
    report(rss, frames, seconds, rate)


def unread(sock: socket.socket) -> int:
    """Bytes the server sent that wait, unread, in the socket's receive buffer."""
    buffer = array.array("i", [0])
    fcntl.ioctl(sock, termios.FIONREAD, buffer)
    return buffer[0]


def report(
    rss: dict[str, list[int]], frames: dict[str, list[int]], seconds: float, rate: float
) -> None:
    for kind, samples in rss.items():
        start, peak, end = samples[0] / 1024, max(samples) / 1024, samples[-1] / 1024
        print(
            f"{kind:>8}: RSS start {start:6.1f} MiB  peak {peak:6.1f} MiB  end {end:6.1f} MiB"
            f"  growth {peak - start:5.1f} MiB  (its reader got {frames[kind][0]} frames)"
        )
    ratio = max(rss["stuck"]) / max(rss["baseline"])
    growth = {kind: (max(samples) - samples[0]) / 1024 for kind, samples in rss.items()}
    verdict = "meets" if ratio <= TARGET_RATIO else "misses"
    print(
        f"summary: peak RSS with a stuck subscriber over {seconds:.0f} s at {rate:,.0f} samples/s"
        f" = {ratio:.2f}x the baseline's, max growth {growth['stuck']:.1f} MiB"
        f" (baseline {growth['baseline']:.1f} MiB)"
        f" ({verdict} the {TARGET_RATIO}x target)"
    )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=40.0)
    parser.add_argument("--rate", type=float, default=1_000)
    args = parser.parse_args()
    asyncio.run(main(args.seconds, args.rate))
