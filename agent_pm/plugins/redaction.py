"""Redaction: masking secret values in text and values, however the text quotes them.

An error message rarely quotes a secret verbatim. ``repr()`` and JSON escape a newline, a
backslash or a quote; a URL percent-encodes; HTTP basic auth sends ``base64(user:secret)``, where
the secret's characters depend on the length of an unknown user name. A :class:`Redactor` knows
all of these forms of each value and replaces any of them with the mask, in one regular
expression compiled once per set of secrets.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import quote, quote_plus

__all__ = ["MASK", "MIN_REDACT_LENGTH", "NO_SECRETS", "Redactor", "quotings"]

MASK = "***"
# Values shorter than this are too likely to collide with ordinary text to be redacted by search.
MIN_REDACT_LENGTH = 4
# A base64 fragment shorter than this says too little about a secret to be worth masking.
_MIN_BASE64_FRAGMENT = 8
# Leading base64 characters that also carry bits of whatever precedes the value, by the value's
# offset in its 3-byte group.
_MIXED_LEADING = (0, 2, 3)


def _base64_fragments(value: str) -> set[str]:
    """The base64 characters that encode only ``value``'s bytes, at each of the three offsets a
    preceding ``user:`` can put it at (standard and URL-safe alphabets)."""
    fragments: set[str] = set()
    data = value.encode()
    for offset, mixed in enumerate(_MIXED_LEADING):
        whole = len(data) + offset
        encoded = base64.b64encode(b"\0" * offset + data).decode()
        # Characters after the last whole group also carry bits of whatever follows.
        fragment = encoded[mixed : 4 * (whole // 3)]
        if len(fragment) >= _MIN_BASE64_FRAGMENT:
            fragments.add(fragment)
            fragments.add(fragment.replace("+", "-").replace("/", "_"))
    return fragments


def quotings(value: str) -> set[str]:
    """Every form in which text may carry ``value``: itself, escaped, encoded."""
    forms = {
        value,
        repr(value)[1:-1],
        value.encode("unicode_escape").decode(),
        json.dumps(value)[1:-1],
        json.dumps(value, ensure_ascii=False)[1:-1],
        quote(value, safe=""),
        quote(value),
        quote_plus(value),
    }
    return {form for form in forms if len(form) >= MIN_REDACT_LENGTH} | _base64_fragments(value)


class Redactor:
    """Replaces every quoting of a set of secret values with :data:`MASK`."""

    __slots__ = ("_pattern",)

    def __init__(self, values: Iterable[str]) -> None:
        forms: set[str] = set()
        for value in values:
            if len(value) >= MIN_REDACT_LENGTH:
                forms |= quotings(value)
        # Longest first, so a form that contains another is masked whole.
        ordered = sorted(forms, key=lambda form: (-len(form), form))
        self._pattern = re.compile("|".join(map(re.escape, ordered))) if ordered else None

    def __bool__(self) -> bool:
        return self._pattern is not None

    def text(self, text: str) -> str:
        """``text`` with every quoting of a secret replaced by the mask."""
        return text if self._pattern is None else self._pattern.sub(MASK, text)

    def value(self, value: Any) -> Any:
        """``value`` with its strings redacted, through dicts, lists and tuples (keys too)."""
        if self._pattern is None:
            return value
        return self._walk(value)

    def _walk(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {self._walk(k): self._walk(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            items = [self._walk(v) for v in value]
            return tuple(items) if type(value) is tuple else items
        if isinstance(value, bytes):
            return self.text(value.decode(errors="replace"))
        return value


NO_SECRETS = Redactor(())
