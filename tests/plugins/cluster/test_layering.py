"""Cluster mode is optional: the core and the app import no Redis client until it is used."""

from __future__ import annotations

import subprocess
import sys


def test_plugins_and_app_import_without_the_redis_client() -> None:
    optional = ("coredis", "agent_pm.plugins.cluster.node")
    code = (
        "import sys, agent_pm.plugins, agent_pm.api._app, agent_pm.cli\n"
        f"print(sorted(m for m in sys.modules if m.startswith({optional!r})))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
