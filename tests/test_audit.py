"""The audit log file: numbered, whole, durable lines; rotation; torn tails; reads by page."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import pytest

from agent_pm.audit import FILE_NAME, AuditLog, AuditRecord

pytestmark = pytest.mark.anyio


def fields(action: str = "enable", **changes: Any) -> dict[str, Any]:
    return {
        "time": datetime.now(UTC),
        "actor": "ci-bot",
        "role": "admin",
        "source": "rest",
        "action": action,
        "plugin": "echo",
        "before": {"enabled": False},
        "after": {"enabled": True},
        "revision_before": 3,
        "revision_after": 4,
        "outcome": "ok",
        **changes,
    }


async def test_records_are_numbered_in_order_and_read_back(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit")
    written = [await log.append(fields(action=f"a{i}")) for i in range(5)]
    assert [r.id for r in written] == [1, 2, 3, 4, 5]
    assert await log.read() == written
    assert await log.read(limit=2) == written[-2:]
    assert await log.read(since=2, limit=2) == written[2:4]
    assert await log.read(since=5) == []
    assert await log.read(since=written[2].time) == written[3:]
    assert (tmp_path / "audit" / FILE_NAME).stat().st_mode & 0o777 == 0o600


async def test_an_empty_or_absent_log_reads_as_nothing(tmp_path: Path) -> None:
    assert await AuditLog(tmp_path / "nowhere").read() == []


async def test_numbering_goes_on_across_instances_and_rotation(tmp_path: Path) -> None:
    directory = tmp_path / "audit"
    log = AuditLog(directory, rotate_bytes=600)
    for i in range(6):
        await log.append(fields(action=f"a{i}"))
    rotated = sorted(p.name for p in directory.glob(f"{FILE_NAME}.*"))
    assert rotated, "nothing rotated"
    again = AuditLog(directory, rotate_bytes=600)
    record = await again.append(fields())
    assert record.id == 7
    everything = await again.read(limit=100)
    assert [r.id for r in everything] == list(range(1, 8))
    assert [r.id for r in await again.read(since=1, limit=3)] == [2, 3, 4]


async def test_a_torn_last_line_is_cut_before_the_next_append(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit")
    await log.append(fields())
    with (tmp_path / "audit" / FILE_NAME).open("ab") as file:
        file.write(b'{"id": 2, "time": "20')  # a writer killed mid-line
    assert [r.id for r in await log.read()] == [1]
    record = await log.append(fields())
    assert record.id == 2
    lines = (tmp_path / "audit" / FILE_NAME).read_bytes().splitlines()
    assert len(lines) == 2 and all(line.startswith(b'{"id":') for line in lines)


async def test_concurrent_writers_in_threads_never_share_an_id(tmp_path: Path) -> None:
    directory = tmp_path / "audit"

    def write_many() -> None:
        log = AuditLog(directory)  # each its own instance, as separate processes would be
        for _ in range(20):
            anyio.run(log.append, fields())

    threads = [threading.Thread(target=write_many) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    ids = [r.id for r in await AuditLog(directory).read(limit=1000)]
    assert sorted(ids) == ids == list(range(1, 81))


async def test_an_unwritable_directory_raises_oserror(tmp_path: Path) -> None:
    blocked = tmp_path / "audit"
    blocked.write_text("a file where the directory should be")
    with pytest.raises(OSError):
        await AuditLog(blocked).append(fields())


def test_records_carry_every_contract_field() -> None:
    names = set(AuditRecord.__struct_fields__)
    assert names >= {
        "time",
        "actor",
        "role",
        "source",
        "action",
        "plugin",
        "before",
        "after",
        "revision_before",
        "revision_after",
        "outcome",
        "request_id",
    }


async def test_reading_by_time_returns_the_records_after_it(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit")
    old = await log.append(fields(time=datetime.now(UTC) - timedelta(hours=1)))
    new = await log.append(fields())
    cutoff = datetime.now(UTC) - timedelta(minutes=1)
    assert await log.read(since=cutoff) == [new]
    assert old not in await log.read(since=cutoff)
