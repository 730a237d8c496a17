"""Session cookies: signing, expiry, tampering, key rotation, CSRF and the scope reader."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from agent_pm.api.session import (
    COOKIE_NAME,
    SessionManager,
    csrf_ok,
    key_roles,
    role_from_session,
    session_from_scope,
    sessions_for,
)
from agent_pm.settings import Settings

KEYS = {"admin-key": "admin", "read-key": "read"}


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_key_roles_admin_key_is_admin_and_api_key_is_read() -> None:
    settings = Settings.from_env({"API_KEY": "r", "ADMIN_API_KEY": "a"})
    assert key_roles(settings) == {"r": "read", "a": "admin"}


def test_key_roles_single_api_key_is_admin() -> None:
    assert key_roles(Settings.from_env({"API_KEY": "only"})) == {"only": "admin"}
    assert key_roles(Settings.from_env({"ADMIN_API_KEY": "a"})) == {"a": "admin"}
    assert key_roles(Settings.from_env({})) == {}


def test_session_role_for_key_matches_only_configured_keys() -> None:
    manager = SessionManager(KEYS, "secret")
    assert manager.role_for_key("admin-key") == "admin"
    assert manager.role_for_key("read-key") == "read"
    assert manager.role_for_key("read-key ") is None
    assert manager.role_for_key("") is None


def test_session_issue_then_load_round_trips() -> None:
    manager = SessionManager(KEYS, "secret")
    cookie, session = manager.issue("admin")
    loaded = manager.load(cookie)
    assert loaded == session
    assert loaded is not None and loaded.is_admin and len(loaded.csrf) >= 24


def test_session_issue_refuses_unknown_role() -> None:
    with pytest.raises(ValueError, match="unknown role"):
        SessionManager(KEYS, "secret").issue("root")


def test_session_expires() -> None:
    clock = Clock()
    manager = SessionManager(KEYS, "secret", lifetime=60, clock=clock)
    cookie, _ = manager.issue("read")
    clock.now += 59
    assert manager.load(cookie) is not None
    clock.now += 1
    assert manager.load(cookie) is None


@pytest.mark.parametrize(
    "tamper",
    [
        lambda c: c[:-2] + ("AA" if not c.endswith("AA") else "BB"),
        lambda c: "cmVhZC45OTk5OTk5OTk5LnRva2Vu" + c[c.index(".") :],
        lambda c: c.replace(".", ""),
        lambda c: "!!!." + c.split(".")[1],
        lambda c: "",
        lambda c: c + ".extra",
    ],
)
def test_session_tampered_cookie_is_refused(tamper: Any) -> None:
    manager = SessionManager(KEYS, "secret")
    cookie, _ = manager.issue("read")
    assert manager.load(tamper(cookie)) is None


def test_session_forged_role_with_valid_signature_shape_is_refused() -> None:
    manager = SessionManager(KEYS, "secret")
    cookie, _ = manager.issue("read")
    forged = SessionManager(KEYS, "other secret").issue("admin")[0]
    assert manager.load(forged) is None
    assert manager.load(cookie) is not None


def test_session_malformed_body_with_good_signature_is_refused() -> None:
    manager = SessionManager(KEYS, "secret")
    for body in ["admin.notanumber.csrf", "admin.1", "root.99999999999.csrf"]:
        from agent_pm.api.session import _b64

        cookie = f"{_b64(body.encode())}.{manager._sign(body)}"
        assert manager.load(cookie) is None


def test_session_key_rotation_ends_old_sessions() -> None:
    cookie, _ = SessionManager(KEYS, "secret").issue("admin")
    rotated = SessionManager({**KEYS, "admin-key": "read"}, "secret")
    assert rotated.load(cookie) is None
    assert SessionManager(KEYS, "secret").load(cookie) is not None


def test_session_random_secret_differs_per_manager() -> None:
    cookie, _ = SessionManager(KEYS).issue("admin")
    assert SessionManager(KEYS).load(cookie) is None


def test_csrf_ok_needs_session_and_matching_token() -> None:
    _, session = SessionManager(KEYS, "secret").issue("admin")
    assert csrf_ok(session, session.csrf)
    assert not csrf_ok(session, session.csrf + "x")
    assert not csrf_ok(session, None)
    assert not csrf_ok(None, session.csrf)


def _app(**state: Any) -> Any:
    return SimpleNamespace(state=SimpleNamespace(**state))


def _scope(app: Any, cookie: str | None) -> dict[str, Any]:
    headers = [(b"cookie", cookie.encode())] if cookie is not None else []
    return {"type": "http", "app": app, "headers": headers}


def test_role_from_session_reads_the_cookie_of_a_scope() -> None:
    settings = Settings.from_env({"API_KEY": "r", "ADMIN_API_KEY": "a", "SESSION_SECRET": "s"})
    app = _app(settings=settings)
    cookie, _ = sessions_for(app).issue("read")
    assert role_from_session(_scope(app, f"other=1; {COOKIE_NAME}={cookie}")) == "read"
    assert role_from_session(_scope(app, "other=1")) is None
    assert role_from_session(_scope(app, None)) is None
    assert role_from_session(_scope(app, f"{COOKIE_NAME}=bogus")) is None
    assert role_from_session(_scope(app, '"unbalanced; =;;')) is None
    assert role_from_session({"type": "http", "headers": []}) is None


def test_sessions_for_falls_back_to_registry_settings_and_key_override() -> None:
    settings = Settings.from_env({"API_KEY": "r", "SESSION_SECRET": "s"})
    app = _app(registry=SimpleNamespace(settings=settings))
    assert sessions_for(app).role_for_key("r") == "admin"
    assert sessions_for(app) is sessions_for(app)
    overridden = _app(settings=settings, api_keys={"generated": "admin"})
    assert sessions_for(overridden).role_for_key("generated") == "admin"
    assert sessions_for(overridden).role_for_key("r") is None


def test_session_from_scope_returns_the_session() -> None:
    app = _app(settings=Settings.from_env({"API_KEY": "r"}))
    cookie, session = sessions_for(app).issue("admin")
    assert session_from_scope(_scope(app, f"{COOKIE_NAME}={cookie}")) == session
