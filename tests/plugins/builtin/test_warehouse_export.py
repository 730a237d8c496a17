from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import msgspec
import pytest

from agent_pm.plugins.builtin._jsonl import JsonlLog
from agent_pm.plugins.builtin.warehouse_export import WarehouseExportPlugin
from agent_pm.plugins.paths import claim

CHILD = """
import sys
import anyio
from agent_pm.plugins.builtin.warehouse_export import WarehouseExportPlugin

async def main() -> None:
    config = WarehouseExportPlugin.Config(path=sys.argv[1], rotate_bytes=300_000)
    plugin = WarehouseExportPlugin(config)
    await plugin.on_enable()
    rounds = 0
    while True:
        async with anyio.create_task_group() as tg:
            for number in range(16):
                event = {"n": number, "pad": "x" * 8000}
                tg.start_soon(lambda event=event: plugin.on_feedback(feedback=event))
        rounds += 1
        if rounds == 5:
            print("ready", flush=True)

anyio.run(main)
"""


def _plugin(path: Path, rotate_bytes: int = 10_000_000) -> WarehouseExportPlugin:
    plugin = WarehouseExportPlugin(WarehouseExportPlugin.Config(str(path), rotate_bytes))
    plugin.bind("warehouse_export", {}, [], None)
    return plugin


def _files(path: Path) -> list[Path]:
    return sorted(path.parent.glob(f"{path.name}*"))


def _write(file: Path, data: bytes) -> None:
    """A file the plugin created before, as a crash mid-write left it."""
    file.parent.mkdir(parents=True)
    claim(file, "warehouse_export")
    file.write_bytes(data)


def _first_line_bytes(file: Path) -> int:
    return len(file.read_bytes().split(b"\n")[0]) + 1


def _lines(file: Path) -> list[dict[str, Any]]:
    data = file.read_bytes()
    assert data == b"" or data.endswith(b"\n"), f"{file.name} ends in a partial line"
    return [msgspec.json.decode(line) for line in data.splitlines()]


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "warehouse" / "events.jsonl"


@pytest.fixture
async def plugin(path: Path) -> AsyncIterator[WarehouseExportPlugin]:
    plugin = _plugin(path)
    await plugin.on_enable()
    yield plugin
    await plugin.on_disable()


@pytest.mark.anyio
async def test_each_hook_appends_one_json_line(plugin: WarehouseExportPlugin, path: Path) -> None:
    exported = await plugin.post_ticket_export(ticket={"key": "AGENTPM-1"})
    await plugin.post_alignment_event(event={"type": "sync", "when": path})
    await plugin.on_feedback(feedback={"title": "ok", "rating": 5})

    lines = _lines(path)
    assert [line["hook"] for line in lines] == [
        "post_ticket_export",
        "post_alignment_event",
        "on_feedback",
    ]
    assert lines[0]["payload"] == {"ticket": {"key": "AGENTPM-1"}}
    assert lines[1]["payload"]["event"]["when"] == str(path)
    assert lines[0]["timestamp"].endswith("Z")
    assert exported == {"written": str(path), "bytes": _first_line_bytes(path)}


@pytest.mark.anyio
async def test_concurrent_events_share_a_write_and_are_all_whole(
    plugin: WarehouseExportPlugin, path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    syncs: list[int] = []
    fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (syncs.append(fd), fsync(fd)))
    async with anyio.create_task_group() as tg:
        for number in range(200):
            tg.start_soon(lambda n=number: plugin.on_feedback(feedback={"n": n}))

    numbers = sorted(line["payload"]["feedback"]["n"] for line in _lines(path))
    assert numbers == list(range(200))
    # Group commit: the first caller's write, then one more for everyone who queued behind it.
    assert 1 <= len(syncs) <= 2


@pytest.mark.anyio
async def test_rotates_before_passing_rotate_bytes(path: Path) -> None:
    plugin = _plugin(path, rotate_bytes=1000)
    await plugin.on_enable()
    for number in range(30):
        await plugin.on_feedback(feedback={"n": number, "pad": "x" * 100})
    await plugin.on_disable()

    files = _files(path)
    assert files[0] == path and len(files) > 2
    assert all(file.stat().st_size <= 1000 for file in files)
    rotated = sorted(files[1:], key=lambda file: int(file.suffix[1:]))
    ordered = [
        line["payload"]["feedback"]["n"] for file in [*rotated, path] for line in _lines(file)
    ]
    assert ordered == list(range(30))


@pytest.mark.anyio
async def test_rotation_continues_numbering_after_restart(path: Path) -> None:
    for _ in range(2):
        plugin = _plugin(path, rotate_bytes=200)
        await plugin.on_enable()
        for number in range(3):
            await plugin.on_feedback(feedback={"n": number, "pad": "x" * 100})
        await plugin.on_disable()

    suffixes = sorted(int(file.suffix[1:]) for file in _files(path) if file != path)
    assert suffixes == list(range(1, 6))


@pytest.mark.anyio
async def test_line_longer_than_rotate_bytes_is_kept_whole(path: Path) -> None:
    plugin = _plugin(path, rotate_bytes=50)
    await plugin.on_enable()
    await plugin.on_feedback(feedback={"pad": "x" * 200})
    await plugin.on_feedback(feedback={"pad": "y"})
    await plugin.on_disable()

    assert [len(_lines(file)) for file in _files(path)] == [1, 1]


@pytest.mark.anyio
async def test_enable_cuts_a_partial_last_line(
    path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    torn = b'{"timestamp": "2026-'
    _write(path, b'{"hook": "on_feedback"}\n' + torn)
    plugin = _plugin(path)
    await plugin.on_enable()
    await plugin.on_feedback(feedback={"after": "crash"})
    await plugin.on_disable()

    lines = _lines(path)
    assert lines[0] == {"hook": "on_feedback"}
    assert lines[1]["payload"] == {"feedback": {"after": "crash"}}
    assert f"partial last line of {len(torn)} bytes" in caplog.text


@pytest.mark.anyio
async def test_enable_empties_a_file_without_any_newline(path: Path) -> None:
    _write(path, b"x" * 100_000)
    plugin = _plugin(path)
    await plugin.on_enable()
    await plugin.on_disable()

    assert _lines(path) == []


@pytest.mark.anyio
async def test_calls_before_enable_fail_clearly(path: Path) -> None:
    with pytest.raises(RuntimeError, match="not enabled"):
        await _plugin(path).on_feedback(feedback={})


@pytest.mark.anyio
async def test_write_failure_reaches_every_waiter(
    plugin: WarehouseExportPlugin, path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(fd: int) -> None:
        raise OSError("disk on fire")

    monkeypatch.setattr(os, "fsync", broken)
    with pytest.raises(OSError, match=r"appending to .*events\.jsonl failed"):
        await plugin.on_feedback(feedback={})
    monkeypatch.undo()


@pytest.fixture
def killed_writer(path: Path) -> Path:
    """``path`` after a child process appending to it in a loop was killed with SIGKILL."""
    path.parent.mkdir(parents=True)
    with subprocess.Popen(
        [sys.executable, "-c", CHILD, str(path)], stdout=subprocess.PIPE, text=True
    ) as child:
        assert child.stdout is not None
        try:
            assert child.stdout.readline() == "ready\n"
        finally:
            os.kill(child.pid, signal.SIGKILL)
            child.wait()
    return path


@pytest.mark.anyio
async def test_sigkill_mid_write_leaves_only_whole_lines(killed_writer: Path) -> None:
    plugin = _plugin(killed_writer, rotate_bytes=300_000)
    await plugin.on_enable()
    await plugin.on_feedback(feedback={"after": "kill"})
    await plugin.on_disable()

    files = _files(killed_writer)
    assert len(files) > 1
    assert sum(len(_lines(file)) for file in files) >= 5 * 16 + 1
    assert _lines(killed_writer)[-1]["payload"] == {"feedback": {"after": "kill"}}


@pytest.mark.anyio
async def test_log_refuses_appends_when_not_open(path: Path) -> None:
    events = JsonlLog(path, 1000, owner="warehouse_export")

    with pytest.raises(OSError, match="appending to") as caught:
        await events.append(b"{}\n")
    assert "is not open" in str(caught.value.__cause__)
