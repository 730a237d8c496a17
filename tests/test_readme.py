"""The README's run command works on a fresh checkout: the service starts on the bundled
manifest with demo traffic, answers /health, and its plugins come alive."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.fixtures.servers import bound_socket

ROOT = Path(__file__).parents[1]
RUN_COMMAND = "uv run agent-pm serve --demo"


def test_readme_run_command_serves_the_bundled_manifest_with_demo_traffic(tmp_path) -> None:
    assert RUN_COMMAND in (ROOT / "README.md").read_text()
    sock = bound_socket()
    port = sock.getsockname()[1]
    sock.close()
    env = {k: v for k, v in os.environ.items() if "API_KEY" not in k and k != "PLUGIN_CONFIG_PATH"}
    env["PYTHONPATH"] = str(ROOT)
    # `uv run agent-pm` runs this interpreter's console script; the data of the built-in plugins
    # goes under the working directory's data/, here a temporary one.
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "plugins.yaml").write_bytes((ROOT / "config/plugins.yaml").read_bytes())
    argv = [sys.executable, "-m", "agent_pm.cli", "serve", "--demo", "--port", str(port)]
    process = subprocess.Popen(
        argv, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None
        login = process.stdout.readline()
        key = re.search(r"#key=(\S+)", login)
        assert key, login
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        alive: set[str] = set()
        while alive != {"ticket_automation", "slack_followup_alerts", "warehouse_export"}:
            assert time.monotonic() < deadline, f"no successes yet from all plugins: {alive}"
            time.sleep(0.2)  # bounded poll of a separate process: it offers no other signal
            try:
                response = httpx.get(
                    f"{url}/plugins?history=100", headers={"X-API-Key": key[1]}, timeout=5
                )
            except httpx.TransportError:
                continue
            for plugin in response.json()["plugins"]:
                for hook in plugin["hook_history"].values():
                    if any(sample["status"] == "success" for sample in hook):
                        alive.add(plugin["name"])
        assert httpx.get(f"{url}/health", timeout=5).json()["status"] == "ok"
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
        process.communicate()
    assert (tmp_path / "config" / "plugins.yaml").read_bytes() == (
        ROOT / "config/plugins.yaml"
    ).read_bytes()
