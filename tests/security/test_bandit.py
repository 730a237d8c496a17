"""Bandit's static security check over the package: clean, each exception justified inline."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_bandit_finds_nothing_in_the_package() -> None:
    bandit = shutil.which("bandit", path=str(Path(sys.executable).parent))
    assert bandit is not None, "bandit is a dev dependency: uv sync"
    done = subprocess.run(
        [bandit, "-r", "agent_pm", "-q", "-f", "json", "-c", "pyproject.toml"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    report = json.loads(done.stdout)
    findings = [
        f"{r['filename']}:{r['line_number']} {r['test_id']} {r['issue_text']}"
        for r in report["results"]
    ]
    assert findings == []
    assert report["errors"] == []
    assert done.returncode == 0, done.stderr
