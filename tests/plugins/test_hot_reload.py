"""Hot reload of plugin code, end to end with the example package ``examples/hello_plugin``.

The package is copied under a unique name into a temporary directory on ``sys.path``, so the tests
edit that copy's source on disk and never the repository.
"""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import anyio
import httpx
import pytest
from msgspec import to_builtins as plain
from starlette.applications import Starlette
from starlette.routing import Mount

from agent_pm.errors import LifecycleError, PluginLoadError
from agent_pm.plugins import PluginRegistry
from agent_pm.settings import Settings

pytestmark = pytest.mark.anyio

EXAMPLE = Path(__file__).parents[2] / "examples" / "hello_plugin" / "src" / "hello_plugin"
TOKEN = "hello-token-0123456789"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings.from_env(
        {"PLUGIN_CONFIG_PATH": str(tmp_path / "plugins.yaml"), "HELLO_GREETING_TOKEN": TOKEN}
    )


@pytest.fixture
def package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A private copy of the example package, importable as ``hello_<random>``."""
    name = f"hello_{uuid.uuid4().hex[:12]}"
    root = tmp_path / "site"
    shutil.copytree(EXAMPLE, root / name, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.syspath_prepend(str(root))
    yield root / name
    for module in [m for m in sys.modules if m == name or m.startswith(name + ".")]:
        del sys.modules[module]


def edit(path: Path, old: str, new: str) -> None:
    """Change a source file so the next import surely reads it, not stale bytecode.

    Bytecode is checked against the source's mtime in whole seconds and its size, and an edit
    within the same second may keep both; moving the mtime on makes the change visible.
    """
    text = path.read_text()
    assert old in text, f"{old!r} not in {path.name}"
    path.write_text(text.replace(old, new))
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 2_000_000_000))


async def greet(registry: PluginRegistry, title: str = "x") -> object:
    [result] = await registry.fire("post_plan", plan={"title": title})
    assert result.status == "success", result.error
    return result.value


def plugin_path(package: Path) -> str:
    return f"{package.name}.plugin:HelloPlugin"


async def test_example_package_is_installed_through_its_entry_point(settings: Settings) -> None:
    [entry_point] = importlib.metadata.entry_points(group="agent_pm.plugins", name="hello")
    assert entry_point.value == "hello_plugin.plugin:HelloPlugin"
    assert entry_point.dist is not None and entry_point.dist.name == "hello-plugin"
    async with PluginRegistry(settings=settings) as registry:
        data = plain(
            await registry.install(
                entry_point.value, trusted=True, enabled=True, config={"greeting": "Howdy"}
            )
        )
        assert data["state"] == "enabled" and data["secrets"]["missing"] == []
        assert await greet(registry, "the launch") == {"message": "Howdy, the launch!"}
        instance = registry.get("hello")
        assert instance is not None
        app = Starlette(routes=[Mount("/plugins/hello", routes=list(instance.routes()))])
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            response = await client.get("/plugins/hello/greeting")
            assert response.json() == {"message": "Howdy, the launch!", "greeted": 1}
            denied = await client.post("/plugins/hello/webhook", json={"title": "y"})
            assert denied.status_code == 401
            allowed = await client.post(
                "/plugins/hello/webhook", json={"title": "y"}, headers={"X-Hello-Token": TOKEN}
            )
            assert allowed.json() == {"message": "Howdy, y!"}


async def test_example_plugin_hooks_are_skipped_without_its_secret(tmp_path: Path) -> None:
    settings = Settings.from_env({"PLUGIN_CONFIG_PATH": str(tmp_path / "plugins.yaml")})
    async with PluginRegistry(settings=settings) as registry:
        data = plain(
            await registry.install("hello_plugin.plugin:HelloPlugin", trusted=True, enabled=True)
        )
        assert data["secrets"]["missing"] == ["HELLO_GREETING_TOKEN"]
        [result] = await registry.fire("post_plan", plan={})
        assert result.status == "skipped"


async def test_reload_plugin_runs_edited_source_and_keeps_old_code_on_syntax_error(
    settings: Settings, package: Path
) -> None:
    async with PluginRegistry(settings=settings) as registry:
        await registry.install(plugin_path(package), trusted=True, enabled=True)
        assert await greet(registry) == {"message": "Hello, x!"}

        # A sibling module of the plugin's module is re-imported too.
        edit(package / "greeting.py", 'f"{greeting}, {whom}', 'f"{greeting} there, {whom}')
        plain(await registry.reload_plugin("hello"))
        assert await greet(registry) == {"message": "Hello there, x!"}

        edit(package / "plugin.py", "class HelloPlugin(PluginBase):", "class HelloPlugin(")
        revision = registry.revision
        with pytest.raises(PluginLoadError, match="SyntaxError") as caught:
            plain(await registry.reload_plugin("hello"))
        assert f"{package / 'plugin.py'}:" in str(caught.value)
        assert await greet(registry) == {"message": "Hello there, x!"}
        data = plain(registry.metadata_for("hello"))
        assert data["state"] == "enabled"
        assert data["errors"][-1]["stage"] == "reload"
        assert "plugin.py:" in data["errors"][-1]["message"]
        assert registry.revision == revision + 1  # the recorded error is announced

        # Fixing the source makes the next reload succeed.
        edit(package / "plugin.py", "class HelloPlugin(", "class HelloPlugin(PluginBase):")
        edit(package / "greeting.py", " there,", " again,")
        plain(await registry.reload_plugin("hello"))
        assert await greet(registry) == {"message": "Hello again, x!"}


async def test_reload_plugin_import_error_names_the_importing_line(
    settings: Settings, package: Path
) -> None:
    async with PluginRegistry(settings=settings) as registry:
        await registry.install(plugin_path(package), trusted=True, enabled=True)
        edit(package / "plugin.py", "import hmac\n", "import hmac\nimport no_such_dependency\n")
        with pytest.raises(PluginLoadError, match="ModuleNotFoundError") as caught:
            plain(await registry.reload_plugin("hello"))
        assert f"{package / 'plugin.py'}:" in str(caught.value)
        assert await greet(registry) == {"message": "Hello, x!"}
        # The module the old instance came from is back, so importing it again gives old code.
        assert sys.modules[f"{package.name}.plugin"].HelloPlugin is type(registry.get("hello"))


LIFECYCLE_BREAKS = {
    "constructor": (
        "    def on_enable(self) -> None:",
        "    def __init__(self, config: Any = None) -> None:\n"
        "        raise RuntimeError('constructor broke')\n\n"
        "    def on_enable(self) -> None:",
    ),
    "on_enable": (
        "        self.greeted = 0\n",
        "        raise RuntimeError(f'cannot use {self.get_secret(\"HELLO_GREETING_TOKEN\")}')\n",
    ),
    "on_reload": (
        "    async def post_plan(",
        "    def on_reload(self) -> None:\n"
        "        raise RuntimeError('on_reload broke')\n\n"
        "    async def post_plan(",
    ),
}


@pytest.mark.parametrize("stage", list(LIFECYCLE_BREAKS))
async def test_reload_plugin_lifecycle_failure_keeps_old_instance(
    settings: Settings, package: Path, stage: str
) -> None:
    async with PluginRegistry(settings=settings) as registry:
        await registry.install(plugin_path(package), trusted=True, enabled=True)
        old = registry.get("hello")
        edit(package / "greeting.py", 'f"{greeting}, ', 'f"{greeting}!! ')
        edit(package / "plugin.py", *LIFECYCLE_BREAKS[stage])
        with pytest.raises(LifecycleError, match=r"broke|cannot use"):
            plain(await registry.reload_plugin("hello"))
        assert registry.get("hello") is old
        assert await greet(registry) == {"message": "Hello, x!"}
        error = plain(registry.metadata_for("hello"))["errors"][-1]["message"]
        assert f"{package / 'plugin.py'}:" in error
        assert TOKEN not in error  # secrets are redacted, nothing else is
        assert "***" in error or stage != "on_enable"


async def test_reload_plugin_lets_in_flight_calls_finish_on_the_old_instance(
    settings: Settings, package: Path
) -> None:
    (package / "gated.py").write_text(
        "from agent_pm.plugins import PluginBase\n\n"
        "VERSION = 1\n\n\n"
        "class Gated(PluginBase):\n"
        "    name = 'gated'\n"
        "    hooks = ('post_plan',)\n\n"
        "    async def post_plan(self, entered=None, release=None, **payload):\n"
        "        if release is not None:\n"
        "            entered.set()\n"
        "            await release.wait()\n"
        "        return VERSION\n"
    )
    async with PluginRegistry(settings=settings) as registry:
        plain(await registry.install(f"{package.name}.gated:Gated", trusted=True, enabled=True))
        entered, release = anyio.Event(), anyio.Event()
        old_results = []

        async def slow_call() -> None:
            old_results.extend(await registry.fire("post_plan", entered=entered, release=release))

        with anyio.fail_after(5):
            async with anyio.create_task_group() as group:
                group.start_soon(slow_call)
                await entered.wait()
                edit(package / "gated.py", "VERSION = 1", "VERSION = 22")
                plain(await registry.reload_plugin("gated"))
                [new] = await registry.fire("post_plan")
                assert (new.status, new.value) == ("success", 22)
                assert not old_results
                release.set()
        [old] = old_results
        assert (old.status, old.value) == ("success", 1)
