"""The public API is exactly what ``agent_pm.plugins.__all__`` lists."""

from __future__ import annotations

import agent_pm.plugins as plugins


def test_exports_all_names_exist_and_are_sorted() -> None:
    assert plugins.__all__ == sorted(plugins.__all__)
    for name in plugins.__all__:
        assert getattr(plugins, name) is not None


def test_exports_public_names_are_listed() -> None:
    public = {n for n in vars(plugins) if not n.startswith("_") and n[0].isupper()}
    assert public <= set(plugins.__all__)
