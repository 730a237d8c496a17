"""Session cookies: signing, expiry, tampering, key rotation, revocation, CSRF, the scope reader."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from agent_pm.api._security import ApiKeys, Caller, NamedKeys, named_key_line
from agent_pm.api._session import (
    COOKIE_NAME,
    MAX_REVOKED,
    SessionManager,
    _b64,
    caller_from_session,
    csrf_ok,
    session_from_scope,
    sessions_for,
)
from agent_pm.settings import Settings

ADMIN_KEY, READ_KEY = "admin-key-0123456789", "read-key-0123456789"
KEYS = ApiKeys(admin=ADMIN_KEY, read=READ_KEY)
ADMIN = Caller("ADMIN_API_KEY", "admin")
READ = Caller("API_KEY", "read")


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_session_issue_then_load_round_trips() -> None:
    manager = SessionManager(KEYS, "secret")
    cookie, session = manager.issue(ADMIN)
    loaded = manager.load(cookie)
    assert loaded == session
    assert loaded is not None and loaded.is_admin and len(loaded.csrf) >= 24
    assert loaded.caller == ADMIN


def test_session_issue_refuses_unknown_role() -> None:
    with pytest.raises(ValueError, match="unknown role"):
        SessionManager(KEYS, "secret").issue(Caller("x", "root"))  # type: ignore[arg-type]


def test_session_expires() -> None:
    clock = Clock()
    manager = SessionManager(KEYS, "secret", lifetime=60, clock=clock)
    cookie, _ = manager.issue(READ)
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
    cookie, _ = manager.issue(READ)
    assert manager.load(tamper(cookie)) is None


def test_session_forged_role_with_valid_signature_shape_is_refused() -> None:
    manager = SessionManager(KEYS, "secret")
    cookie, _ = manager.issue(READ)
    forged = SessionManager(KEYS, "other secret").issue(ADMIN)[0]
    assert manager.load(forged) is None
    assert manager.load(cookie) is not None


def test_session_malformed_body_with_good_signature_is_refused() -> None:
    manager = SessionManager(KEYS, "secret")
    bodies = [
        "admin.notanumber.csrf..ADMIN_API_KEY",
        "admin.1",
        "root.99999999999.csrf..ADMIN_API_KEY",
        "admin.99999999999.csrf",
    ]
    for body in bodies:
        cookie = f"{_b64(body.encode())}.{manager._sign(body)}"
        assert manager.load(cookie) is None


def test_session_key_rotation_ends_old_sessions() -> None:
    cookie, _ = SessionManager(KEYS, "secret").issue(ADMIN)
    rotated = SessionManager(ApiKeys(admin="another-admin-key-0123", read=READ_KEY), "secret")
    assert rotated.load(cookie) is None
    assert SessionManager(KEYS, "secret").load(cookie) is not None


def test_session_random_secret_differs_per_manager() -> None:
    cookie, _ = SessionManager(KEYS).issue(ADMIN)
    assert SessionManager(KEYS).load(cookie) is None


def test_session_revoked_cookie_stops_working_and_others_go_on() -> None:
    manager = SessionManager(KEYS, "secret")
    revoked, session = manager.issue(ADMIN)
    other, _ = manager.issue(ADMIN)
    manager.revoke(session)
    assert manager.load(revoked) is None
    assert manager.load(other) is not None


def test_session_revocations_past_the_bound_end_every_session() -> None:
    clock = Clock()
    manager = SessionManager(KEYS, "secret", clock=clock)
    kept, _ = manager.issue(READ)
    for _ in range(MAX_REVOKED + 1):
        manager.revoke(manager.issue(READ)[1])
    assert len(manager._revoked) <= MAX_REVOKED
    assert manager.load(kept) is None  # the signing key changed rather than forget a revocation


def test_session_of_a_named_key_ends_when_the_key_is_rotated_or_revoked(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    path.write_text(named_key_line("ci-bot", "admin", "ci-bot-key-0123456789") + "\n")
    keys = ApiKeys(named=NamedKeys(path))
    manager = SessionManager(keys, "secret")
    caller = keys.caller_for("ci-bot-key-0123456789")
    assert caller == Caller("ci-bot", "admin")
    cookie, _ = manager.issue(caller)
    assert manager.load(cookie) is not None
    path.write_text(named_key_line("ci-bot", "admin", "ci-bot-key-rotated-0000") + "\n")
    assert keys.named is not None and keys.named.refresh()
    assert manager.load(cookie) is None
    cookie, _ = manager.issue(Caller("ci-bot", "admin"))
    path.write_text("# nobody\n")
    assert keys.named.refresh()
    assert manager.load(cookie) is None


def test_csrf_ok_needs_session_and_matching_token() -> None:
    _, session = SessionManager(KEYS, "secret").issue(ADMIN)
    assert csrf_ok(session, session.csrf)
    assert not csrf_ok(session, session.csrf + "x")
    assert not csrf_ok(session, None)
    assert not csrf_ok(None, session.csrf)


def _app(**state: Any) -> Any:
    return SimpleNamespace(state=SimpleNamespace(**state))


def _scope(app: Any, cookie: str | None) -> dict[str, Any]:
    headers = [(b"cookie", cookie.encode())] if cookie is not None else []
    return {"type": "http", "app": app, "headers": headers}


def test_caller_from_session_reads_the_cookie_of_a_scope() -> None:
    env = {"API_KEY": READ_KEY, "ADMIN_API_KEY": ADMIN_KEY, "SESSION_SECRET": "s"}
    app = _app(settings=Settings.from_env(env))
    cookie, _ = sessions_for(app).issue(READ)
    assert caller_from_session(_scope(app, f"other=1; {COOKIE_NAME}={cookie}")) == READ
    assert caller_from_session(_scope(app, "other=1")) is None
    assert caller_from_session(_scope(app, None)) is None
    assert caller_from_session(_scope(app, f"{COOKIE_NAME}=bogus")) is None
    assert caller_from_session(_scope(app, '"unbalanced; =;;')) is None
    assert caller_from_session({"type": "http", "headers": []}) is None


def test_sessions_for_falls_back_to_registry_settings_and_key_override() -> None:
    settings = Settings.from_env({"API_KEY": READ_KEY, "SESSION_SECRET": "s"})
    app = _app(registry=SimpleNamespace(settings=settings))
    assert sessions_for(app).keys.role_for(READ_KEY) == "admin"
    assert sessions_for(app) is sessions_for(app)
    overridden = _app(settings=settings, api_keys=ApiKeys(admin="generated-key-0123456789"))
    assert sessions_for(overridden).keys.role_for("generated-key-0123456789") == "admin"
    assert sessions_for(overridden).keys.role_for(READ_KEY) is None


def test_session_from_scope_returns_the_session() -> None:
    app = _app(settings=Settings.from_env({"API_KEY": READ_KEY}))
    cookie, session = sessions_for(app).issue(Caller("API_KEY", "admin"))
    assert session_from_scope(_scope(app, f"{COOKIE_NAME}={cookie}")) == session
