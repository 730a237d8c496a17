"""Plugins with ``isolation: process``: their faults end in their worker, never in the service."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from hashlib import sha256
from pathlib import Path
from typing import Any

import anyio
import pytest
from msgspec import to_builtins as plain

from agent_pm.plugins import PluginRegistry
from agent_pm.plugins.process import ENV_ALLOWLIST, worker_environment
from agent_pm.settings import Settings

pytestmark = pytest.mark.anyio

MODULE = "tests.fixtures.isolated_plugins"


def isolated(cls: str, *, name: str | None = None, **fields: Any) -> str:
    """A manifest entry running ``cls`` in a worker process."""
    lines = [
        f"- name: {name or cls.lower()}",
        f"  module: {MODULE}:{cls}",
        "  enabled: true",
        "  isolation: process",
    ]
    for key, value in fields.items():
        if isinstance(value, dict):
            lines.append(f"  {key}:")
            lines += [f"    {k}: {v}" for k, v in value.items()]
        else:
            lines.append(f"  {key}: {value}")
    return "\n".join(lines) + "\n"


def alive(pid: int) -> bool:
    """Whether process ``pid`` still runs (a zombie awaiting its reaper does not)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "\nState:\tZ" not in status


def worker_pid(registry: PluginRegistry, name: str) -> int:
    pid = plain(registry.metadata_for(name))["isolation"]["pid"]
    assert isinstance(pid, int)
    return pid


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings.from_env(
        {
            "PLUGIN_CONFIG_PATH": str(tmp_path / "plugins.yaml"),
            "PATH": os.environ.get("PATH", ""),
            "API_KEY": "service-api-key-canary",
            "OTHER_TOKEN": "other-plugin-secret-canary",
            "WHERE_TOKEN": "where-secret-value",
        }
    )


async def heartbeat_lags(stop: anyio.Event, period: float = 0.01) -> list[float]:
    """Run a ``period`` heartbeat until ``stop``; how late each beat woke, in seconds."""
    lags: list[float] = []
    while not stop.is_set():
        started = anyio.current_time()
        await anyio.sleep(period)
        lags.append(anyio.current_time() - started - period)
    return lags


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


async def fire_with_heartbeat(registry: PluginRegistry, **payload: Any) -> tuple[Any, list[float]]:
    stop = anyio.Event()
    lags: list[float] = []

    async def beat() -> None:
        lags.extend(await heartbeat_lags(stop))

    async with anyio.create_task_group() as group:
        group.start_soon(beat)
        await anyio.sleep(0.05)  # a few beats before the call, so the sample is never empty
        results = await registry.fire("post_plan", **payload)
        stop.set()
    return results, lags


async def test_isolation_runs_the_plugin_in_another_process(registry_factory: Any) -> None:
    async with registry_factory(isolated("Where")) as registry:
        [result] = await registry.fire("post_plan", plan={"id": 7})
        assert result.status == "success", result
        assert result.value == {"pid": worker_pid(registry, "where"), "echo": {"plan": {"id": 7}}}
        assert result.value["pid"] != os.getpid()
        info = plain(registry.metadata_for("where"))["isolation"]
        assert info["mode"] == "process" and info["state"] == "running"
        assert info["restarts"] == 0


@pytest.mark.timing
async def test_isolation_busy_async_handler_leaves_the_loop_free_and_the_next_call_a_fresh_worker(
    registry_factory: Any, entry: Callable[..., str]
) -> None:
    inline = entry("Spinner", name="inline_spinner", enabled=True).replace(
        "tests.fixtures.plugins", MODULE
    )
    # Long enough for a replacement worker to start on a loaded machine before the next call.
    async with registry_factory(isolated("Spinner", timeout_seconds=5), inline) as registry:
        first = worker_pid(registry, "spinner")
        await registry.set_enabled("inline_spinner", False)
        [result], lags = await fire_with_heartbeat(registry, seconds=1000)
        assert result.status == "timeout", result
        # A loaded machine delays beats a little; a blocked loop would delay one by seconds.
        assert p99(lags) < 0.25, sorted(lags)[-5:]

        [again] = await registry.fire("post_plan", seconds=0)
        assert again.status == "success", again
        assert again.value != first and not alive(first)
        info = plain(registry.metadata_for("spinner"))["isolation"]
        assert info["restarts"] == 1 and "timeout" in info["last_exit"]

        # The same handler inline holds the loop for as long as it spins.
        await registry.set_enabled("spinner", False)
        await registry.set_enabled("inline_spinner", True)
        [inline_result], inline_lags = await fire_with_heartbeat(registry, seconds=1.0)
        assert inline_result.status == "timeout"
        assert max(inline_lags) > 0.8


async def test_isolation_sync_sleep_is_cut_at_its_timeout_and_leaves_no_thread(
    registry_factory: Any,
) -> None:
    async with registry_factory(isolated("Sleeper", timeout_seconds=2)) as registry:
        threads = set(threading.enumerate())
        first = worker_pid(registry, "sleeper")
        started = time.monotonic()
        [result] = await registry.fire("post_plan", seconds=1000)
        assert result.status == "timeout", result
        assert time.monotonic() - started < 5
        [again] = await registry.fire("post_plan", seconds=0)
        assert again.status == "success" and again.value != first
        assert not alive(first)
        # The only new thread reads the new worker's pipe; nothing runs the handler here.
        new = [t.name for t in threading.enumerate() if t not in threads and t.is_alive()]
        assert new == [f"worker-{again.value}"]


async def test_isolation_calls_in_flight_on_a_killed_worker_end_as_timeout(
    registry_factory: Any,
) -> None:
    async with registry_factory(isolated("Sleeper")) as registry:
        results: list[Any] = []

        async def call() -> None:
            results.extend(await registry.fire("post_plan", seconds=1000))

        async with anyio.create_task_group() as group:
            group.start_soon(call)
            group.start_soon(call)
        assert [r.status for r in results] == ["timeout", "timeout"], results
        assert plain(registry.metadata_for("sleeper"))["isolation"]["restarts"] <= 1


async def test_isolation_abort_in_a_handler_restarts_the_worker_and_records_why(
    registry_factory: Any,
) -> None:
    entries = isolated("Aborter", timeout_seconds=5), isolated("Where")
    async with registry_factory(*entries) as registry:
        first = worker_pid(registry, "aborter")
        results = {r.plugin: r for r in await registry.fire("post_plan", abort=True)}
        assert results["aborter"].status == "error"
        assert "SIGABRT" in (results["aborter"].error or "")
        assert results["where"].status == "success"

        [again, _] = await registry.fire("post_plan", abort=False)
        assert again.status == "success" and again.value not in (first, os.getpid())
        meta = plain(registry.metadata_for("aborter"))
        assert meta["isolation"]["restarts"] == 1
        assert "SIGABRT" in meta["isolation"]["last_exit"]
        assert any(e["stage"] == "worker" and "SIGABRT" in e["message"] for e in meta["errors"])


async def test_isolation_memory_hog_is_stopped_at_its_limit(registry_factory: Any) -> None:
    hog = isolated("Hog", limits={"memory_mb": 256}, timeout_seconds=10)
    async with registry_factory(hog) as registry:
        [result] = await registry.fire("post_plan", megabytes=1024)
        assert result.status == "error", result
        assert "memory limit of 256 MB" in (result.error or "")
        meta = plain(registry.metadata_for("hog"))
        assert "memory limit of 256 MB" in meta["isolation"]["last_exit"]
        assert meta["isolation"]["memory_mb"] == 256
        [small] = await registry.fire("post_plan", megabytes=10)
        assert small.status == "success" and small.value == 10


async def test_isolation_cpu_limit_per_call_ends_the_worker(registry_factory: Any) -> None:
    async with registry_factory(isolated("Burner", limits={"cpu_seconds": 0.3})) as registry:
        [result] = await registry.fire("post_plan", seconds=20)
        assert result.status == "error", result
        assert "CPU limit of 0.3 s per call" in (result.error or "")
        [short] = await registry.fire("post_plan", seconds=0.01)
        assert short.status == "success"


async def test_isolation_worker_sees_only_its_own_secrets_and_a_scrubbed_environment(
    registry_factory: Any,
) -> None:
    other = isolated("Where", name="other") + "  config:\n    secrets:\n      WHERE_TOKEN: x\n"
    async with registry_factory(isolated("Where"), other) as registry:
        results = {r.plugin: r.value for r in await registry.fire("inspect")}
        environ = results["where"]["environ"]
        assert results["where"]["secret"] == sha256(b"where-secret-value").hexdigest()
        assert results["other"]["secret"] == sha256(b"x").hexdigest()
        assert set(environ) <= {*ENV_ALLOWLIST, "MALLOC_ARENA_MAX"}
        dumped = repr(results["where"]["environ"]) + repr(results["other"]["environ"])
        for canary in ("service-api-key-canary", "other-plugin-secret-canary", "where-secret"):
            assert canary not in dumped


def test_isolation_environment_is_an_allowlist() -> None:
    env = worker_environment({"PATH": "/bin", "API_KEY": "k", "JIRA_API_TOKEN": "t", "HOME": "/h"})
    assert env == {"PATH": "/bin", "HOME": "/h", "MALLOC_ARENA_MAX": "2"}


async def test_isolation_unencodable_payload_or_result_is_an_error_not_a_crash(
    registry_factory: Any,
) -> None:
    async with registry_factory(isolated("Where"), isolated("Unsendable")) as registry:
        results = {r.plugin: r for r in await registry.fire("post_plan", thing=object())}
        assert results["where"].status == "error"
        assert "NotEncodableError" in (results["where"].error or "")
        assert "payload cannot be sent" in (results["where"].error or "")
        results = {r.plugin: r for r in await registry.fire("post_plan")}
        assert results["where"].status == "success"
        assert results["unsendable"].status == "error"
        assert "cannot be sent" in (results["unsendable"].error or "")
        assert plain(registry.metadata_for("unsendable"))["isolation"]["restarts"] == 0


async def test_isolation_remote_errors_read_as_they_would_inline(registry_factory: Any) -> None:
    failing = isolated("Failing").replace(MODULE, "tests.fixtures.plugins")
    async with registry_factory(failing) as registry:
        [result] = await registry.fire("post_plan")
        assert (result.status, result.error) == ("error", "RuntimeError: handler exploded")


async def test_isolation_emit_calls_back_into_the_registry(registry_factory: Any) -> None:
    listener = isolated("Listener").replace("  isolation: process\n", "")
    async with registry_factory(isolated("Relay"), listener) as registry:
        [result] = await registry.fire("post_plan", plan=3)
        assert result.status == "success", result
        assert result.value == [["listener", "success", {"heard": {"plan": 3}}]]


async def test_isolation_stopping_the_registry_ends_every_worker(registry_factory: Any) -> None:
    async with registry_factory(isolated("Sleeper"), isolated("Where")) as registry:
        pids = [worker_pid(registry, "sleeper"), worker_pid(registry, "where")]
        assert all(alive(pid) for pid in pids)
    assert not [pid for pid in pids if alive(pid)]


async def test_isolation_disable_and_reload_replace_the_worker(registry_factory: Any) -> None:
    async with registry_factory(isolated("Where")) as registry:
        first = worker_pid(registry, "where")
        meta = plain(await registry.reload_plugin("where"))
        assert meta["isolation"]["pid"] not in (None, first)
        assert not alive(first)
        second = meta["isolation"]["pid"]
        await registry.set_enabled("where", False)
        assert plain(registry.metadata_for("where"))["isolation"]["state"] == "stopped"
        assert not alive(second)
