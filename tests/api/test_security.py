"""The security rules: named keys and their file, key lookups, origins, addresses, throttling."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from starlette.requests import HTTPConnection

from agent_pm.api._security import (
    ApiKeys,
    Caller,
    NamedKeys,
    Throttle,
    client_address,
    key_in_query,
    named_key_line,
    same_origin,
)
from agent_pm.settings import Settings

CI_KEY = "ci-bot-key-0123456789abcdef"
VIEWER_KEY = "viewer-key-0123456789abcdef"


@pytest.fixture
def keys_file(tmp_path: Path) -> Path:
    path = tmp_path / "keys"
    path.write_text(
        "# named keys\n"
        f"{named_key_line('ci-bot', 'admin', CI_KEY)}\n"
        "\n"
        f"{named_key_line('viewer', 'read', VIEWER_KEY)}  # dashboards\n"
    )
    return path


def test_named_keys_from_the_file_name_their_caller(keys_file: Path) -> None:
    env = {"ADMIN_API_KEY": "admin-key-0123456789", "API_KEYS_FILE": str(keys_file)}
    keys = ApiKeys.from_settings(Settings.from_env(env))
    assert keys.caller_for(CI_KEY) == Caller("ci-bot", "admin")
    assert keys.caller_for(VIEWER_KEY) == Caller("viewer", "read")
    assert keys.caller_for("admin-key-0123456789") == Caller("ADMIN_API_KEY", "admin")
    assert keys.caller_for(CI_KEY + "x") is None
    assert CI_KEY not in keys_file.read_text()


def test_a_keys_file_alone_generates_no_key(keys_file: Path) -> None:
    keys = ApiKeys.from_settings(Settings.from_env({"API_KEYS_FILE": str(keys_file)}))
    assert (keys.admin, keys.generated) == (None, False)
    assert keys.caller_for("") is None


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("ci admin sha256:abc\n", "line 1: expected `NAME ROLE sha256:HEX`"),
        (f"ci root sha256:{'a' * 64}\n", "role must be read or admin"),
        (f"-ci admin sha256:{'a' * 64}\n", "not a valid key name"),
        (f"ADMIN_API_KEY admin sha256:{'a' * 64}\n", "not a valid key name"),
        (f"ci admin sha256:{'a' * 64}\n# x\nci read sha256:{'b' * 64}\n", "line 3: the name"),
        (f"ci admin md5:{'a' * 32}\n", "expected"),
    ],
)
def test_a_malformed_keys_file_stops_the_start(tmp_path: Path, text: str, problem: str) -> None:
    path = tmp_path / "keys"
    path.write_text(text)
    with pytest.raises(ValueError, match=problem):
        ApiKeys.from_settings(Settings.from_env({"API_KEYS_FILE": str(path)}))


def test_a_missing_keys_file_stops_the_start(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="cannot be read"):
        NamedKeys(tmp_path / "absent")


def test_keys_file_changes_apply_without_restart(
    keys_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    named = NamedKeys(keys_file)
    keys = ApiKeys(named=named)
    assert not named.refresh()  # same digest: nothing to do
    rotated = "ci-bot-rotated-key-0123456789"
    keys_file.write_text(named_key_line("ci-bot", "admin", rotated) + "\n")
    assert named.refresh()
    assert (keys.caller_for(CI_KEY), keys.caller_for(rotated)) == (None, Caller("ci-bot", "admin"))
    assert keys.caller_for(VIEWER_KEY) is None  # revoked by leaving it out

    keys_file.write_text("this is not a key line\n")
    with caplog.at_level(logging.ERROR):
        assert not named.refresh()
    assert "previous keys stay" in caplog.text
    assert keys.caller_for(rotated) == Caller("ci-bot", "admin")

    keys_file.unlink()
    assert named.refresh()
    assert keys.caller_for(rotated) is None


def test_named_key_line_refuses_short_keys_and_bad_names() -> None:
    with pytest.raises(ValueError, match="at least 16"):
        named_key_line("ci", "admin", "short")
    with pytest.raises(ValueError, match="key name"):
        named_key_line("two words", "admin", CI_KEY)
    with pytest.raises(ValueError, match="role"):
        named_key_line("ci", "owner", CI_KEY)


def test_fingerprints_follow_the_key(keys_file: Path) -> None:
    keys = ApiKeys(admin="admin-key-0123456789", named=NamedKeys(keys_file))
    assert keys.fingerprint_of(Caller("ADMIN_API_KEY", "admin")) == ""
    fingerprint = keys.fingerprint_of(Caller("ci-bot", "admin"))
    assert fingerprint and CI_KEY not in fingerprint
    assert keys.fingerprint_of(Caller("ci-bot", "read")) is None  # another role: not this key
    assert keys.fingerprint_of(Caller("nobody", "read")) is None


def _conn(headers: dict[str, str], scheme: str = "http") -> HTTPConnection:
    raw = [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    scope = {"type": "http", "scheme": scheme, "path": "/", "headers": raw, "server": None}
    return HTTPConnection(scope)


@pytest.mark.parametrize(
    ("origin", "same"),
    [
        (None, True),
        ("http://example.test:8000", True),
        ("HTTP://Example.Test:8000", True),
        ("https://example.test:8000", False),
        ("http://example.test", False),
        ("http://evil.test:8000", False),
        ("null", False),
        ("http://example.test:8000.evil.test", False),
        ("http://example.test:99999", False),
    ],
)
def test_same_origin_compares_scheme_host_and_port(origin: str | None, same: bool) -> None:
    headers = {"host": "example.test:8000"}
    if origin is not None:
        headers["origin"] = origin
    assert same_origin(_conn(headers)) is same


def test_client_address_groups_ipv6_by_64_network() -> None:
    assert client_address({"client": ("127.0.0.2", 5)}) == "127.0.0.2"
    one = client_address({"client": ("2001:db8::1", 5)})
    assert one == client_address({"client": ("2001:db8::ffff:1", 5)}) == "2001:db8::/64"
    assert client_address({"client": None}) == "unknown"
    assert client_address({"client": ("testclient", 5)}) == "testclient"


@pytest.mark.parametrize(
    ("query", "found"),
    [
        (b"api_key=x", True),
        (b"limit=2&X-API-Key=x", True),
        (b"apikey=", True),
        (b"key=value", False),
        (b"limit=2", False),
        (b"", False),
    ],
)
def test_key_in_query(query: bytes, found: bool) -> None:
    assert key_in_query({"query_string": query}) is found


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_throttle_blocks_one_address_after_its_burst_and_drains() -> None:
    clock = Clock()
    throttle = Throttle(burst=5, period=50.0, clock=clock)  # drains one per 10 s
    for _ in range(4):
        throttle.failed("a")
        assert throttle.retry_after("a") is None
    throttle.failed("a")
    assert throttle.retry_after("a") == 10
    assert throttle.retry_after("b") is None  # others go on
    clock.now += 9.5
    assert throttle.retry_after("a") == 1
    clock.now += 0.5
    assert throttle.retry_after("a") is None
    throttle.failed("a")
    assert throttle.retry_after("a") == 10


def test_throttle_remembers_a_bounded_number_of_addresses() -> None:
    throttle = Throttle(burst=1, max_clients=3, clock=Clock())
    for address in ("a", "b", "c", "d"):
        throttle.failed(address)
    assert throttle.retry_after("a") is None  # forgotten, the oldest
    assert all(throttle.retry_after(address) for address in ("b", "c", "d"))
