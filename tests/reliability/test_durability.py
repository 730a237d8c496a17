"""The manifest is never partial, and a failed write changes nothing on disk or in memory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from msgspec import to_builtins as plain

from agent_pm.errors import ManifestError
from agent_pm.plugins.manifest import Manifest
from tests.fixtures.plugins import Lifecycle

KILLER = r"""
import json, os, random, signal, sys, time
from pathlib import Path
from agent_pm.plugins.manifest import Manifest

path = Path(sys.argv[1])
manifest = Manifest.load(path)
versions = []
# Two versions of one size, so a rewrite spends as long on each and kills split between them.
VERSIONS = ("old " * 200, "new " * 200)
for description in VERSIONS:
    manifest.set("a", description=description)
    versions.append(manifest.dumps().encode())
manifest.save()  # the file now holds versions[1]
# Crash within one back-and-forth rewrite (timed as the mean of three), however long a write
# takes on this machine, so that kills land both before and after renames.
started = time.perf_counter()
for description in VERSIONS * 3:
    manifest.set("a", description=description)
    manifest.save()
window = (time.perf_counter() - started) / 3
rng = random.Random(1234)
outcomes = {"old": 0, "new": 0}
for _ in range(int(sys.argv[2])):
    pid = os.fork()
    if pid == 0:  # the writer: rewrite the manifest back and forth until killed
        while True:
            for description in VERSIONS:
                manifest.set("a", description=description)
                manifest.save()
    time.sleep(rng.uniform(0, window))  # a random moment to crash at
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    data = path.read_bytes()
    assert data in versions, data[:200]
    Manifest.load(path).item("a")  # a restart: parses, and removes temp files left behind
    assert not list(path.parent.glob("." + path.name + ".*")), "temp file left after restart"
    outcomes["old" if data == versions[0] else "new"] += 1
print(json.dumps(outcomes))
"""


@pytest.mark.timeout(330)  # the killer's own bound (300 s) decides, not pytest's default
def test_durability_sigkill_at_random_moments_never_leaves_a_partial_manifest(
    tmp_path: Path,
) -> None:
    path = tmp_path / "plugins.yaml"
    path.write_text("# kept\n- name: a\n  module: pkg.mod:A\n  description: old\n")
    done = subprocess.run(
        [sys.executable, "-c", KILLER, str(path), "1000"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    outcomes = json.loads(done.stdout)
    assert outcomes["old"] + outcomes["new"] == 1000
    assert outcomes["old"] and outcomes["new"]  # kills landed both before and after renames


@pytest.mark.anyio
@pytest.mark.parametrize("failing", ["replace", "fsync"])
async def test_durability_failed_write_rolls_back_memory_and_disk(
    registry_factory, entry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failing: str
) -> None:
    Lifecycle.calls = []
    async with registry_factory(entry("Lifecycle", enabled=False)) as registry:
        path = tmp_path / "plugins.yaml"
        before, revision = path.read_bytes(), registry.revision

        def no_space(*args: object) -> None:
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(os, failing, no_space)
        with pytest.raises(ManifestError, match="No space left on device"):
            plain(await registry.set_enabled("lifecycle", True))
        monkeypatch.undo()
        meta = plain(registry.metadata_for("lifecycle"))
        assert (meta["enabled"], meta["active"], meta["state"]) == (False, False, "disabled")
        assert registry.revision == revision
        assert path.read_bytes() == before
        assert [m for _, m in Lifecycle.calls] == ["on_enable", "on_disable"]  # candidate stopped
        assert Manifest.load(path).item("lifecycle").raw["enabled"] is False
