"""An isolated plugin sleeping in its worker never holds up or outlives ``agent-pm serve``."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.fixtures.servers import serve_process, wait_for_health
from tests.plugins.test_isolation import alive
from tests.reliability.test_shutdown import ADMIN_KEY, BOUND, ROOT, fire_in_background, stop

MANIFEST = """\
- name: sleeper
  module: tests.fixtures.isolated_plugins:Sleeper
  enabled: true
  isolation: process
  timeout_seconds: 3600
"""


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], str]]:
    manifest = tmp_path / "plugins.yaml"
    manifest.write_text(MANIFEST)
    env = {k: v for k, v in os.environ.items() if not k.endswith(("API_KEY", "_PATH", "_URL"))}
    env.update(PYTHONPATH=str(ROOT), API_KEY="read-key-for-shutdown", ADMIN_API_KEY=ADMIN_KEY)
    env.update(DATA_DIR=str(tmp_path / "data"))
    with serve_process(manifest, env, "--no-watch") as served:
        yield served


def worker_of(url: str) -> int:
    reply = httpx.get(f"{url}/plugins/sleeper", headers={"X-API-Key": ADMIN_KEY}, timeout=10)
    body = reply.json()
    pid = (body.get("plugin") or body)["isolation"]["pid"]
    assert isinstance(pid, int)
    return pid


def sleeping(
    served: tuple[subprocess.Popen[str], str],
) -> tuple[subprocess.Popen[str], int, threading.Thread]:
    """Wait for the server, then put a request to sleep in the worker; the server process, the
    worker's pid and the thread waiting for the answer."""
    process, url = served
    wait_for_health(process, url)
    worker = worker_of(url)
    firing, _ = fire_in_background(url)
    return process, worker, firing


@pytest.mark.timing
def test_isolated_sleep_still_lets_sigterm_exit_within_the_graceful_window(
    served: tuple[subprocess.Popen[str], str],
) -> None:
    process, worker, firing = sleeping(served)
    stopped, err = stop(process, BOUND)
    firing.join(5)
    assert stopped < BOUND, f"took {stopped:.2f} s"
    assert process.returncode == 0, err
    assert not alive(worker)


def test_isolated_worker_exits_when_the_service_is_killed(
    served: tuple[subprocess.Popen[str], str],
) -> None:
    process, worker, firing = sleeping(served)
    process.send_signal(signal.SIGKILL)
    process.communicate()
    firing.join(5)
    deadline = time.monotonic() + 10
    while alive(worker) and time.monotonic() < deadline:
        time.sleep(0.05)  # bounded poll: nothing signals another process's exit to us
    assert not alive(worker)
