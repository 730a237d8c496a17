"""axe-core on every console page in light and dark mode, and the review screenshots."""

from __future__ import annotations

from typing import Any

import pytest

from tests.api.dashboard_app import ADMIN_KEY, READ_KEY
from tests.browser.conftest import ARTIFACTS, LiveServer
from tests.browser.console import PHONE, axe_violations, open_console

PAGES = [
    "/dashboard",
    "/dashboard?sort=calls&health=enabled",
    "/dashboard/plugins/failing",
    "/dashboard/plugins/failing?status=error",
    "/dashboard/plugins/needs_token",
    "/dashboard/plugins/broken",
    "/dashboard/plugins/ghost",
    "/dashboard/admin",
    "/dashboard/activity",
    "/dashboard?window=24h",
    "/dashboard/plugins/echo?window=all",
]


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_axe_finds_no_violation_on_any_page(
    browser: Any, live_server: LiveServer, scheme: str
) -> None:
    live_server.fire(times=5)
    context = browser.new_context(color_scheme=scheme)
    login = context.new_page()
    login.goto(f"{live_server.url}/login")
    assert axe_violations(login) == [], "login"
    context.close()
    page = open_console(browser, live_server, ADMIN_KEY, color_scheme=scheme)
    for path in PAGES:
        page.goto(f"{live_server.url}{path}")
        assert axe_violations(page) == [], path
    # The admin page with the state a conflict leaves behind, and an open removal form.
    page.goto(f"{live_server.url}/dashboard/admin")
    card = page.locator("#admin-configured")
    page.evaluate(
        """() => document.querySelectorAll('#admin-configured input[name=revision]')
            .forEach(i => { i.value = '0'; i.nextElementSibling.value = '{}'; })"""
    )
    card.get_by_role("button", name="Save settings").click()
    card = page.locator("#admin-configured")
    card.locator(".conflict").wait_for()
    card.locator("summary").click()
    assert axe_violations(page) == [], "admin with a conflict"
    live_server.set_config("configured", {"retries": 4})
    page.goto(f"{live_server.url}/dashboard/activity")
    page.locator("#activity-body tr[data-audit]").first.wait_for()
    assert axe_violations(page) == [], "activity with records"
    page.context.close()


def test_read_only_pages_are_accessible_too(browser: Any, live_server: LiveServer) -> None:
    page = open_console(browser, live_server, READ_KEY)
    for path in ["/dashboard", "/dashboard/plugins/echo", "/dashboard/admin"]:
        page.goto(f"{live_server.url}{path}")
        assert axe_violations(page) == [], path
    page.context.close()


SHOTS = [("1280", {}), ("390", {"viewport": PHONE}), ("dark", {"color_scheme": "dark"})]


@pytest.mark.parametrize(("name", "options"), SHOTS, ids=[name for name, _ in SHOTS])
def test_screenshots_for_review(
    browser: Any, live_server: LiveServer, name: str, options: dict[str, Any]
) -> None:
    from playwright.sync_api import expect

    live_server.fire(times=40)
    live_server.fire("pre_plan", times=5)
    page = open_console(browser, live_server, ADMIN_KEY, **options)
    expect(page.locator("#c-failing-ratio")).to_have_text("100 %")
    page.screenshot(path=ARTIFACTS / f"console-overview-{name}.png", full_page=True)
    page.goto(f"{live_server.url}/dashboard/plugins/failing")
    expect(page.locator("#latency-chart svg")).to_be_visible()
    page.screenshot(path=ARTIFACTS / f"console-plugin-failing-{name}.png", full_page=True)
    page.context.close()
