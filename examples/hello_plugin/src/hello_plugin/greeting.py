"""The words of a greeting: a sibling module of the plugin, re-imported with it on reload."""

from __future__ import annotations


def greet(greeting: str, whom: str, punctuation: str) -> str:
    return f"{greeting}, {whom}{punctuation}"
