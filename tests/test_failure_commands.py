"""``agent-pm plugins failures`` and ``plugins replay``: on the local files and over HTTP."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from functools import partial
from pathlib import Path

import anyio
import anyio.to_thread
import httpx
import pytest

from agent_pm.api._app import create_app
from agent_pm.cli import main
from agent_pm.plugins import PluginRegistry
from agent_pm.settings import Settings
from tests.api.conftest import ADMIN, ADMIN_KEY, READ_KEY
from tests.api.test_failures import MANIFEST
from tests.fixtures.recording import (  # noqa: F401 (a fixture)
    BAD_TOKEN,
    GOOD_TOKEN,
    Bystander,
    Exporter,
    fresh_deliveries,
)
from tests.fixtures.servers import live_server

pytestmark = pytest.mark.usefixtures("fresh_deliveries")


@pytest.fixture(autouse=True)
def environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for key in ("PLUGINS_API_URL", "PLUGINS_API_KEY", "API_KEY", "ADMIN_API_KEY"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("REPLAY_RATE", "1000")


@pytest.fixture
def manifest(tmp_path: Path) -> Path:
    path = tmp_path / "plugins.yaml"
    path.write_text(MANIFEST)
    return path


async def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = await anyio.to_thread.run_sync(partial(main, list(argv)))
    out, err = capsys.readouterr()
    return code, out, err


async def record_failures(manifest: Path, count: int) -> None:
    async with PluginRegistry(manifest, Settings.from_env()) as registry:
        for number in range(count):
            await registry.fire("post_plan", key=f"OPS-{number}", auth=BAD_TOKEN)
    # Leaving the registry stores what its writer still had queued.


@pytest.mark.anyio
async def test_file_mode_lists_fixes_and_replays(
    manifest: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    await record_failures(manifest, 2)
    local = ["plugins", "--manifest", str(manifest)]
    code, out, _ = await cli(capsys, *local, "failures", "exporter")
    lines = out.splitlines()
    assert code == 0 and lines[0].split() == [
        "ID",
        "RECORDED",
        "HOOK",
        "STATUS",
        "STATE",
        "REPLAYS",
        "REQUEST",
        "ERROR",
    ]
    assert [line.split()[2:5] for line in lines[1:]] == [["post_plan", "error", "pending"]] * 2
    assert "export rejected token ***" in out and BAD_TOKEN not in out
    code, out, _ = await cli(capsys, *local, "--json", "failures", "exporter")
    payloads = [f["payload"] for f in json.loads(out)["failures"]]
    assert payloads == [{"key": "OPS-1", "auth": "***"}, {"key": "OPS-0", "auth": "***"}]

    code, out, _ = await cli(capsys, *local, "replay", "exporter", "--dry-run")
    assert (code, out) == (0, "2 pending failure(s) of exporter would be replayed\n")
    code, out, _ = await cli(capsys, *local, "replay", "exporter")
    assert code == 1 and "0 succeeded, 2 failed" in out

    secret = f"secrets.EXPORT_TOKEN={GOOD_TOKEN}"
    assert (await cli(capsys, *local, "update", "exporter", "--set", secret))[0] == 0
    code, out, _ = await cli(capsys, *local, "replay", "exporter", "--since", "1h")
    assert code == 0
    assert out.splitlines()[0] == (
        "replayed 2 of 2 pending failure(s) of exporter: 2 succeeded, 0 failed"
    )
    assert [p["key"] for _, p in Exporter.delivered["exporter"]] == ["OPS-0", "OPS-1"]
    # The bystander saw the two original calls and none of the replays.
    assert [call["key"] for call in Bystander.calls] == ["OPS-0", "OPS-1"]
    code, out, _ = await cli(capsys, *local, "replay", "exporter")
    assert out.startswith("replayed 0 of 0 pending")


@pytest.mark.anyio
async def test_bad_options_are_one_line_errors(
    manifest: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    local = ["plugins", "--manifest", str(manifest)]
    code, _, err = await cli(capsys, *local, "failures", "exporter", "--since", "someday")
    assert code == 1 and err.startswith("agent-pm: error: since must be an ISO 8601 time")
    code, _, err = await cli(capsys, *local, "replay", "exporter", "--limit", "0")
    assert (code, err) == (1, "agent-pm: error: --limit must be at least 1\n")
    code, _, err = await cli(capsys, *local, "failures", "nobody")
    assert (code, err) == (1, "agent-pm: error: no plugin named 'nobody'\n")


@pytest.fixture
async def server(manifest: Path) -> AsyncIterator[str]:
    settings = Settings.from_env({**Settings.from_env().environ, "API_KEY": READ_KEY})
    settings = Settings.from_env({**settings.environ, "ADMIN_API_KEY": ADMIN_KEY})
    async with (
        PluginRegistry(manifest, settings) as registry,
        live_server(create_app(settings, registry=registry)) as url,
    ):
        yield url


@pytest.mark.anyio
async def test_url_mode_lists_and_replays_one(
    server: str, capsys: pytest.CaptureFixture[str]
) -> None:
    async with httpx.AsyncClient(base_url=server, headers=ADMIN) as client:
        await client.post("/hooks/post_plan", json={"key": "OPS-9", "auth": BAD_TOKEN})
        fixed = {"config": {"secrets": {"EXPORT_TOKEN": GOOD_TOKEN}}}
        assert (await client.post("/plugins/exporter/config", json=fixed)).status_code == 200
    reader = ["plugins", "--url", server, "--api-key", READ_KEY]
    code, out, _ = await cli(capsys, *reader, "--json", "failures", "exporter")
    (failure,) = json.loads(out)["failures"]
    assert "payload" not in failure and failure["payload_stored"] is True
    code, _, err = await cli(capsys, *reader, "replay", "exporter")
    assert (code, err) == (1, "agent-pm: error: this operation needs the admin key (HTTP 403)\n")

    admin = ["plugins", "--url", server, "--api-key", ADMIN_KEY]
    code, out, _ = await cli(
        capsys, *admin, "replay", "exporter", "--dry-run", "--hook", "post_plan"
    )
    assert (code, out) == (0, "1 pending failure(s) of exporter would be replayed\n")
    code, out, _ = await cli(capsys, *admin, "replay", "exporter", "--id", str(failure["id"]))
    assert (code, out) == (
        0,
        f"replayed failure of exporter:\n  #{failure['id']} post_plan: success\n",
    )
    code, _, err = await cli(capsys, *admin, "replay", "exporter", "--id", str(failure["id"]))
    assert code == 1 and "was replayed already; force to repeat (HTTP 409)" in err
    code, _, err = await cli(capsys, *admin, "failures", "exporter", "--since", "later")
    assert code == 1 and "(HTTP 400)" in err
    assert [r for r, _ in Exporter.delivered["exporter"]] == [failure["id"]]
