"""Audited administration: one record per admin operation, whatever its outcome."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest

from agent_pm.audit import Actor, AuditLog, AuditMessage
from agent_pm.audited import AuditedAdmin, diff
from agent_pm.errors import PluginExistsError, PluginNotFoundError
from agent_pm.plugins import PluginRegistry, context
from agent_pm.settings import Settings

pytestmark = pytest.mark.anyio

ACTOR = Actor("ci-bot", "admin", "rest")


def test_diff_keeps_only_changed_paths() -> None:
    before = {"enabled": False, "config": {"channel": "#a", "limits": {"n": 1}}, "state": "x"}
    after = {"enabled": True, "config": {"channel": "#a", "limits": {"n": 2}, "new": 1}}
    assert diff(before, after) == (
        {"enabled": False, "config.limits.n": 1, "state": "x"},
        {"enabled": True, "config.limits.n": 2, "config.new": 1},
    )
    assert diff({"config": {}}, {"config": {}}) == ({}, {})


@pytest.fixture
async def registry(registry_factory: Callable[..., Any], entry: Callable[..., str]) -> Any:
    async with registry_factory(
        entry("Echo"), entry("Configured", enabled=False, config={"channel": "#ops"})
    ) as registry:
        yield registry


@pytest.fixture
def log(tmp_path: Path) -> AuditLog:
    return AuditLog(tmp_path / "audit")


async def test_a_successful_change_records_what_changed_and_is_published(
    registry: PluginRegistry, log: AuditLog
) -> None:
    admin = AuditedAdmin(registry, log, ACTOR)
    with registry.bus.subscribe() as subscription:
        token = context.request_id.set("req-9")
        try:
            await admin.update_config("configured", {"channel": "#eng", "retries": 5})
        finally:
            context.request_id.reset(token)
        messages = [m for m in subscription.drain() if isinstance(m, AuditMessage)]
    [record] = await log.read()
    assert (record.actor, record.role, record.source) == ("ci-bot", "admin", "rest")
    assert (record.action, record.plugin, record.outcome) == ("update_config", "configured", "ok")
    assert record.before == {"config.channel": "#ops"}
    assert record.after == {"config.channel": "#eng", "config.retries": 5}
    assert record.revision_after == record.revision_before + 1
    assert record.request_id == "req-9"
    assert [m.record for m in messages] == [record]
    assert messages[0].topic == ("configured", None)


async def test_a_refused_change_is_recorded_as_an_error(
    registry: PluginRegistry, log: AuditLog
) -> None:
    admin = AuditedAdmin(registry, log, ACTOR)
    with pytest.raises(PluginNotFoundError):
        await admin.set_enabled("ghost", True)
    [record] = await log.read()
    assert (record.action, record.plugin, record.outcome) == ("enable", "ghost", "error")
    assert record.error == "no plugin named 'ghost'"
    assert record.revision_after == record.revision_before
    assert (record.before, record.after) == ({}, {})


async def test_install_names_the_plugin_and_a_failed_one_changes_nothing(
    registry: PluginRegistry, log: AuditLog, plugin_site: Path
) -> None:
    admin = AuditedAdmin(registry, log, ACTOR)
    await admin.install_entry_point("echo-ep", name="echo2")
    with pytest.raises(PluginExistsError):
        await admin.install_entry_point("echo-ep", name="echo")
    installed, refused = await log.read()
    assert (installed.plugin, installed.outcome, installed.before) == ("echo2", "ok", {})
    assert installed.after["module"] == "tests.fixtures.plugins:Echo"
    assert (refused.plugin, refused.outcome, refused.after) == ("echo", "error", {})


async def test_reload_all_records_every_plugin_it_changed(
    registry: PluginRegistry, log: AuditLog
) -> None:
    registry.manifest_path.write_text(
        "- name: echo\n  module: tests.fixtures.plugins:Echo\n  enabled: false\n"
    )
    await AuditedAdmin(registry, log, Actor("file", "admin", "watcher")).reload()
    [record] = await log.read()
    assert (record.action, record.plugin, record.source) == ("reload_all", None, "watcher")
    assert record.before["echo.enabled"] is True and record.after["echo.enabled"] is False
    assert "configured.module" in record.before and "configured.module" not in record.after


async def test_a_cancelled_operation_is_still_recorded(
    registry: PluginRegistry, log: AuditLog
) -> None:
    admin = AuditedAdmin(registry, log, ACTOR)
    started = anyio.Event()

    async def stuck(name: str, **options: Any) -> None:
        started.set()
        await anyio.sleep_forever()

    registry.remove = stuck  # type: ignore[method-assign]
    async with anyio.create_task_group() as group:
        group.start_soon(admin.remove, "echo")
        await started.wait()
        group.cancel_scope.cancel()
    [record] = await log.read()
    assert (record.action, record.outcome) == ("remove", "cancelled")


async def test_an_unexpected_exception_is_recorded_by_type_only(
    registry: PluginRegistry, log: AuditLog
) -> None:
    async def explode(name: str, **options: Any) -> None:
        raise RuntimeError("value=hunter2")

    registry.reload_plugin = explode  # type: ignore[method-assign]
    with pytest.raises(RuntimeError):
        await AuditedAdmin(registry, log, ACTOR).reload_plugin("echo")
    [record] = await log.read()
    assert (record.outcome, record.error) == ("error", "unexpected RuntimeError")


async def test_an_unwritable_log_never_fails_the_operation(
    registry: PluginRegistry, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocked = tmp_path / "blocked"
    blocked.write_text("not a directory")
    admin = AuditedAdmin(registry, AuditLog(blocked), ACTOR)
    metadata = await admin.set_enabled("configured", True)
    assert metadata.active is True
    assert "audit record of enable configured not written" in caplog.text


def test_settings_default_data_dir() -> None:
    assert Settings.from_env({}).data_dir == Path("data")
    assert Settings.from_env({"DATA_DIR": "/srv/pm"}).data_dir == Path("/srv/pm")
