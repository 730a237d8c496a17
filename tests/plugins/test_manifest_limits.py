"""Write only what loads: every change is checked as ``Manifest.load`` reads it, before anything
runs or is written; and the manifest file itself must be a regular file, read with a bound."""

from __future__ import annotations

import os
import string
from pathlib import Path
from typing import Any

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent_pm.errors import ConfigValidationError, ManifestError, UnloadableChangeError
from agent_pm.plugins import PluginRegistry
from agent_pm.plugins.manifest import MAX_MANIFEST_BYTES, Manifest
from agent_pm.settings import Settings

ECHO = "- name: echo\n  module: tests.fixtures.plugins:Echo\n  enabled: true\n"


def _nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {"leaf": 1}
    for _ in range(depth):
        value = {"x": value}
    return value


UNLOADABLE = {
    "deep nesting": _nested(40),
    "node bomb": {"items": list(range(60_000)), "more": list(range(60_000))},
    "oversize": {"blob": "x" * (MAX_MANIFEST_BYTES + 10)},
    "lone surrogate": {"text": "caf\ud800e"},
    "non-UTF-8 byte from argv": {"text": b"\xff".decode(errors="surrogateescape")},
    "surrogate in a key": {"k\udcff": 1},
}


@pytest.fixture
def manifest(write_manifest) -> Path:
    return write_manifest(ECHO)


@pytest.fixture
def allowing(tmp_path: Path) -> Settings:
    return Settings.from_env(
        {"PLUGIN_CONFIG_PATH": str(tmp_path / "plugins.yaml"), "PLUGIN_INSTALL_ALLOW": "tests"}
    )


@pytest.mark.parametrize("case", UNLOADABLE)
def test_manifest_set_refuses_what_load_would_refuse(manifest: Path, case: str) -> None:
    candidate = Manifest.load(manifest).copy()
    with pytest.raises(UnloadableChangeError, match="cannot load"):
        candidate.set("echo", config=UNLOADABLE[case])


@pytest.mark.anyio
@pytest.mark.parametrize("case", UNLOADABLE)
async def test_manifest_unloadable_admin_writes_are_refused_before_anything_runs(
    manifest: Path, allowing: Settings, case: str
) -> None:
    before = manifest.read_bytes()
    async with PluginRegistry(manifest, allowing) as registry:
        revision, running = registry.revision, registry.get("echo")
        with pytest.raises(ConfigValidationError, match="cannot load"):
            await registry.update_config("echo", UNLOADABLE[case])
        with pytest.raises(ConfigValidationError, match="cannot load"):
            await registry.install(
                "tests.fixtures.plugins:Echo", name="more", enabled=True, config=UNLOADABLE[case]
            )
        assert registry.revision == revision and registry.get("echo") is running
        assert registry.names() == ["echo"]
        await registry.reload()  # what is on disk still loads
    assert manifest.read_bytes() == before


@pytest.mark.anyio
async def test_manifest_unencodable_description_is_refused_at_install(
    manifest: Path, allowing: Settings
) -> None:
    before = manifest.read_bytes()
    async with PluginRegistry(manifest, allowing) as registry:
        with pytest.raises(ConfigValidationError, match="not valid Unicode"):
            await registry.install("tests.fixtures.plugins:Echo", name="more", description="\udcff")
    assert manifest.read_bytes() == before


def test_manifest_escaped_lone_surrogate_on_disk_is_refused_at_load(write_manifest) -> None:
    path = write_manifest(ECHO + '  description: "\\ud800"\n')
    with pytest.raises(ManifestError, match="not valid Unicode"):
        Manifest.load(path)


@pytest.mark.anyio
async def test_manifest_get_plugins_never_500s_on_an_unencodable_manifest(
    write_manifest,
) -> None:
    import httpx

    from agent_pm.api._app import create_app

    path = write_manifest(ECHO + '  config: {"\\udcff": "\\ud800"}\n')
    keyed = Settings.from_env(
        {"PLUGIN_CONFIG_PATH": str(path), "ADMIN_API_KEY": "a" * 32, "API_KEY": "r" * 32}
    )
    async with PluginRegistry(path, keyed) as registry:
        app = create_app(keyed, registry=registry, watch=False)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            response = await client.get("/plugins", headers={"X-API-Key": "r" * 32})
    assert response.status_code == 200
    assert "not valid Unicode" in response.json()["config_errors"][0]


# -- a property: whatever is accepted loads back equal ------------------------------------------

_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=30)
)
_keys = st.text(alphabet=string.printable + "éß✓\x00\ud800", max_size=12)
_values = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_keys, inner, max_size=4),
    max_leaves=30,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(config=st.dictionaries(_keys, _values, max_size=5), description=st.text(max_size=40))
def test_manifest_whatever_is_accepted_loads_back_equal(
    tmp_path_factory: pytest.TempPathFactory, config: dict[str, Any], description: str
) -> None:
    path = tmp_path_factory.mktemp("m") / "plugins.yaml"
    path.write_text(ECHO)
    candidate = Manifest.load(path).copy()
    try:
        item = candidate.set("echo", config=config, description=description)
    except UnloadableChangeError:
        return  # refused, and nothing written: the other half of the property
    candidate.save()
    loaded = Manifest.load(path).item("echo")
    assert loaded.entry == item.entry
    assert loaded.entry is not None and loaded.entry.config == config
    assert loaded.entry.description == description


# -- the file itself -------------------------------------------------------------------------


def test_manifest_fifo_is_refused_without_hanging(tmp_path: Path) -> None:
    fifo = tmp_path / "plugins.yaml"
    os.mkfifo(fifo)
    with pytest.raises(ManifestError, match="is a FIFO; it must be a regular file"):
        Manifest.load(fifo)


def test_manifest_link_to_dev_zero_is_refused(tmp_path: Path) -> None:
    link = tmp_path / "plugins.yaml"
    link.symlink_to("/dev/zero")
    with pytest.raises(ManifestError, match="is a character device"):
        Manifest.load(link)


def test_manifest_directory_is_refused(tmp_path: Path) -> None:
    (tmp_path / "plugins.yaml").mkdir()
    with pytest.raises(ManifestError, match="is a directory"):
        Manifest.load(tmp_path / "plugins.yaml")


def test_manifest_growing_file_is_read_only_up_to_the_bound(tmp_path: Path) -> None:
    path = tmp_path / "plugins.yaml"
    path.write_bytes(b"#" * (MAX_MANIFEST_BYTES * 3))
    with pytest.raises(ManifestError, match="larger than"):
        Manifest.load(path)


@pytest.mark.anyio
async def test_manifest_registry_on_a_fifo_reports_and_the_watcher_does_not_block(
    tmp_path: Path,
) -> None:
    from agent_pm.plugins.watcher import file_digest

    fifo = tmp_path / "plugins.yaml"
    os.mkfifo(fifo)
    settings_ = Settings.from_env({"PLUGIN_CONFIG_PATH": str(fifo)})
    with anyio.fail_after(30):
        async with PluginRegistry(fifo, settings_) as registry:
            assert "is a FIFO" in registry.config_errors[0]
        digest = await anyio.to_thread.run_sync(file_digest, fifo)
        assert digest is not None and digest.startswith("refused:")


@pytest.mark.anyio
async def test_manifest_writes_go_through_a_symlink_which_stays_one(
    tmp_path: Path, allowing: Settings
) -> None:
    real = tmp_path / "config" / "real.yaml"
    real.parent.mkdir()
    real.write_text(ECHO)
    link = tmp_path / "plugins.yaml"
    link.symlink_to(real)
    async with PluginRegistry(link, allowing) as registry:
        await registry.set_enabled("echo", False)
        await registry.reload(only_if_changed=True)
        assert registry.config_errors == []
    assert link.is_symlink() and os.readlink(link) == str(real)
    assert "enabled: false" in real.read_text()
    assert sorted(p.name for p in real.parent.iterdir()) == ["real.yaml"]


def test_manifest_stale_temp_files_of_a_symlinked_manifest_are_removed(tmp_path: Path) -> None:
    real = tmp_path / "elsewhere" / "real.yaml"
    real.parent.mkdir()
    real.write_text(ECHO)
    (tmp_path / "plugins.yaml").symlink_to(real)
    stale = real.with_name(".real.yaml.0badcafe.tmp")
    stale.write_text("- partial")
    Manifest.load(tmp_path / "plugins.yaml")
    assert not stale.exists()
