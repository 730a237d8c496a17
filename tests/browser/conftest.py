"""The real app on a real uvicorn, and Debian's chromium driven by Playwright."""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from starlette.routing import Route

from agent_pm.api._app import create_app
from tests.api.dashboard_app import ADMIN_KEY, MANIFEST, TWICE, dashboard_settings, drop_live

CHROMIUM = Path("/usr/bin/chromium")

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
LAUNCH_ARGS = [
    "--no-sandbox",
    "--disable-background-networking",
    "--disable-gpu",
    "--disable-dev-shm-usage",
]


def require_chromium() -> None:
    if CHROMIUM.exists():
        return
    if os.environ.get("CI"):
        pytest.fail(f"{CHROMIUM} is missing in CI: install Debian's chromium package")
    pytest.skip(f"{CHROMIUM} is not installed (apt-get install -y chromium); browser tests skipped")


@dataclass
class LiveServer:
    url: str
    manifest: Path
    app: Any
    server: Any = None
    thread: Any = None

    def fire(self, hook: str = "post_plan", times: int = 1) -> None:
        with httpx.Client(base_url=self.url, headers={"X-API-Key": ADMIN_KEY}) as client:
            for _ in range(times):
                client.post(f"/hooks/{hook}").raise_for_status()

    def drop_live(self) -> None:
        with httpx.Client(base_url=self.url, headers={"X-API-Key": ADMIN_KEY}) as client:
            client.post("/test/drop-live").raise_for_status()

    def set_enabled(self, name: str, enabled: bool) -> None:
        action = "enable" if enabled else "disable"
        with httpx.Client(base_url=self.url, headers={"X-API-Key": ADMIN_KEY}) as client:
            client.post(f"/plugins/{name}/{action}").raise_for_status()

    def set_config(self, name: str, config: dict[str, Any]) -> None:
        with httpx.Client(base_url=self.url, headers={"X-API-Key": ADMIN_KEY}) as client:
            client.post(f"/plugins/{name}/config", json={"config": config}).raise_for_status()

    def stop(self) -> None:
        """Stop the server now (the fixture's teardown then has nothing left to do)."""
        self.server.should_exit = True
        self.thread.join(10)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def serve(app: Any) -> tuple[uvicorn.Server, threading.Thread, str]:
    port = _free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    started = threading.Event()
    for _ in range(200):
        if server.started:
            started.set()
            break
        threading.Event().wait(0.025)
    assert started.is_set(), "uvicorn did not start"
    return server, thread, f"http://127.0.0.1:{port}"


def _live_server(tmp_path: Path, *, watch: bool, text: str = MANIFEST) -> Iterator[LiveServer]:
    manifest = tmp_path / "plugins.yaml"
    manifest.write_text(text)
    # The real application, plus one test-only route that drops every live subscription.
    app = create_app(dashboard_settings(manifest), manifest_path=manifest, watch=watch)
    app.router.routes.append(Route("/test/drop-live", drop_live, methods=["POST"]))
    server, thread, url = serve(app)
    yield LiveServer(url, manifest, app, server, thread)
    server.should_exit = True
    thread.join(10)


@pytest.fixture
def live_server(tmp_path: Path) -> Iterator[LiveServer]:
    yield from _live_server(tmp_path, watch=False)


@pytest.fixture
def watched_server(tmp_path: Path) -> Iterator[LiveServer]:
    """The app watching its manifest file, as ``agent-pm serve`` does by default."""
    yield from _live_server(tmp_path, watch=True)


@pytest.fixture
def twice_server(tmp_path: Path) -> Iterator[LiveServer]:
    """The app with one plugin failing on two hooks, each quarantined after three calls."""
    yield from _live_server(tmp_path, watch=False, text=TWICE)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    require_chromium()
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=LAUNCH_ARGS)
        yield chromium
        chromium.close()
