"""Helpers for the console's browser tests: logging in, watching live updates, running axe."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from tests.browser.conftest import LiveServer

DESKTOP = {"width": 1280, "height": 900}
NARROW = {"width": 1024, "height": 800}
PHONE = {"width": 390, "height": 844}
AXE = (Path(__file__).parent / "vendor" / "axe.min.js").read_text()


def open_console(browser: Any, server: LiveServer, key: str, path: str = "/dashboard",
                 **context: Any) -> Any:  # fmt: skip
    """A page logged in with ``key`` showing ``path``, its live channel connected."""
    from playwright.sync_api import expect

    page = browser.new_context(viewport=context.pop("viewport", DESKTOP), **context).new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on(
        "console", lambda m: errors.append(m.text) if "Content Security Policy" in m.text else None
    )
    page.errors = errors
    page.goto(f"{server.url}/login")
    page.get_by_label("API key").fill(key)
    page.get_by_role("button", name="Log in").click()
    expect(page).to_have_url(re.compile(r"/dashboard$"))
    if path != "/dashboard":
        page.goto(f"{server.url}{path}")
    expect(page.locator("#conn")).to_have_attribute("data-state", "live")
    # Set once; a full reload would lose it, so checks below prove updates arrive in place.
    page.evaluate("window.__sameDocument = true")
    return page


def same_document(page: Any) -> bool:
    return bool(page.evaluate("window.__sameDocument === true"))


def axe_violations(page: Any) -> list[dict[str, Any]]:
    """axe-core's violations on the page as it is now (injected without a script tag)."""
    if not page.evaluate("typeof window.axe !== 'undefined'"):
        page.evaluate(AXE)
    result = page.evaluate(
        """async () => (await axe.run(document, {resultTypes: ['violations']})).violations
            .map(v => ({id: v.id, impact: v.impact, help: v.help,
                        nodes: v.nodes.slice(0, 3).map(n => n.target.join(' '))}))"""
    )
    return list(result)
