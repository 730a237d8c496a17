"""SIGTERM while a hook hangs: ``agent-pm serve`` still stops in bounded time, cleanly.

The bound is the graceful window plus one second, whatever blocks: an async hook, a sync handler
or a lifecycle method asleep in a worker thread that nothing can interrupt.
"""

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

from agent_pm.server import DRAIN_SECONDS, GRACEFUL_SHUTDOWN_SECONDS
from tests.fixtures.servers import serve_process, wait_for_health

ROOT = Path(__file__).parents[2]
ADMIN_KEY = "admin-key-for-shutdown"
# Beyond the hook's timeout: answering the in-flight request, closing the stream, stopping the
# registry and the interpreter's own exit.
GRACE = 3.0
MANIFEST = """\
# a hook that never returns
- name: hanging
  module: {module}
  enabled: true
  timeout_seconds: {timeout}
"""
# The process must be gone this long after SIGTERM, whatever its plugins do.
BOUND = GRACEFUL_SHUTDOWN_SECONDS + 1.0


@pytest.fixture
def plugin() -> str:
    return "tests.fixtures.plugins:Hanging"


@pytest.fixture
def manifest(tmp_path: Path, hook_timeout: float, plugin: str) -> Path:
    path = tmp_path / "plugins.yaml"
    path.write_text(MANIFEST.format(timeout=hook_timeout, module=plugin))
    return path


@pytest.fixture
def served(manifest: Path) -> Iterator[tuple[subprocess.Popen[str], str]]:
    env = {k: v for k, v in os.environ.items() if not k.endswith(("API_KEY", "_PATH", "_URL"))}
    env.update(PYTHONPATH=str(ROOT), API_KEY="read-key-for-shutdown", ADMIN_API_KEY=ADMIN_KEY)
    env.update(DATA_DIR=str(manifest.parent / "data"))
    with serve_process(manifest, env, "--no-watch") as served:
        yield served


def fire_in_background(url: str) -> tuple[threading.Thread, list[httpx.Response | Exception]]:
    replies: list[httpx.Response | Exception] = []

    def fire() -> None:
        try:
            headers = {"X-API-Key": ADMIN_KEY}
            replies.append(httpx.post(f"{url}/hooks/post_plan", headers=headers, timeout=60))
        except Exception as exc:  # reported by the assertions of the test
            replies.append(exc)

    firing = threading.Thread(target=fire)
    firing.start()
    time.sleep(0.5)  # the request reaches the hung handler; nothing observable says when
    assert not replies, replies
    return firing, replies


def stop(process: subprocess.Popen[str], limit: float) -> tuple[float, str]:
    """SIGTERM ``process``; the seconds it took to exit, and its stderr."""
    signalled = time.monotonic()
    process.send_signal(signal.SIGTERM)
    try:
        _, err = process.communicate(timeout=limit + 10)
    except subprocess.TimeoutExpired:
        pytest.fail(f"still running {limit + 10} s after SIGTERM")
    return time.monotonic() - signalled, err


def sigterm_during_hung_hook(
    served: tuple[subprocess.Popen[str], str], manifest: Path, limit: float, status: int = 0
) -> tuple[str, httpx.Response]:
    """Fire the hung hook, SIGTERM the server, and check it stopped with ``status`` within
    ``limit`` seconds with the manifest untouched; its stderr and the hook request's reply."""
    process, url = served
    before = manifest.read_bytes()
    wait_for_health(process, url)
    firing, replies = fire_in_background(url)
    stopped, err = stop(process, limit)
    firing.join(5)
    assert stopped < limit, f"took {stopped:.2f} s to stop"
    assert process.returncode == status, err
    assert manifest.read_bytes() == before
    [reply] = replies
    assert isinstance(reply, httpx.Response), reply
    return err, reply


@pytest.mark.parametrize("hook_timeout", [2.0])
def test_shutdown_sigterm_during_a_hung_hook_exits_zero_within_timeout_plus_grace(
    served: tuple[subprocess.Popen[str], str], manifest: Path, hook_timeout: float
) -> None:
    err, reply = sigterm_during_hung_hook(served, manifest, hook_timeout + GRACE)
    assert "Traceback" not in err
    assert reply.status_code == 200
    assert [r["status"] for r in reply.json()["results"]] == ["timeout"]


@pytest.mark.parametrize(
    ("plugin", "hook_timeout", "blocked_threads"),
    [
        ("tests.fixtures.plugins:Hanging", GRACEFUL_SHUTDOWN_SECONDS + 30.0, False),
        ("tests.fixtures.stuck_plugins:SleepingHandler", 1000.0, True),  # time.sleep(1000)
    ],
)
def test_shutdown_hook_outlasting_the_window_is_cancelled_through_the_registry(
    served: tuple[subprocess.Popen[str], str],
    manifest: Path,
    hook_timeout: float,
    blocked_threads: bool,
) -> None:
    err, reply = sigterm_during_hung_hook(served, manifest, BOUND)
    assert reply.status_code == 503
    assert reply.json() == {
        "error": "shutting_down",
        "detail": "the service is stopping: this hook call was cancelled",
    }
    assert "cancelled 1 hook call(s) still running: post_plan" in err
    assert ("still blocked in plugin code" in err) is blocked_threads
    assert "Traceback" not in err


@pytest.mark.parametrize("plugin", ["tests.fixtures.stuck_plugins:SleepingDisable"])
@pytest.mark.parametrize("hook_timeout", [1000.0])
def test_shutdown_with_on_disable_asleep_in_its_thread_exits_within_the_window(
    served: tuple[subprocess.Popen[str], str], manifest: Path, hook_timeout: float
) -> None:
    process, url = served
    wait_for_health(process, url)
    stopped, err = stop(process, BOUND)
    assert stopped < BOUND, f"took {stopped:.2f} s to stop"
    # Either the lifecycle call's own timeout or the watchdog ended the wait.
    assert process.returncode in (0, 1), err
    assert "Traceback" not in err


def test_the_drain_leaves_room_to_answer_and_stop() -> None:
    assert DRAIN_SECONDS + 3 <= GRACEFUL_SHUTDOWN_SECONDS
