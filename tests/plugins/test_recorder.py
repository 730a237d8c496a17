"""The flight recorder in the registry: which calls are kept, how, and replaying them."""

from __future__ import annotations

import json
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from msgspec import to_builtins as plain

from agent_pm.errors import ReplayError, ReplayRateError
from agent_pm.plugins import PluginRegistry
from agent_pm.plugins.context import request_id
from agent_pm.plugins.failures import FailureFilter
from agent_pm.plugins.recorder import STORE_FILE, module_version, redact_deep
from agent_pm.plugins.telemetry import HookSample
from agent_pm.settings import Settings
from tests.fixtures.recording import (  # noqa: F401 (a fixture)
    BAD_TOKEN,
    GOOD_TOKEN,
    Bystander,
    Exporter,
    fresh_deliveries,
)

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("fresh_deliveries")]
EXPORTER = "tests.fixtures.recording:Exporter"


def exporter_entry(
    token: str = BAD_TOKEN, record: bool | None = True, name: str = "exporter"
) -> str:
    entry = {
        "name": name,
        "module": EXPORTER,
        "enabled": True,
        "config": {"secrets": {"EXPORT_TOKEN": token}},
    }
    if record is not None:
        entry["record_failures"] = record
    return "- " + json.dumps(entry) + "\n"


BYSTANDER = (
    '- {"name": "bystander", "module": "tests.fixtures.recording:Bystander", "enabled": true}\n'
)


def ticket(number: int) -> dict[str, Any]:
    """A payload that quotes the token deep inside, as a careless caller might."""
    return {
        "ticket": {"key": f"OPS-{number}", "auth": {"header": f"Bearer {BAD_TOKEN}"}},
        "notes": ["sent with", BAD_TOKEN],
    }


async def stored(registry: PluginRegistry, plugin: str = "exporter") -> list[Any]:
    await registry.failures.flush()
    return registry.failures.store.find(FailureFilter(plugin))


async def test_failures_are_kept_redacted_with_their_context(
    registry_factory: Callable[..., Any],
) -> None:
    async with registry_factory(exporter_entry(), BYSTANDER) as registry:
        token = request_id.set("req-42")
        try:
            await registry.fire("post_plan", **ticket(1))
        finally:
            request_id.reset(token)
        await registry.fire("pre_plan", **ticket(2))
        failures = await stored(registry)
        assert [(f.hook, f.status) for f in failures] == [
            ("pre_plan", "error"),
            ("post_plan", "error"),
        ]
        newest, oldest = failures
        assert oldest.request_id == "req-42" and newest.request_id is None
        assert oldest.error == "PermissionError: export rejected token ***"
        assert oldest.module_version == module_version(Exporter)
        assert oldest.module_version is not None and oldest.module_version.startswith("sha256:")
        assert oldest.revision == registry.revision
        assert oldest.state == "pending" and oldest.attempts == 0
        full = registry.failures.store.get("exporter", oldest.id)
        assert full.payload == {
            "ticket": {"key": "OPS-1", "auth": {"header": "Bearer ***"}},
            "notes": ["sent with", "***"],
        }
        raw = (registry.settings.data_dir / STORE_FILE).read_bytes()
        assert BAD_TOKEN.encode() not in raw
        assert registry.failures.store.find(FailureFilter("bystander")) == []


async def test_store_is_sqlite_in_wal_mode(registry_factory: Callable[..., Any]) -> None:
    import sqlite3

    async with registry_factory(exporter_entry()) as registry:
        await registry.fire("post_plan", **ticket(1))
        await stored(registry)
        path = registry.settings.data_dir / STORE_FILE
        with closing(sqlite3.connect(path)) as db:
            mode = db.execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"


async def test_timeouts_are_kept(registry_factory: Callable[..., Any]) -> None:
    hanging = (
        '- {"name": "hanging", "module": "tests.fixtures.plugins:Hanging", "enabled": true,'
        ' "record_failures": true}\n'
    )
    async with registry_factory(hanging) as registry:
        await registry.fire("post_plan", n=1)
        (failure,) = await stored(registry, "hanging")
    assert failure.status == "timeout" and failure.error == "timed out after 0.2 s"


async def test_nothing_is_recorded_unless_asked(
    registry_factory: Callable[..., Any], settings: Settings
) -> None:
    async with registry_factory(exporter_entry(record=None)) as registry:
        assert registry.failures.recording == {}
        await registry.fire("post_plan", **ticket(1))
        await registry.failures.flush()
    assert not (settings.data_dir / STORE_FILE).exists()


async def test_global_default_applies_to_entries_without_the_field(
    registry_factory: Callable[..., Any], tmp_path: Path
) -> None:
    on = Settings.from_env({"DATA_DIR": str(tmp_path / "data"), "RECORD_FAILURES": "true"})
    entries = exporter_entry(record=None), exporter_entry(record=False, name="quiet")
    async with registry_factory(*entries, settings_=on) as registry:
        assert set(registry.failures.recording) == {"exporter"}
        await registry.fire("post_plan", **ticket(1))
        assert len(await stored(registry)) == 1
        assert await stored(registry, "quiet") == []


async def test_record_failures_must_be_a_boolean(registry_factory: Callable[..., Any]) -> None:
    broken = exporter_entry().replace("true}", '"sometimes"}')
    async with registry_factory(broken) as registry:
        (plugin,) = plain(registry.list_metadata())
    assert plugin["state"] == "invalid"
    assert "record_failures" in plugin["error"]


async def test_broken_config_then_fix_then_replay_all_succeeds_once(
    registry_factory: Callable[..., Any],
) -> None:
    async with registry_factory(exporter_entry(), BYSTANDER) as registry:
        for number in range(3):
            await registry.fire("post_plan", **ticket(number))
        await registry.fire("pre_plan", **ticket(3))
        failures = await stored(registry)
        assert len(failures) == 4 and len(Bystander.calls) == 3
        plain(await registry.update_config("exporter", {"secrets": {"EXPORT_TOKEN": GOOD_TOKEN}}))

        dry = await registry.replays.replay_matching(
            FailureFilter("exporter"), limit=100, dry_run=True
        )
        assert (dry.matched, dry.outcomes) == (4, [])
        assert Exporter.delivered == {}

        report = await registry.replays.replay_matching(FailureFilter("exporter"), limit=100)
        assert (report.matched, report.succeeded, report.failed) == (4, 4, 0)
        assert [o.failure for o in report.outcomes] == sorted(f.id for f in failures)
        delivered = Exporter.delivered["exporter"]
        assert sorted(replay for replay, _ in delivered) == sorted(f.id for f in failures)
        assert delivered[0][1]["ticket"]["key"] == "OPS-0"
        assert len(Bystander.calls) == 3  # replays reach the failed plugin only

        again = await registry.replays.replay_matching(FailureFilter("exporter"), limit=100)
        assert (again.matched, again.outcomes) == (0, [])
        assert len(Exporter.delivered["exporter"]) == 4
        after = registry.failures.store.find(FailureFilter("exporter"))
        assert {(f.state, f.attempts, f.last_replay_status) for f in after} == {
            ("replayed", 1, "success")
        }
        history = registry.history("exporter", "post_plan")["post_plan"]
        assert [s.status for s in history] == ["error"] * 3 + ["success"] * 3


async def test_failed_replay_stays_pending_and_is_not_recorded_again(
    registry_factory: Callable[..., Any],
) -> None:
    async with registry_factory(exporter_entry()) as registry:
        await registry.fire("post_plan", **ticket(1))
        (failure,) = await stored(registry)
        outcome = await registry.replays.replay("exporter", failure.id)
        assert outcome.result is not None and outcome.result.status == "error"
        (after,) = await stored(registry)
    assert (after.id, after.state, after.attempts) == (failure.id, "pending", 1)
    assert after.last_replay_error == "PermissionError: export rejected token ***"


async def test_replay_one_refuses_a_second_delivery_unless_forced(
    registry_factory: Callable[..., Any],
) -> None:
    async with registry_factory(exporter_entry()) as registry:
        await registry.fire("pre_plan", **ticket(1))
        (failure,) = await stored(registry)
        plain(await registry.update_config("exporter", {"secrets": {"EXPORT_TOKEN": GOOD_TOKEN}}))
        first = await registry.replays.replay("exporter", failure.id)
        assert first.succeeded
        with pytest.raises(ReplayError, match="replayed already"):
            await registry.replays.replay("exporter", failure.id)
        forced = await registry.replays.replay("exporter", failure.id, force=True)
    assert forced.succeeded
    # The sync handler ran in a worker thread and still saw which failure it replayed.
    assert [replay for replay, _ in Exporter.delivered["exporter"]] == [failure.id] * 2


async def test_replay_needs_an_active_plugin(registry_factory: Callable[..., Any]) -> None:
    async with registry_factory(exporter_entry()) as registry:
        await registry.fire("post_plan", **ticket(1))
        (failure,) = await stored(registry)
        plain(await registry.set_enabled("exporter", False))
        with pytest.raises(ReplayError, match="is not active"):
            await registry.replays.replay("exporter", failure.id)
        report = await registry.replays.replay_matching(FailureFilter("exporter"), limit=10)
    assert report.outcomes[0].refused == "plugin 'exporter' is not active"
    assert (report.succeeded, report.failed) == (0, 1)


async def test_unencodable_payload_values_are_kept_as_text(
    registry_factory: Callable[..., Any],
) -> None:
    class Opaque:
        def __repr__(self) -> str:
            return f"<Opaque {BAD_TOKEN}>"

    async with registry_factory(exporter_entry()) as registry:
        await registry.fire("post_plan", thing=Opaque())
        (failure,) = await stored(registry)
        full = registry.failures.store.get("exporter", failure.id)
    assert full.payload == {"thing": "<Opaque ***>"}
    assert failure.payload_note == "values JSON cannot carry were recorded as their repr (Opaque)"


async def test_oversized_payload_keeps_the_failure_but_not_the_payload(
    registry_factory: Callable[..., Any], tmp_path: Path
) -> None:
    small = Settings.from_env({"DATA_DIR": str(tmp_path / "d"), "FAILURES_MAX_BYTES": "80000"})
    async with registry_factory(exporter_entry(), settings_=small) as registry:
        await registry.fire("post_plan", blob="x" * 20_000)
        (failure,) = await stored(registry)
        assert not failure.payload_stored
        assert failure.payload_note == "payload of 20011 bytes is over the 10000-byte limit"
        with pytest.raises(ReplayError, match="kept no payload"):
            await registry.replays.replay("exporter", failure.id)


async def test_a_flood_overflows_the_queue_without_blocking(
    registry_factory: Callable[..., Any],
) -> None:
    async with registry_factory(exporter_entry()) as registry:
        (result,) = await registry.fire("post_plan", n=0)
        await registry.failures.flush()
        # No await in between: the writer cannot drain, so the queue's bound is what holds.
        for _ in range(1_500):
            registry.failures.note("post_plan", {"n": 1}, [result], registry.revision)
        assert registry.failures.overflowed == 500
        await registry.failures.flush()
        assert registry.failures.store.stats().count == 1_001


async def test_store_stays_within_bounds_under_a_flood(
    registry_factory: Callable[..., Any], tmp_path: Path
) -> None:
    bounded = Settings.from_env(
        {
            "DATA_DIR": str(tmp_path / "d"),
            "FAILURES_MAX_COUNT": "40",
            "FAILURES_MAX_BYTES": "30000",
        }
    )
    # Quarantine off: the flood must reach the handler on every call.
    entry = exporter_entry().replace('"enabled": true', '"enabled": true, "quarantine": false')
    async with registry_factory(entry, settings_=bounded) as registry:
        for number in range(300):
            await registry.fire("post_plan", number=number, pad="p" * (number % 7) * 50)
        await registry.failures.flush()
        stats = registry.failures.store.stats()
        kept = registry.failures.store.find(FailureFilter("exporter"))
    assert stats.count == len(kept) <= 40 and stats.bytes <= 30_000
    assert stats.evicted + stats.count + registry.failures.overflowed == 300
    newest = registry_payload_numbers(registry, kept)
    assert newest == list(range(299, 299 - len(kept), -1))  # the oldest went first


def registry_payload_numbers(registry: PluginRegistry, kept: list[Any]) -> list[int]:
    payloads = registry.failures.store.payloads("exporter", [f.id for f in kept])
    return [payloads[f.id]["number"] for f in kept]  # type: ignore[index]


def test_redact_deep_masks_keys_values_and_numbers() -> None:
    value = {"a": [{"b": "x SECRET y"}, 12345678, "12345678"], "SECRET": True, "n": 3}
    assert redact_deep(value, ("SECRET", "12345678")) == {
        "a": [{"b": "x *** y"}, "***", "***"],
        "***": True,
        "n": 3,
    }


async def test_each_replay_publishes_its_own_sample(registry_factory: Callable[..., Any]) -> None:
    async with registry_factory(exporter_entry(), BYSTANDER) as registry:
        await registry.fire("post_plan", **ticket(1))
        (failure,) = await stored(registry)
        plain(await registry.update_config("exporter", {"secrets": {"EXPORT_TOKEN": GOOD_TOKEN}}))
        with registry.bus.subscribe(plugins=["exporter", "bystander"]) as subscription:
            outcome = await registry.replays.replay("exporter", failure.id)
            messages = subscription.drain()
    samples = [m for m in messages if isinstance(m, HookSample)]
    assert [(s.plugin, s.hook, s.status) for s in samples] == [("exporter", "post_plan", "success")]
    assert outcome.result is not None and outcome.result.duration_ms == samples[0].duration_ms


async def test_bulk_replays_per_minute_are_bounded_per_plugin(
    registry_factory: Callable[..., Any], tmp_path: Path
) -> None:
    strict = Settings.from_env({"DATA_DIR": str(tmp_path / "d"), "REPLAY_BULK_PER_MINUTE": "2"})
    entries = exporter_entry(), exporter_entry(name="other")
    async with registry_factory(*entries, settings_=strict) as registry:
        for _ in range(2):
            await registry.replays.replay_matching(FailureFilter("exporter"), limit=10)
        with pytest.raises(ReplayRateError) as refused:
            await registry.replays.replay_matching(FailureFilter("exporter"), limit=10)
        assert 0 < refused.value.retry_after <= 60
        await registry.replays.replay_matching(FailureFilter("other"), limit=10)


FLAKY_SOURCE = """
from agent_pm.plugins import PluginBase


class Flaky(PluginBase):
    hooks = ("post_plan",)

    async def post_plan(self, **payload):
        raise RuntimeError("version one is broken")
"""


async def test_replay_runs_the_reloaded_code_and_failures_name_the_old_one(
    registry_factory: Callable[..., Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os
    import sys
    import uuid

    module = f"flaky_{uuid.uuid4().hex[:12]}"
    source = tmp_path / "site" / f"{module}.py"
    source.parent.mkdir()
    source.write_text(FLAKY_SOURCE)
    monkeypatch.syspath_prepend(str(source.parent))
    entry = f'- {{"name": "flaky", "module": "{module}:Flaky", "enabled": true,'
    entry += ' "record_failures": true}\n'
    try:
        async with registry_factory(entry) as registry:
            await registry.fire("post_plan", n=1)
            (failure,) = await stored(registry, "flaky")
            source.write_text(
                FLAKY_SOURCE.replace('raise RuntimeError("version one is broken")', 'return "v2"')
            )
            stat = source.stat()  # a later mtime, so the import reads the source, not bytecode
            os.utime(source, (stat.st_atime, stat.st_mtime + 2))
            plain(await registry.reload_plugin("flaky"))
            outcome = await registry.replays.replay("flaky", failure.id)
            current = module_version(type(registry.get("flaky")))
    finally:
        sys.modules.pop(module, None)
    assert outcome.result is not None and outcome.result.value == "v2"
    assert failure.module_version is not None and current is not None
    assert failure.module_version != current
