"""Manifest loading is tolerant and safe; saving is atomic and keeps operators' comments."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from agent_pm.errors import ManifestError
from agent_pm.plugins.manifest import MAX_MANIFEST_BYTES, Manifest


def test_manifest_bad_entries_are_reported_and_good_ones_load(write_manifest) -> None:
    path = write_manifest(
        """
        - name: good
          module: pkg.mod:Good
          enabled: true
        - name: good
          module: pkg.mod:Other
        - 42
        - name: typo
          module: pkg.mod:Typo
          enabeld: true
        - name: wrongtype
          module: pkg.mod:X
          enabled: "yes please"
        - module: pkg.mod:NoName
        """
    )
    items = list(Manifest.load(path).items())
    assert [i.entry is not None for i in items] == [True, False, False, False, False, False]
    errors = [i.error for i in items[1:]]
    assert "duplicate plugin name 'good'" in errors[0]
    assert "Expected `object`" in errors[1]
    assert "enabeld" in errors[2]
    assert "$.enabled" in errors[3]
    assert "name" in errors[4]
    assert [i.key for i in items] == [
        "good",
        "good (entry 2)",
        "<entry 3>",
        "typo",
        "wrongtype",
        "<entry 6>",
    ]


@pytest.mark.parametrize(
    "text",
    [
        "- !!python/object/apply:os.system ['touch {marker}']\n",
        "- name: x\n  module: a:B\n  config: !!python/name:os.system\n",
        "- name: x\n  module: a:B\n  config: !custom {{a: 1}}\n",
    ],
)
def test_manifest_object_constructing_tags_are_refused_not_executed(
    write_manifest, tmp_path: Path, text: str
) -> None:
    marker = tmp_path / "executed"
    path = write_manifest(text.format(marker=marker))
    with pytest.raises(ManifestError, match="unsupported YAML tag"):
        Manifest.load(path)
    assert not marker.exists()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("- name: [unclosed\n", "not valid YAML"),
        ("name: not-a-list\n", "must be a YAML list"),
        ("a: &a [*a, *a]\n", "nested deeper|more than"),
        ("- " + "[" * 40 + "]" * 40 + "\n", "nested deeper"),
        ("key: 1\nkey: 2\n", "not valid YAML"),
    ],
)
def test_manifest_that_cannot_be_used_raises_a_clear_error(
    write_manifest, text: str, message: str
) -> None:
    with pytest.raises(ManifestError, match=message):
        Manifest.load(write_manifest(text))


def test_manifest_alias_bomb_is_refused(write_manifest) -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 8)]
    with pytest.raises(ManifestError, match="more than"):
        Manifest.load(write_manifest("\n".join(lines) + "\n"))


def test_manifest_too_large_is_refused(write_manifest) -> None:
    path = write_manifest("# " + "x" * MAX_MANIFEST_BYTES + "\n")
    with pytest.raises(ManifestError, match="larger than"):
        Manifest.load(path)


def test_manifest_missing_or_empty_file_is_an_empty_manifest(
    tmp_path: Path, write_manifest
) -> None:
    assert list(Manifest.load(tmp_path / "absent.yaml").items()) == []
    assert list(Manifest.load(write_manifest("# only a comment\n")).items()) == []


def test_manifest_save_keeps_comments_key_order_and_invalid_entries(write_manifest) -> None:
    original = """\
        # Plugins of this deployment.
        - name: alpha  # the first one
          module: pkg.mod:Alpha
          enabled: false
          description: kept as written
        # an entry that does not validate
        - name: broken
          module: 12
        """
    path = write_manifest(original)
    manifest = Manifest.load(path)
    manifest.set("alpha", enabled=True)
    manifest.save()
    text = path.read_text()
    assert "# Plugins of this deployment." in text
    assert "# the first one" in text
    assert "# an entry that does not validate" in text
    assert "enabled: true" in text
    assert (
        text.index("module: pkg.mod:Alpha")
        < text.index("enabled: true")
        < text.index("description: kept as written")
    )
    assert "- name: broken\n  module: 12\n" in text


@pytest.mark.parametrize("failing", ["replace", "fsync"])
def test_manifest_failed_write_leaves_file_byte_identical(
    write_manifest, monkeypatch: pytest.MonkeyPatch, failing: str
) -> None:
    path = write_manifest("- name: a\n  module: pkg.mod:A\n  enabled: false\n")
    before = path.read_bytes()
    manifest = Manifest.load(path)
    manifest.set("a", enabled=True)

    def broken(*args: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, failing, broken)
    with pytest.raises(ManifestError, match="No space left"):
        manifest.save()
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert [p.name for p in path.parent.iterdir()] == [path.name]


def test_manifest_stale_temp_files_are_removed_on_load(write_manifest) -> None:
    path = write_manifest("[]\n")
    stale = path.with_name(f".{path.name}.deadbeef.tmp")
    stale.write_text("- partial")
    Manifest.load(path)
    assert not stale.exists()


CHILD = """
import sys
from agent_pm.plugins.manifest import Manifest
path = sys.argv[1]
manifest = Manifest.load(__import__("pathlib").Path(path))
print("ready", flush=True)
flag = False
while True:
    flag = not flag
    manifest.set("a", enabled=flag, description="x" * (5000 if flag else 10))
    manifest.save()
"""


# Forty interpreters start one after another: seconds on a quiet machine, minutes on a busy one.
@pytest.mark.timeout(300)
def test_manifest_survives_sigkill_mid_write(write_manifest) -> None:
    import random
    import signal
    import subprocess
    import sys
    import time

    path = write_manifest("- name: a\n  module: pkg.mod:A\n  enabled: false\n")
    rng = random.Random(7)
    for _ in range(40):
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(path)], stdout=subprocess.PIPE, text=True
        )
        assert child.stdout is not None and child.stdout.readline() == "ready\n"
        time.sleep(rng.uniform(0, 0.02))  # a random moment to crash at, not a wait
        child.send_signal(signal.SIGKILL)
        child.wait()
        child.stdout.close()
        entry = Manifest.load(path).item("a").raw
        assert entry["enabled"] in (True, False)
        assert len(entry.get("description", "")) in (0, 10, 5000)
    assert [p.name for p in path.parent.iterdir()] == [path.name]
