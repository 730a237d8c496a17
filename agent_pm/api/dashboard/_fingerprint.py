"""Error groups: errors that differ only in numbers, ids or quoted values count as one."""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["ErrorGroup", "fingerprint", "group_errors"]

# Longest forms first, so a UUID is not read as five hex runs and a number.
_VARIABLE = re.compile(
    r"""
      [0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}   # UUID
    | \b0x[0-9a-f]+\b                                                 # hex literal
    | \b[0-9a-f]*[0-9][0-9a-f]*[a-f][0-9a-f]*\b(?<=\w{8})              # hex id of 8+ chars
    | \b[0-9a-f]*[a-f][0-9a-f]*[0-9][0-9a-f]*\b(?<=\w{8})
    | \b[A-Z][A-Z0-9]+-\d+\b                                          # ticket key: OPS-123
    | \d+(?:\.\d+)?                                                   # any number
    """,
    re.IGNORECASE | re.VERBOSE,
)
_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")


def fingerprint(message: str) -> str:
    """``message`` with its variable parts replaced: quoted values by ``'…'``, numbers by ``#``."""
    text = _QUOTED.sub("'…'", message)
    return _VARIABLE.sub("#", text).strip()


@dataclass
class ErrorGroup:
    """Errors sharing one fingerprint: how many, first and last seen, and one example."""

    fingerprint: str
    count: int
    first_seen: str
    last_seen: str
    example: str
    example_seq: int | None
    statuses: set[str]


def group_errors(entries: list[tuple[str, str, str, int | None]]) -> list[ErrorGroup]:
    """Group ``(timestamp, status, message, seq)`` entries, most frequent group first.

    The example is the newest message of its group; timestamps are ISO 8601 strings in one
    timezone, so they compare as text.
    """
    groups: dict[str, ErrorGroup] = {}
    for timestamp, status, message, seq in entries:
        key = fingerprint(message)
        group = groups.get(key)
        if group is None:
            groups[key] = ErrorGroup(key, 1, timestamp, timestamp, message, seq, {status})
            continue
        group.count += 1
        group.statuses.add(status)
        group.first_seen = min(group.first_seen, timestamp)
        if timestamp >= group.last_seen:
            group.last_seen, group.example, group.example_seq = timestamp, message, seq
    return sorted(groups.values(), key=lambda g: (-g.count, g.last_seen))
