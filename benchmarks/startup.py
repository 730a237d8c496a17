"""Start-up: time until ``/health`` answers for ``agent-pm serve``, 50 plugins against none.

    uv run python benchmarks/startup.py [--plugins 50] [--runs 5]

Each run starts ``python -m agent_pm.cli serve --no-watch`` as a fresh process on a temporary
manifest (``tests.fixtures.plugins:Echo`` entries, or an empty list) and polls ``GET /health``
every 5 ms until it answers; the process is then stopped with SIGTERM. Runs alternate between
the two manifests; the medians are compared. Target: 50 plugins start within 1.5x of none.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGET_RATIO = 1.5
POLL = 0.005


def manifest(directory: Path, count: int) -> Path:
    path = directory / f"plugins-{count}.yaml"
    entries = "".join(
        f"- name: p{i}\n  module: tests.fixtures.plugins:Echo\n  enabled: true\n"
        for i in range(count)
    )
    path.write_text(entries or "[]\n")
    return path


def healthy(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
            return sock.recv(64).startswith(b"HTTP/1.1 200")
    except OSError:
        return False


def time_to_health(path: Path) -> float:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "API_KEY": "bench-read-key-0123456789"}
    argv = [sys.executable, "-m", "agent_pm.cli", "serve", "--port", str(port)]
    argv += ["--manifest", str(path), "--no-watch"]
    started = time.perf_counter()
    process = subprocess.Popen(
        argv, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        while not healthy(port):
            if process.poll() is not None or time.perf_counter() - started > 30:
                raise RuntimeError(f"the server did not come up on {path}")
            time.sleep(POLL)
        return time.perf_counter() - started
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(20)


def main(plugins: int, runs: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        paths = {0: manifest(Path(tmp), 0), plugins: manifest(Path(tmp), plugins)}
        time_to_health(paths[0])  # warm the file system cache and the bytecode
        samples: dict[int, list[float]] = {count: [] for count in paths}
        for _ in range(runs):
            for count, path in paths.items():
                samples[count].append(time_to_health(path))
    for count, times in samples.items():
        listed = " ".join(f"{t * 1000:.0f}" for t in times)
        print(f"{count:>3} plugins: median {statistics.median(times) * 1000:6.0f} ms  ({listed})")
    empty, loaded = statistics.median(samples[0]), statistics.median(samples[plugins])
    ratio = loaded / empty
    verdict = "meets" if ratio <= TARGET_RATIO else "misses"
    print(
        f"summary: /health after {loaded * 1000:.0f} ms with {plugins} plugins vs "
        f"{empty * 1000:.0f} ms empty = {ratio:.2f}x ({verdict} the {TARGET_RATIO}x target)"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plugins", type=int, default=50)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    main(args.plugins, args.runs)
