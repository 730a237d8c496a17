"""Confinement: every path in a plugin config resolves inside DATA_DIR, or is refused."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from msgspec import to_builtins as plain

from agent_pm.errors import ConfigValidationError
from agent_pm.plugins import PluginRegistry
from agent_pm.plugins.builtin.warehouse_export import WarehouseExportPlugin
from agent_pm.plugins.loader import validate_config
from agent_pm.plugins.paths import inside_data_dir
from agent_pm.settings import Settings

WAREHOUSE = "agent_pm.plugins.builtin.warehouse_export:WarehouseExportPlugin"


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    path = tmp_path / "data"
    path.mkdir()
    return path


@pytest.fixture
def confined(tmp_path: Path, data_dir: Path) -> Settings:
    return Settings.from_env(
        {"PLUGIN_CONFIG_PATH": str(tmp_path / "plugins.yaml"), "DATA_DIR": str(data_dir)}
    )


ESCAPES = [
    "../outside.jsonl",
    "exports/../../outside.jsonl",
    "/etc/passwd",
    "/tmp/outside.jsonl",
    "a/\0/b",
    "..",
    ".",
]


@pytest.mark.parametrize("raw", ESCAPES)
def test_paths_escaping_the_data_dir_are_refused(data_dir: Path, raw: str) -> None:
    with pytest.raises(ConfigValidationError) as refused:
        inside_data_dir(data_dir, raw, "$.path")
    assert refused.value.path == "$.path"


def test_paths_symlink_out_of_the_data_dir_is_refused(data_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "elsewhere").mkdir()
    (data_dir / "link").symlink_to(tmp_path / "elsewhere")
    (data_dir / "file_link").symlink_to(tmp_path / "elsewhere" / "target.jsonl")
    for raw in ("link/events.jsonl", "file_link"):
        with pytest.raises(ConfigValidationError, match="outside the data directory"):
            inside_data_dir(data_dir, raw)


def test_paths_symlink_staying_inside_is_resolved(data_dir: Path) -> None:
    (data_dir / "real").mkdir()
    (data_dir / "alias").symlink_to(data_dir / "real")
    resolved = inside_data_dir(data_dir, "alias/events.jsonl")
    assert resolved == data_dir.resolve() / "real" / "events.jsonl"


def test_paths_data_path_fields_are_resolved_in_the_validated_config(confined: Settings) -> None:
    config = validate_config(WarehouseExportPlugin, {"path": "exports/e.jsonl"}, confined)
    assert config.path == str(confined.data_dir.resolve() / "exports" / "e.jsonl")
    default = validate_config(WarehouseExportPlugin, {}, confined)
    assert Path(default.path).is_relative_to(confined.data_dir.resolve())


def test_paths_the_default_data_dir_is_data_under_the_working_directory() -> None:
    assert Settings.from_env({}).data_dir == Path("data")


@pytest.mark.anyio
@pytest.mark.parametrize("raw", ["../escape.jsonl", "/tmp/escape.jsonl", "link/escape.jsonl"])
async def test_paths_admin_write_outside_is_422_and_nothing_changes(
    confined: Settings, data_dir: Path, tmp_path: Path, raw: str
) -> None:
    (data_dir / "link").symlink_to(tmp_path)
    manifest = confined.plugin_config_path
    manifest.write_text(f"- name: warehouse\n  module: {WAREHOUSE}\n  enabled: true\n")
    before = manifest.read_bytes()
    async with PluginRegistry(manifest, confined) as registry:
        with pytest.raises(ConfigValidationError, match=r"\(at \$\.path\)"):
            await registry.update_config("warehouse", {"path": raw})
        with pytest.raises(ConfigValidationError):
            await registry.install(WAREHOUSE, name="second", config={"path": raw})
        await registry.fire("on_feedback", feedback={"n": 1})
        assert plain(registry.metadata_for("warehouse"))["config"] == {}
    assert manifest.read_bytes() == before
    assert not (tmp_path / "escape.jsonl").exists()
    assert (data_dir / "warehouse" / "events.jsonl").exists()


@pytest.mark.anyio
async def test_paths_manifest_entry_outside_is_invalid_at_load(
    confined: Settings, tmp_path: Path
) -> None:
    manifest = confined.plugin_config_path
    manifest.write_text(
        f"- name: warehouse\n  module: {WAREHOUSE}\n  enabled: true\n"
        "  config: {path: ../../etc/cron.d/evil}\n"
    )
    async with PluginRegistry(manifest, confined) as registry:
        meta = plain(registry.metadata_for("warehouse"))
    assert meta["state"] == "invalid" and "may not contain '..'" in meta["error"]


@pytest.mark.anyio
async def test_paths_a_plugin_never_cuts_or_rotates_a_file_it_did_not_create(
    confined: Settings, data_dir: Path
) -> None:
    """Pointed at the feedback database, the audit log or any other file in DATA_DIR, the
    warehouse refuses to start and the file keeps every byte."""
    foreign = data_dir / "audit.jsonl"
    foreign.write_bytes(b'{"a": 1}\n{"torn')  # a torn tail the writer would otherwise cut
    before = foreign.read_bytes()
    manifest = confined.plugin_config_path
    manifest.write_text(
        f"- name: warehouse\n  module: {WAREHOUSE}\n  enabled: true\n"
        "  config: {path: audit.jsonl, rotate_bytes: 1}\n"
    )
    async with PluginRegistry(manifest, confined) as registry:
        meta = plain(registry.metadata_for("warehouse"))
        assert meta["state"] == "failed" and "was not created by warehouse" in meta["error"]
        await registry.install(WAREHOUSE, name="other", config={"path": "mine.jsonl"})
        await registry.set_enabled("other", True)
        await registry.fire("on_feedback", feedback={"n": 1})
        await registry.fire("on_feedback", feedback={"n": 2})
        # The second writer may not take over the first one's file either.
        thief = plain(
            await registry.install(
                WAREHOUSE, name="thief", enabled=True, config={"path": "mine.jsonl"}
            )
        )
        assert thief["state"] == "disabled" and "belongs to another writer" in thief["error"]
    assert foreign.read_bytes() == before
    assert sorted(os.listdir(data_dir)) == [".mine.jsonl.owner", "audit.jsonl", "mine.jsonl"]


@pytest.mark.anyio
async def test_paths_a_symlink_planted_at_the_file_is_not_followed(
    confined: Settings, data_dir: Path, tmp_path: Path
) -> None:
    target = tmp_path / "victim"
    target.write_bytes(b"keep")
    (data_dir / "events.jsonl").symlink_to(target)
    plugin = WarehouseExportPlugin(WarehouseExportPlugin.Config(str(data_dir / "events.jsonl")))
    plugin.bind("warehouse_export", {}, [], None)
    with pytest.raises(PermissionError):
        await plugin.on_enable()
    assert target.read_bytes() == b"keep"


@pytest.mark.anyio
async def test_paths_feedback_collector_refuses_another_components_database(
    confined: Settings, data_dir: Path
) -> None:
    import sqlite3

    foreign = data_dir / "failures.sqlite3"
    sqlite3.connect(foreign).close()
    foreign.write_bytes(foreign.read_bytes() or b"SQLite format 3\0")
    before = foreign.read_bytes()
    manifest = confined.plugin_config_path
    manifest.write_text(
        "- name: feedback\n"
        "  module: agent_pm.plugins.builtin.feedback_collector:FeedbackCollectorPlugin\n"
        "  enabled: true\n  config: {database_path: failures.sqlite3}\n"
    )
    async with PluginRegistry(manifest, confined) as registry:
        meta = plain(registry.metadata_for("feedback"))
    assert meta["state"] == "failed" and "was not created by feedback" in meta["error"]
    assert foreign.read_bytes() == before
    assert sorted(os.listdir(data_dir)) == ["failures.sqlite3"]
