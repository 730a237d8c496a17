"""Atlassian Document Format: the few node types Jira descriptions and comments need.

See https://developer.atlassian.com/cloud/jira/platform/apis/document/structure/ — a document is
``{"type": "doc", "version": 1, "content": [block, ...]}``; empty text nodes are invalid there.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

__all__ = ["Node", "bullet_list", "doc", "heading", "paragraph", "text"]

Node = dict[str, Any]


def text(value: str, *, strong: bool = False) -> Node:
    """An inline text node, optionally bold."""
    node: Node = {"type": "text", "text": value}
    if strong:
        node["marks"] = [{"type": "strong"}]
    return node


def paragraph(*inline: Node) -> Node:
    """A paragraph of inline nodes."""
    return {"type": "paragraph", "content": list(inline)}


def heading(value: str, level: int = 2) -> Node:
    """A heading of ``level`` 1..6."""
    return {"type": "heading", "attrs": {"level": level}, "content": [text(value)]}


def bullet_list(items: Iterable[str]) -> Node:
    """A bullet list with one paragraph per item."""
    return {
        "type": "bulletList",
        "content": [{"type": "listItem", "content": [paragraph(text(item))]} for item in items],
    }


def doc(*blocks: Node) -> Node:
    """A version 1 document of block nodes."""
    return {"type": "doc", "version": 1, "content": list(blocks)}
