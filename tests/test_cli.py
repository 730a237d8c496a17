"""The CLI: plugin commands on the manifest file and over HTTP, and ``serve`` as a process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from functools import partial
from pathlib import Path

import anyio
import anyio.to_thread
import httpx
import pytest

from agent_pm.admin_client import AdminError, HttpClient
from agent_pm.api._app import create_app
from agent_pm.cli import main, plugins_main
from agent_pm.demo.run import DemoApp
from agent_pm.plugins import PluginRegistry
from agent_pm.settings import Settings
from tests.api.conftest import ADMIN_KEY, MANIFEST, READ_KEY
from tests.fixtures.servers import bound_socket, live_server, serve_process, wait_for_health

ROOT = Path(__file__).parents[1]
ENV_KEYS = ("PLUGINS_API_URL", "PLUGINS_API_KEY", "API_KEY", "ADMIN_API_KEY", "PLUGIN_CONFIG_PATH")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for key in ENV_KEYS:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv(
        "PLUGIN_INSTALL_ALLOW", "tests.fixtures.plugins,tests.fixtures.route_plugins"
    )


@pytest.fixture
def manifest(tmp_path: Path) -> Path:
    path = tmp_path / "plugins.yaml"
    path.write_text(MANIFEST)
    return path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def plugins(manifest: Path, *argv: str) -> list[str]:
    return ["plugins", "--manifest", str(manifest), *argv]


# -- startup --------------------------------------------------------------------------------


def test_help_imports_nothing_heavy() -> None:
    code = (
        "import sys, agent_pm.cli\n"
        "heavy = {'starlette', 'uvicorn', 'httpx', 'anyio', 'msgspec', 'ruamel'}\n"
        "print(sorted(heavy & {name.split('.')[0] for name in sys.modules}))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert result.stdout.strip() == "[]"


def test_help_exits_zero(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    assert "serve" in capsys.readouterr().out


def test_demo_needs_a_server_and_a_key(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "demo")
    assert code == 1
    assert err.startswith("agent-pm: error: demo needs --url and --api-key")


def test_list_prints_a_table_and_warnings(
    manifest: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, *plugins(manifest, "list"))
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == [
        *("NAME", "STATE", "HEALTH", "ISOLATION", "HOOKS", "CALLS", "FAILED", "AVG", "MS"),
        *("ERR", "5M", "P95", "5M"),
    ]
    assert lines[1].split()[:3] == ["echo", "enabled", "idle"]
    assert "warning: broken is invalid: cannot import tests.fixtures.does_not_exist" in err
    assert "hint: secretive is missing secret(s) API_TOKEN" in err


def test_list_json_prints_raw_metadata(manifest: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, *plugins(manifest, "--json", "list"))
    data = json.loads(out)
    assert code == 0
    assert [p["name"] for p in data["plugins"]][:2] == ["echo", "strict"]
    assert data["config_errors"] == []


def test_list_reports_an_unreadable_manifest(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("{not: a list}\n")
    code, out, err = run(capsys, *plugins(path, "list"))
    assert code == 0
    assert out == "no plugins in the manifest\n"
    assert "error: manifest: manifest must be a YAML list" in err


def test_enable_disable_update_in_the_file(
    manifest: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(capsys, *plugins(manifest, "enable", "strict"))[1] == (
        "enabled strict (state: enabled)\n"
    )
    assert "name: strict\n  module: tests.fixtures.route_plugins:Strict\n  enabled: true" in (
        manifest.read_text()
    )
    code, out, _ = run(capsys, *plugins(manifest, "update", "strict", "--set", "channel=#ops"))
    assert code == 0
    code, out, _ = run(
        capsys, *plugins(manifest, "--json", "update", "strict", "--set", "limits.per_minute=5")
    )
    assert json.loads(out)["config"] == {"channel": "#ops", "limits": {"per_minute": 5}}
    assert run(capsys, *plugins(manifest, "disable", "strict"))[1] == (
        "disabled strict (state: disabled)\n"
    )
    assert manifest.read_text().startswith("# operators' comment")


def test_install_reload_and_remove(manifest: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(
        capsys,
        *plugins(manifest, "install", "--module", "tests.fixtures.route_plugins:Strict"),
        *(
            "--name",
            "strict2",
            "--enable",
            "--description",
            "second",
            "--set",
            "limits.per_minute=2",
        ),
    )
    assert (code, out) == (0, "installed strict2 (state: enabled)\n")
    assert "per_minute: 2" in manifest.read_text()
    assert run(capsys, *plugins(manifest, "reload", "strict2"))[1] == (
        "reloaded strict2 (state: enabled)\n"
    )
    assert run(capsys, *plugins(manifest, "reload"))[1] == "reloaded the manifest: 7 plugin(s)\n"
    assert run(capsys, *plugins(manifest, "remove", "strict2"))[1] == "removed strict2\n"
    assert "strict2" not in manifest.read_text()


def test_discover_and_install_by_entry_point(
    plugin_site: Path, manifest: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, *plugins(manifest, "discover"))
    assert code == 0
    assert out.splitlines()[0].split()[:2] == ["ENTRY", "POINT"]
    assert any(line.split()[:2] == ["echo-ep", "echo"] for line in out.splitlines())
    assert "warning: entry point missing-ep: cannot load" in err
    code, out, _ = run(
        capsys, *plugins(manifest, "install", "--entry-point", "echo-ep", "--name", "e2")
    )
    assert (code, out) == (0, "installed e2 (state: disabled)\n")


@pytest.mark.parametrize(
    ("argv", "message", "status"),
    [
        (("enable", "nobody"), "no plugin named 'nobody'", 1),
        (("install", "--module", "os.path:join"), "module 'os.path' is not allowed", 1),
        (("update", "strict", "--set", "novalue"), "--set expects KEY=VALUE", 1),
        # A refused change exits 2, as the API answers it 422.
        (("update", "strict", "--set", "chanel=x"), "unknown config key 'chanel'", 2),
        (("install", "--entry-point", "nope"), "no installed entry point named 'nope'", 1),
    ],
)
def test_errors_exit_with_one_line(
    manifest: Path,
    capsys: pytest.CaptureFixture[str],
    argv: tuple[str, ...],
    message: str,
    status: int,
) -> None:
    code, _, err = run(capsys, *plugins(manifest, *argv))
    assert code == status
    assert err.count("\n") == 1 and err.startswith("agent-pm: error: ")
    assert message in err


def test_manifest_defaults_to_plugin_config_path(
    manifest: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PLUGIN_CONFIG_PATH", str(manifest))
    code, out, _ = run(capsys, "plugins", "list")
    assert code == 0 and "strict" in out


def test_manage_plugins_script_runs_the_same_commands(manifest: Path) -> None:
    result = subprocess.run(
        [sys.executable, "scripts/manage_plugins.py", "--manifest", str(manifest), "list"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[1].split()[:2] == ["echo", "enabled"]
    assert "Traceback" not in result.stderr


# -- HTTP mode ------------------------------------------------------------------------------


@pytest.fixture
async def server_url(manifest: Path) -> AsyncIterator[str]:
    settings = Settings.from_env(
        {
            "API_KEY": READ_KEY,
            "ADMIN_API_KEY": ADMIN_KEY,
            "PLUGIN_INSTALL_ALLOW": "tests.fixtures.route_plugins",
            "DATA_DIR": str(manifest.parent / "server-data"),
        }
    )
    async with (
        PluginRegistry(manifest, settings) as registry,
        live_server(create_app(settings, registry=registry)) as url,
    ):
        yield url


async def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = await anyio.to_thread.run_sync(partial(main, list(argv)))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.anyio
async def test_url_mode_talks_to_the_server(
    server_url: str, manifest: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    remote = ["plugins", "--url", server_url, "--api-key", ADMIN_KEY]
    code, out, err = await cli(capsys, *remote, "list")
    assert code == 0 and out.splitlines()[1].split()[:2] == ["echo", "enabled"]
    assert "hint: secretive is missing secret(s) API_TOKEN" in err
    assert (await cli(capsys, *remote, "enable", "strict"))[
        1
    ] == "enabled strict (state: enabled)\n"
    code, out, _ = await cli(
        capsys, *remote, "--json", "update", "strict", "--set", "limits.per_minute=9"
    )
    assert json.loads(out)["config"] == {"limits": {"per_minute": 9}}
    code, out, _ = await cli(
        capsys, *remote, "install", "--module", "tests.fixtures.route_plugins:Prefixed", "--enable"
    )
    assert out == "installed prefixed (state: enabled)\n"
    assert (await cli(capsys, *remote, "reload", "prefixed"))[0] == 0
    assert (await cli(capsys, *remote, "reload"))[1] == "reloaded the manifest: 7 plugin(s)\n"
    assert (await cli(capsys, *remote, "remove", "prefixed"))[1] == "removed prefixed\n"
    assert (await cli(capsys, *remote, "discover"))[0] == 0
    assert "prefixed" not in manifest.read_text()


@pytest.mark.anyio
async def test_url_mode_reads_the_environment_and_reports_http_errors(
    server_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PLUGINS_API_URL", server_url)
    monkeypatch.setenv("PLUGINS_API_KEY", READ_KEY)
    assert (await cli(capsys, "plugins", "list"))[0] == 0
    code, _, err = await cli(capsys, "plugins", "disable", "echo")
    assert (code, err) == (1, "agent-pm: error: this operation needs the admin key (HTTP 403)\n")
    monkeypatch.setenv("PLUGINS_API_KEY", ADMIN_KEY)
    code, _, err = await cli(capsys, "plugins", "enable", "nobody")
    assert (code, err) == (1, "agent-pm: error: no plugin named 'nobody' (HTTP 404)\n")


DEEP_KEY = ".".join(["k"] * 40)


@pytest.mark.anyio
async def test_url_mode_refuses_unloadable_changes_with_exit_2(
    server_url: str, manifest: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = manifest.read_bytes()
    remote = ["plugins", "--url", server_url, "--api-key", ADMIN_KEY]
    code, _, err = await cli(capsys, *remote, "update", "echo", "--set", f"{DEEP_KEY}=1")
    assert code == 2 and "nested deeper than 32 levels (HTTP 422)" in err
    non_utf8 = b"caf\xe9".decode(errors="surrogateescape")  # as Python hands such argv over
    code, _, err = await cli(capsys, *remote, "update", "echo", "--set", f"note={non_utf8}")
    assert code == 2 and "not valid Unicode" in err
    assert manifest.read_bytes() == before


def test_file_mode_refuses_a_non_utf8_argument_with_exit_2(manifest: Path) -> None:
    """A real process, so the byte arrives as the operating system passes it."""
    before = manifest.read_bytes()
    env = {k: v for k, v in os.environ.items() if k not in ENV_KEYS}
    env["PYTHONPATH"] = str(ROOT)
    argv = [sys.executable, "-m", "agent_pm.cli", *plugins(manifest, "update", "echo")]
    for value in (b"note=caf\xe9", f"{DEEP_KEY}=1".encode()):
        done = subprocess.run(
            [*argv, "--set", value], env=env, capture_output=True, timeout=120, check=False
        )
        assert done.returncode == 2, done.stderr
        assert b"cannot load" in done.stderr and b"Traceback" not in done.stderr
    assert manifest.read_bytes() == before


def test_url_mode_unreachable_server_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    sock = bound_socket()
    host, port = sock.getsockname()
    sock.close()  # nothing listens there now
    code, _, err = run(capsys, "plugins", "--url", f"http://{host}:{port}", "list")
    assert code == 1
    assert err.startswith(f"agent-pm: error: cannot reach http://{host}:{port}")
    assert err.count("\n") == 1


# -- serve as a process ---------------------------------------------------------------------


@pytest.fixture
def served(manifest: Path) -> Iterator[tuple[subprocess.Popen[str], str]]:
    env = {k: v for k, v in os.environ.items() if k not in ENV_KEYS}
    env["PYTHONPATH"] = str(ROOT)
    with serve_process(manifest, env, "--no-watch") as served:
        yield served


def test_serve_process_answers_health_and_stops_cleanly_on_sigterm(
    served: tuple[subprocess.Popen[str], str],
) -> None:
    process, url = served
    assert wait_for_health(process, url).json()["status"] == "ok"
    assert httpx.get(f"{url}/plugins", timeout=5).status_code == 401
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    logins = [line for line in out.splitlines() if "/login#key=" in line]
    assert len(logins) == 1
    key = logins[0].rsplit("#key=", 1)[1]
    assert logins[0].endswith(f"http://127.0.0.1:{url.rsplit(':', 1)[1]}/login#key={key}")
    assert key not in err
    assert "Traceback" not in err


@pytest.mark.anyio
async def test_http_update_refuses_to_overwrite_a_concurrent_change(server_url: str) -> None:
    def race() -> str:
        client = HttpClient(server_url, ADMIN_KEY)
        other = HttpClient(server_url, ADMIN_KEY)
        try:
            client.get("strict")
            other.update_config("strict", {"channel": "#theirs"})
            with pytest.raises(AdminError, match=r"HTTP 412"):
                client.update_config("strict", {"channel": "#mine"})
            return str(other.get("strict")["config"]["channel"])
        finally:
            client.close()
            other.close()

    assert await anyio.to_thread.run_sync(race) == "#theirs"


# -- serve, in process ------------------------------------------------------------------------


@pytest.fixture
def captured_run(monkeypatch: pytest.MonkeyPatch) -> list[tuple[object, str, int]]:
    calls: list[tuple[object, str, int]] = []
    monkeypatch.setattr("agent_pm.server.run", lambda *args: calls.append(args))
    return calls


@pytest.mark.parametrize(
    ("host", "shown"),
    [("0.0.0.0", "127.0.0.1"), ("::", "[::1]"), ("::1", "[::1]"), ("example.test", "example.test")],
)
def test_serve_prints_a_login_url_when_no_key_is_set(
    captured_run: list[tuple[object, str, int]],
    manifest: Path,
    capsys: pytest.CaptureFixture[str],
    host: str,
    shown: str,
) -> None:
    code, out, _ = run(capsys, "serve", "--host", host, "--port", "9", "--manifest", str(manifest))
    app, bound_host, port = captured_run[0]
    key = app.state.api_keys.admin  # type: ignore[attr-defined]
    assert code == 0 and (bound_host, port) == (host, 9)
    assert out == f"No API key configured; log in at http://{shown}:9/login#key={key}\n"
    assert app.state.watch is True and not isinstance(app, DemoApp)  # type: ignore[attr-defined]


def test_serve_with_a_key_prints_nothing_and_passes_flags(
    captured_run: list[tuple[object, str, int]],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("API_KEY", "configured-key-0123456789")
    code, out, _ = run(capsys, "serve", "--no-watch")
    app = captured_run[0][0]
    assert (code, out) == (0, "")
    assert app.state.watch is False  # type: ignore[attr-defined]
    assert app.state.api_keys.role_for("configured-key-0123456789") == "admin"  # type: ignore[attr-defined]


def test_serve_refuses_a_short_key_with_a_clear_message(
    captured_run: list[tuple[object, str, int]],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("ADMIN_API_KEY", "7-chars")
    code, _, err = run(capsys, "serve")
    assert (code, captured_run) == (1, [])
    assert err == (
        "agent-pm: error: ADMIN_API_KEY is 7 characters long; keys must have at least 16 "
        "(make one with `agent-pm keys hash`)\n"
    )


def test_serve_demo_wraps_the_app_in_the_demo(
    captured_run: list[tuple[object, str, int]],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("ADMIN_API_KEY", "configured-key-0123456789")
    code, out, _ = run(capsys, "serve", "--demo", "--no-watch")
    app = captured_run[0][0]
    assert (code, out) == (0, "") and isinstance(app, DemoApp)
    assert (
        app.keys.role_for("configured-key-0123456789") == "admin" and app.options["watch"] is False
    )


def test_bad_settings_are_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("HOOK_TIMEOUT_SECONDS", "soon")
    code, _, err = run(capsys, "plugins", "list")
    assert code == 1
    assert err == "agent-pm: error: HOOK_TIMEOUT_SECONDS must be a number of seconds, got 'soon'\n"


def test_plugins_main_runs_without_the_prefix(
    manifest: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert plugins_main(["--manifest", str(manifest), "--json", "remove", "strict"]) == 0
    assert json.loads(capsys.readouterr().out) == {"removed": "strict"}


# -- audit and keys -------------------------------------------------------------------------


def test_local_changes_are_audited_as_the_os_user(
    manifest: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(capsys, *plugins(manifest, "disable", "echo"))[0] == 0
    assert run(capsys, *plugins(manifest, "enable", "nobody"))[0] == 1
    code, out, _ = run(capsys, "audit", "--json")
    assert code == 0
    disabled, refused = [json.loads(line) for line in out.splitlines()]
    assert disabled["actor"].startswith("os:") and disabled["source"] == "cli"
    assert (disabled["action"], disabled["plugin"], disabled["outcome"]) == (
        "disable",
        "echo",
        "ok",
    )
    assert disabled["before"] == {"enabled": True, "state": "enabled"}
    assert (refused["outcome"], refused["error"]) == ("error", "no plugin named 'nobody'")
    code, table, _ = run(capsys, "audit", "--since", "1")
    assert code == 0 and len(table.splitlines()) == 2 and "enable" in table.splitlines()[1]
    assert (tmp_path / "data" / "audit" / "audit.jsonl").exists()


def test_audit_refuses_a_bad_since(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "audit", "--since", "yesterday")
    assert (code, err) == (1, "agent-pm: error: since must be a record id or an ISO 8601 time\n")


@pytest.mark.anyio
async def test_remote_changes_are_audited_on_the_server_as_the_cli(
    server_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    remote = ["--url", server_url, "--api-key", ADMIN_KEY]
    assert (await cli(capsys, "plugins", *remote, "disable", "echo"))[0] == 0
    code, out, _ = await cli(capsys, "audit", *remote, "--json", "--limit", "1")
    [record] = [json.loads(line) for line in out.splitlines()]
    assert (record["actor"], record["source"], record["action"]) == (
        "ADMIN_API_KEY",
        "cli",
        "disable",
    )
    code, _, err = await cli(capsys, "audit", "--url", server_url, "--api-key", READ_KEY)
    assert (code, err) == (1, "agent-pm: error: this operation needs the admin key (HTTP 403)\n")


def test_keys_hash_makes_a_key_and_its_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from agent_pm.api._security import ApiKeys, Caller

    code, out, _ = run(capsys, "keys", "hash", "ci-bot", "admin")
    assert code == 0
    key_line, entry_line = out.splitlines()
    key = key_line.rsplit(" ", 1)[1]
    line = entry_line.split(": ", 1)[1]
    assert len(key) >= 40 and key not in line
    keys_file = tmp_path / "keys"
    keys_file.write_text(line + "\n")
    keys = ApiKeys.from_settings(Settings.from_env({"API_KEYS_FILE": str(keys_file)}))
    assert keys.caller_for(key) == Caller("ci-bot", "admin")


def test_keys_hash_reads_a_key_from_stdin_and_refuses_a_short_one(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import io

    monkeypatch.setattr(sys, "stdin", io.StringIO("an-existing-key-0123456789\n"))
    code, out, _ = run(capsys, "keys", "hash", "--key-stdin", "viewer", "read")
    assert code == 0 and out.startswith("line for API_KEYS_FILE: viewer read sha256:")
    assert "an-existing-key" not in out
    monkeypatch.setattr(sys, "stdin", io.StringIO("short\n"))
    code, _, err = run(capsys, "keys", "hash", "--key-stdin", "viewer", "read")
    assert code == 1 and "at least 16" in err
