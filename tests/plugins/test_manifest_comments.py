"""Comments of an empty manifest survive the first write."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from agent_pm.plugins.manifest import Manifest


def test_manifest_copy_keeps_header_comment_of_empty_list(
    write_manifest: Callable[[str], Path],
) -> None:
    path = write_manifest("# how to write entries\n[]\n")
    candidate = Manifest.load(path).copy()
    candidate.add({"name": "echo", "module": "tests.fixtures.plugins:Echo"})
    candidate.save()
    text = path.read_text()
    assert text.startswith("# how to write entries\n")
    assert "- name: echo" in text
