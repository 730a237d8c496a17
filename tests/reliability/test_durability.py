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
temp_files = "." + path.name + ".*"
manifest = Manifest.load(path)
versions = []
VERSIONS = ("old " * 200, "new " * 200)
for description in VERSIONS:
    manifest.set("a", description=description)
    versions.append(manifest.dumps().encode())
manifest.save()  # the file now holds versions[1]
# How long one rewrite takes on this machine (the mean of six).
started = time.perf_counter()
for description in VERSIONS * 3:
    manifest.set("a", description=description)
    manifest.save()
rewrite = (time.perf_counter() - started) / 6
rng = random.Random(1234)
outcomes = {"old": 0, "new": 0, "interrupted": 0}
for _ in range(int(sys.argv[2])):
    ready, starting = os.pipe()
    pid = os.fork()
    if pid == 0:  # the writer: rewrite back and forth until killed, telling each save's start
        os.close(ready)
        while True:
            for description in VERSIONS:
                manifest.set("a", description=description)
                os.write(starting, b".")
                manifest.save()
    os.close(starting)
    # Crash at a random moment from the start of the first or the second save: they write
    # different versions, so kills before and after a rename show both versions, whatever
    # the machine's speed or load.
    for _ in range(rng.choice((1, 2))):
        os.read(ready, 1)
    time.sleep(rng.uniform(0, rewrite))
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    os.close(ready)
    outcomes["interrupted"] += bool(list(path.parent.glob(temp_files)))
    data = path.read_bytes()
    assert data in versions, data[:200]
    Manifest.load(path).item("a")  # a restart: parses, and removes temp files left behind
    assert not list(path.parent.glob(temp_files)), "temp file left after restart"
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
    assert outcomes["interrupted"]  # and in the middle of writes


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
