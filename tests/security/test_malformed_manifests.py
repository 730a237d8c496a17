"""Malformed manifests: each is reported, none crashes the registry or executes anything.

Two kinds of damage: a file that cannot be a manifest at all (the registry starts with no
plugins and the reason in ``config_errors``; a reload raises and keeps what runs), and a bad
entry in an otherwise fine list (that entry is invalid with its error, the good one runs; a
reload that would bring it in is refused whole and keeps what runs).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from msgspec import to_builtins as plain

from agent_pm.api._app import create_app
from agent_pm.api._auth import ApiKeys
from agent_pm.errors import ManifestError
from agent_pm.plugins import PluginRegistry
from agent_pm.settings import Settings

GOOD = "- name: echo\n  module: tests.fixtures.plugins:Echo\n  enabled: true\n"


def _entry(body: str) -> str:
    """The good entry plus a bad one named ``bad`` (``body`` holds its other lines)."""
    return GOOD + "- name: bad\n" + body


@dataclass(frozen=True)
class Case:
    kind: str  # "file": the whole manifest is refused; "entry": only the entry named bad is
    content: Callable[[Path], bytes]


def text(value: str) -> Callable[[Path], bytes]:
    return lambda marker: value.replace("MARKER", str(marker)).encode()


def nest(depth: int) -> str:
    return "[" * depth + "]" * depth


def _alias_bomb(levels: int = 12) -> str:
    """Billion laughs: each anchor refers four times to the one before, 4**12 leaves in all."""
    lines = [GOOD + "- name: bomb\n  module: tests.fixtures.plugins:Echo\n  config:"]
    lines.append("    a0: &a0 [x, x, x, x]")
    for i in range(1, levels + 1):
        ref = f"*a{i - 1}"
        lines.append(f"    a{i}: &a{i} [{ref}, {ref}, {ref}, {ref}]")
    return "\n".join(lines) + "\n"


ALIAS_BOMB = _alias_bomb()

CASES: dict[str, Case] = {
    "not-yaml": Case("file", text("- name: [unclosed\n  module: : {\n")),
    "binary-garbage": Case("file", lambda _: bytes(range(256)) * 64),
    "non-utf8": Case("file", lambda _: (GOOD + "  description: caf\xe9\n").encode("latin-1")),
    "python-object-apply": Case(
        "file",
        text(GOOD + "  config:\n    x: !!python/object/apply:os.system ['touch MARKER']\n"),
    ),
    "python-name": Case("file", text(GOOD + "  config:\n    x: !!python/name:os.system\n")),
    "python-object-new": Case(
        "file",
        text("- !!python/object/new:subprocess.Popen [['touch', 'MARKER']]\n"),
    ),
    "custom-tag": Case("file", text(GOOD + "  config:\n    token: !vault abc123\n")),
    "top-level-mapping": Case("file", text("name: echo\nmodule: tests.fixtures.plugins:Echo\n")),
    "top-level-scalar": Case("file", text("just a string\n")),
    "duplicate-keys": Case(
        "file", text("- name: echo\n  name: other\n  module: tests.fixtures.plugins:Echo\n")
    ),
    "huge-file": Case("file", text(GOOD + "# " + "x" * (1024 * 1024 + 1) + "\n")),
    "deep-nesting": Case("file", text(GOOD + f"  config:\n    deep: {nest(500)}\n")),
    "alias-bomb": Case("file", text(ALIAS_BOMB)),
    "recursive-alias": Case("file", text(GOOD + "  config:\n    loop: &a [*a]\n")),
    "entry-not-a-mapping": Case("entry", text(GOOD + "- just a string\n")),
    "wrong-field-types": Case(
        "entry", text(_entry("  module: tests.fixtures.plugins:Echo\n  enabled: 'yes please'\n"))
    ),
    "name-not-a-string": Case(
        "entry", text(GOOD + "- name: [1, 2]\n  module: tests.fixtures.plugins:Echo\n")
    ),
    "duplicate-names": Case("entry", text(GOOD + GOOD.replace("enabled: true", "enabled: false"))),
    "unknown-keys": Case(
        "entry", text(_entry("  module: tests.fixtures.plugins:Echo\n  run: touch MARKER\n"))
    ),
    "module-dot-dot": Case("entry", text(_entry("  module: ..tests.fixtures.plugins:Echo\n"))),
    "module-spaces": Case("entry", text(_entry("  module: tests fixtures:Echo\n"))),
    "module-os-system": Case("entry", text(_entry("  module: os.system('touch MARKER')\n"))),
    "module-not-a-plugin": Case("entry", text(_entry("  module: os:system\n  enabled: true\n"))),
    "hooks-wrong-type": Case(
        "entry", text(_entry("  module: tests.fixtures.plugins:Echo\n  hooks: post_plan\n"))
    ),
    "timeout-negative": Case(
        "entry", text(_entry("  module: tests.fixtures.plugins:Echo\n  timeout_seconds: -1\n"))
    ),
    "timeout-huge": Case(
        "entry", text(_entry("  module: tests.fixtures.plugins:Echo\n  timeout_seconds: 1e300\n"))
    ),
    "config-not-a-mapping": Case(
        "entry", text(_entry("  module: tests.fixtures.plugins:Echo\n  config: [1, 2]\n"))
    ),
    "secrets-not-a-mapping": Case(
        "entry",
        text(_entry("  module: tests.fixtures.plugins:Echo\n  config:\n    secrets: [a, b]\n")),
    ),
    "name-path-traversal": Case(
        "entry", text(GOOD + "- name: ../../etc/passwd\n  module: tests.fixtures.plugins:Echo\n")
    ),
}


@pytest.fixture
def env(tmp_path: Path) -> tuple[Path, Path, Settings]:
    manifest = tmp_path / "plugins.yaml"
    env = {"PLUGIN_CONFIG_PATH": str(manifest), "DATA_DIR": str(tmp_path / "data")}
    return manifest, tmp_path / "marker", Settings.from_env(env)


def _echo_runs(registry: PluginRegistry) -> bool:
    record = plain(registry.metadata_for("echo"))
    return bool(record["active"]) and not record["invalid"]


@pytest.mark.anyio
@pytest.mark.parametrize("name", sorted(CASES))
async def test_malformed_manifest_is_reported_on_start(
    name: str, env: tuple[Path, Path, Settings]
) -> None:
    manifest, marker, settings = env
    case = CASES[name]
    manifest.write_bytes(case.content(marker))
    async with PluginRegistry(manifest, settings) as registry:
        if case.kind == "file":
            assert registry.config_errors, name
            assert registry.names() == []
        else:
            assert registry.config_errors == []
            bad = [m for m in plain(registry.list_metadata()) if m["invalid"]]
            assert len(bad) == 1, plain(registry.list_metadata())
            assert bad[0]["error"] and bad[0]["errors"][0]["stage"] == "load"
            assert _echo_runs(registry)
            assert [r.status for r in await registry.fire("post_plan")] == ["success"]
    assert not marker.exists()


@pytest.mark.anyio
@pytest.mark.parametrize("name", sorted(CASES))
async def test_malformed_manifest_reload_keeps_what_runs(
    name: str, env: tuple[Path, Path, Settings]
) -> None:
    manifest, marker, settings = env
    manifest.write_text(GOOD)
    async with PluginRegistry(manifest, settings) as registry:
        revision, before = registry.revision, registry.get("echo")
        manifest.write_bytes(CASES[name].content(marker))
        with pytest.raises(ManifestError):
            plain(await registry.reload())
        assert registry.config_errors, name
        assert (registry.revision, registry.get("echo")) == (revision, before)
        assert registry.names() == ["echo"] and _echo_runs(registry)
        assert [r.status for r in await registry.fire("post_plan")] == ["success"]
    assert not marker.exists()


@pytest.mark.anyio
async def test_empty_manifest_starts_with_no_plugins(env: tuple[Path, Path, Settings]) -> None:
    manifest, _, settings = env
    manifest.write_bytes(b"")
    async with PluginRegistry(manifest, settings) as registry:
        assert (registry.names(), registry.config_errors) == ([], [])


@pytest.mark.anyio
@pytest.mark.parametrize("name", ["python-object-apply", "alias-bomb", "module-os-system"])
async def test_malformed_manifest_reload_over_rest_is_a_409(
    name: str, env: tuple[Path, Path, Settings]
) -> None:
    manifest, marker, settings = env
    manifest.write_text(GOOD)
    admin = {"X-API-Key": "admin-key-0123456789"}
    async with PluginRegistry(manifest, settings) as registry:
        app = create_app(settings, registry=registry, keys=ApiKeys(admin="admin-key-0123456789"))
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            manifest.write_bytes(CASES[name].content(marker))
            response = await client.post("/plugins/reload", headers=admin)
            assert (response.status_code, response.json()["error"]) == (409, "manifest_error")
            listed = await client.get("/plugins", headers=admin)
            assert [p["name"] for p in listed.json()["plugins"]] == ["echo"]
            fired = await client.post("/hooks/post_plan", headers=admin)
            assert fired.json()["results"][0]["status"] == "success"
    assert not marker.exists()
