"""In real Chromium, a page from another origin cannot act on the app or open its streams.

The app runs on a real uvicorn at 127.0.0.1; the attacker's page comes from a second server at
127.0.0.2 (another origin and another site; Linux routes all of 127/8 to loopback). The victim's
browser holds a valid admin dashboard session. The page auto-submits form posts to admin
endpoints and opens WebSockets to both streams; every attempt reaches the server and is refused,
and the registry does not change.
"""

from __future__ import annotations

import http.server
import re
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from msgspec import to_builtins as plain
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from agent_pm.api._app import create_app
from agent_pm.settings import Settings
from tests.api.conftest import ADMIN_KEY, MANIFEST, READ_KEY
from tests.browser.conftest import browser, require_chromium, serve

__all__ = ["browser"]

ATTACKER_HOST = "127.0.0.2"
FORM_TARGETS = ("/dashboard/plugins/echo/enabled", "/plugins/echo/disable")
SOCKETS = ("/plugins/stream", "/dashboard/live")
WAIT_SECONDS = 20


@dataclass
class Watch:
    """What reached the app from the attacker's origin, and what it answered."""

    attacker: str = ""
    statuses: dict[str, int] = field(default_factory=dict)
    handshakes: Counter[str] = field(default_factory=Counter)
    accepted: Counter[str] = field(default_factory=Counter)
    all_arrived: threading.Event = field(default_factory=threading.Event)

    def wrap(self, app: ASGIApp) -> ASGIApp:
        async def watched(scope: Scope, receive: Receive, send: Send) -> None:
            origin = Headers(scope=scope).get("origin") if scope["type"] != "lifespan" else None
            if origin != self.attacker:
                await app(scope, receive, send)
                return

            async def observe(message: Message) -> None:
                if message["type"] == "http.response.start":
                    self.statuses[scope["path"]] = message["status"]
                elif message["type"] == "websocket.accept":
                    self.accepted[scope["path"]] += 1
                await send(message)

            try:
                await app(scope, receive, observe)
            finally:
                if scope["type"] == "websocket":
                    self.handshakes[scope["path"]] += 1
                arrived = set(self.statuses) | set(self.handshakes)
                if arrived >= {*FORM_TARGETS, *SOCKETS}:
                    self.all_arrived.set()

        return watched


ATTACK_PAGE = """<!doctype html>
<html><body>
<iframe name="sink0"></iframe><iframe name="sink1"></iframe>
<form id="f0" method="POST" target="sink0" action="{app}/dashboard/plugins/echo/enabled">
  <input name="enabled" value="false"><input name="csrf_token" value="guess">
</form>
<form id="f1" method="POST" target="sink1" action="{app}/plugins/echo/disable">
  <input name="x" value="1">
</form>
<script>
window.events = [];
document.getElementById("f0").submit();
document.getElementById("f1").submit();
for (const path of ["/plugins/stream", "/dashboard/live"]) {{
  const ws = new WebSocket("{ws}" + path);
  for (const kind of ["open", "error", "close"]) {{
    ws.addEventListener(kind, () => window.events.push(path + " " + kind));
  }}
}}
</script>
</body></html>
"""


def _attacker_server(page: str) -> tuple[http.server.ThreadingHTTPServer, str]:
    body = page.encode()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer((ATTACKER_HOST, 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://{ATTACKER_HOST}:{server.server_address[1]}"


@pytest.fixture
def victim_app(tmp_path: Path) -> Iterator[tuple[Any, str, Watch]]:
    require_chromium()
    manifest = tmp_path / "plugins.yaml"
    manifest.write_text(MANIFEST)
    env = {"PLUGIN_CONFIG_PATH": str(manifest), "API_KEY": READ_KEY, "ADMIN_API_KEY": ADMIN_KEY}
    app = create_app(Settings.from_env(env), manifest_path=manifest, watch=False)
    watch = Watch()
    server, thread, url = serve(watch.wrap(app))
    yield app, url, watch
    server.should_exit = True
    thread.join(10)


def test_another_origin_cannot_post_or_open_streams(
    browser: Any, victim_app: tuple[Any, str, Watch]
) -> None:
    from playwright.sync_api import expect

    app, url, watch = victim_app
    context = browser.new_context()
    victim = context.new_page()
    victim.goto(f"{url}/login")
    victim.get_by_label("API key").fill(ADMIN_KEY)
    victim.get_by_role("button", name="Log in").click()
    expect(victim).to_have_url(re.compile(r"/dashboard$"))
    # The session works: the victim's own page holds its live channel open.
    expect(victim.locator("#conn")).to_have_attribute("data-state", "live")
    assert any(c["name"] == "agent_pm_session" for c in context.cookies())

    registry = app.state.registry
    revision = registry.revision
    attacker, origin = _attacker_server(
        ATTACK_PAGE.format(app=url, ws=url.replace("http", "ws", 1))
    )
    watch.attacker = origin
    try:
        page = context.new_page()
        page.goto(origin)
        assert watch.all_arrived.wait(WAIT_SECONDS), (watch.statuses, watch.handshakes)
        page.wait_for_function(
            "window.events.filter(e => e.endsWith(' close')).length === 2",
            timeout=WAIT_SECONDS * 1000,
        )
        events = page.evaluate("window.events")
    finally:
        attacker.shutdown()
        attacker.server_close()
        context.close()

    assert watch.statuses["/dashboard/plugins/echo/enabled"] == 403
    assert watch.statuses["/plugins/echo/disable"] == 401  # a cookie never stands for a key
    assert watch.handshakes == Counter(SOCKETS) and watch.accepted == Counter()
    assert not any(e.endswith(" open") for e in events), events
    assert registry.revision == revision
    assert plain(registry.metadata_for("echo"))["active"]
