"""Redaction masks a secret however text quotes it: repr, JSON, URL encoding, basic auth."""

from __future__ import annotations

import base64
import json
from urllib.parse import quote, quote_plus

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent_pm.plugins.redaction import MASK, Redactor

NASTY = [
    "line1\nline2-secret",
    "back\\slash-secret",
    "quo'te\"both-secret",
    "tab\there-secret",
    "ünïcödé-sëcret",
    "percent%20and+plus&amp=secret",
    "bell\x07ctl-secret",
]


def _leaks(secret: str, text: str) -> bool:
    return secret in text


@pytest.mark.parametrize("secret", NASTY)
def test_redaction_masks_repr_and_json_quotings(secret: str) -> None:
    redactor = Redactor([secret])
    for text in (
        f"failed: {secret!r}",
        f"failed: {[secret]!r}",
        f"failed: {({'token': secret},)!r}",
        json.dumps({"token": secret}),
        json.dumps({"token": secret}, ensure_ascii=False),
        f"url https://h/?t={quote(secret, safe='')}",
        f"url https://h/?t={quote_plus(secret)}",
        f"path https://h/{quote(secret)}",
    ):
        redacted = redactor.text(text)
        assert MASK in redacted
        for form in (secret, repr(secret)[1:-1], json.dumps(secret)[1:-1], quote_plus(secret)):
            assert form not in redacted, (text, redacted)


@pytest.mark.parametrize("user", ["", "a", "ab", "abc", "jira@example.com", "ünï"])
@pytest.mark.parametrize("secret", ["tok3n-s3cret-value", "line\nbreak-secret-xyz"])
def test_redaction_masks_basic_auth_of_user_and_secret(user: str, secret: str) -> None:
    header = httpx.BasicAuth(user, secret)._auth_header
    redacted = Redactor([secret]).text(f"request failed with Authorization: {header}")
    assert MASK in redacted
    # What is left of the encoding cannot give the secret back.
    leftover = redacted.split("Basic ")[1].replace(MASK, "")
    assert len(leftover) <= len(base64.b64encode(f"{user}:".encode())) + 4


def test_redaction_walks_values_and_keeps_their_shape() -> None:
    redactor = Redactor(["s3cr3t-value"])
    value = {"a": ["x s3cr3t-value", ("s3cr3t-value", 1)], "s3cr3t-value": None, "n": 2}
    assert redactor.value(value) == {"a": ["x ***", ("***", 1)], "***": None, "n": 2}
    assert Redactor([]).value(value) is value
    assert Redactor(["abc"]).text("abc") == "abc"  # too short to search for


@settings(max_examples=200, deadline=None)
@given(
    secret=st.text(min_size=8, max_size=40).filter(lambda s: s.strip() == s and len(set(s)) > 3),
    user=st.text(max_size=12),
)
def test_redaction_no_quoting_of_a_random_secret_survives(secret: str, user: str) -> None:
    try:
        secret.encode()
        user.encode()
    except UnicodeEncodeError:
        return
    redactor = Redactor([secret])
    basic = base64.b64encode(f"{user}:{secret}".encode()).decode()
    text = " | ".join(
        [repr(secret), json.dumps(secret), quote(secret, safe=""), quote_plus(secret), basic]
    )
    redacted = redactor.text(text)
    for form in (secret, repr(secret)[1:-1], json.dumps(secret)[1:-1], quote(secret, safe="")):
        assert form not in redacted
    assert basic not in redacted
