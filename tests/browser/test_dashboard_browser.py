"""The dashboard in a real browser against a real server: live updates, admin flows, refusals."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest

from tests.api.dashboard_app import ADMIN_KEY, READ_KEY, SECRET_VALUE
from tests.browser.conftest import ARTIFACTS, LiveServer

PLUGINS = ["echo", "configured", "failing", "secretive", "needs_token", "broken"]
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}


def open_dashboard(browser: Any, server: LiveServer, key: str, **context: Any) -> Any:
    from playwright.sync_api import expect

    page = browser.new_context(viewport=context.pop("viewport", DESKTOP), **context).new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on(
        "console", lambda m: errors.append(m.text) if "Content Security Policy" in m.text else None
    )
    page.errors = errors
    page.goto(f"{server.url}/dashboard")
    expect(page).to_have_url(re.compile(r"/login$"))
    page.get_by_label("API key").fill(key)
    page.get_by_role("button", name="Log in").click()
    expect(page).to_have_url(re.compile(r"/dashboard$"))
    expect(page.locator("#conn")).to_have_attribute("data-state", "live")
    # Set once; a full reload would lose it, so the checks below prove updates arrive in place.
    page.evaluate("window.__sameDocument = true")
    return page


def same_document(page: Any) -> bool:
    return bool(page.evaluate("window.__sameDocument === true"))


def cell(page: Any, plugin: str, metric: str) -> Any:
    return page.locator(f"#row-{plugin} [data-metric={metric}]")


@pytest.fixture
def admin_page(browser: Any, live_server: LiveServer) -> Iterator[Any]:
    page = open_dashboard(browser, live_server, ADMIN_KEY)
    yield page
    assert page.errors == []
    page.context.close()


def test_login_shows_every_plugin_and_the_empty_state(admin_page: Any) -> None:
    from playwright.sync_api import expect

    for name in PLUGINS:
        expect(admin_page.locator(f"#row-{name}")).to_be_visible()
    expect(admin_page.locator("#row-broken")).to_contain_text("Invalid entry:")
    expect(admin_page.locator("#hooks-panel")).to_contain_text("No hooks fired yet")
    expect(admin_page.locator("#conn")).to_contain_text("live")
    assert SECRET_VALUE not in admin_page.content()


def test_fired_hooks_move_counters_chart_and_history_without_reload(
    admin_page: Any, live_server: LiveServer
) -> None:
    from playwright.sync_api import expect

    live_server.fire(times=3)
    expect(cell(admin_page, "echo", "invocations")).to_have_text("3")
    expect(cell(admin_page, "failing", "failures")).to_have_text("3")
    expect(admin_page.locator("#hook-chart")).to_contain_text("post_plan")
    expect(admin_page.locator("#timeline-panel .mark")).to_have_count(3)
    expect(admin_page.locator("#history-body tr")).to_have_count(3)

    admin_page.select_option("#pair", "failing:post_plan")
    expect(admin_page.locator("#timeline-panel .m-error")).to_have_count(3)
    live_server.fire()
    expect(admin_page.locator("#timeline-panel .m-error")).to_have_count(4)
    first = admin_page.locator("#history-body tr").first
    expect(first).to_contain_text("handler exploded")
    expect(cell(admin_page, "failing", "failures")).to_have_text("4")
    admin_page.screenshot(path=ARTIFACTS / "dashboard-desktop.png", full_page=True)
    assert same_document(admin_page)


def test_dropped_channel_reconnects_and_resumes_without_losing_samples(
    admin_page: Any, live_server: LiveServer
) -> None:
    from playwright.sync_api import expect

    admin_page.evaluate(
        """() => {
            window.__states = [];
            new MutationObserver(() => window.__states.push(
                document.getElementById('conn').dataset.state
            )).observe(document.getElementById('conn'), {attributes: true});
        }"""
    )
    live_server.fire(times=2)
    expect(cell(admin_page, "echo", "invocations")).to_have_text("2")
    live_server.drop_live()
    live_server.fire(times=3)
    admin_page.wait_for_function("window.__states.includes('reconnecting')")
    expect(admin_page.locator("#conn")).to_have_attribute("data-state", "live")
    expect(cell(admin_page, "echo", "invocations")).to_have_text("5")
    expect(admin_page.locator("#history-body tr")).to_have_count(5)
    assert same_document(admin_page)


def test_toggle_then_a_change_made_elsewhere_shows_up(
    admin_page: Any, live_server: LiveServer
) -> None:
    from playwright.sync_api import expect

    card = admin_page.locator("#admin-echo")
    card.get_by_role("button", name="Disable").click()
    expect(admin_page.locator("#row-echo")).to_contain_text("disabled")
    expect(card.get_by_role("button", name="Enable")).to_be_visible()
    assert "enabled: false" in live_server.manifest.read_text()

    live_server.set_enabled("echo", True)
    expect(admin_page.locator("#row-echo .badge")).to_have_text(re.compile("enabled"))
    expect(card.get_by_role("button", name="Disable")).to_be_visible()
    assert same_document(admin_page)


def test_invalid_config_shows_the_inline_error_and_saves_nothing(
    admin_page: Any, live_server: LiveServer
) -> None:
    from playwright.sync_api import expect

    before = live_server.manifest.read_text()
    card = admin_page.locator("#admin-configured")
    card.locator("textarea").fill('{"channel": "#ops", "retries": "many"}')
    card.get_by_role("button", name="Save config").click()
    error_row = card.locator("tr.invalid")
    expect(error_row).to_contain_text("retries")
    expect(error_row.locator(".field-error")).to_contain_text("Expected `int`, got `str`")
    expect(card.locator("textarea")).to_have_attribute("aria-invalid", "true")
    assert live_server.manifest.read_text() == before
    card.scroll_into_view_if_needed()
    card.screenshot(path=ARTIFACTS / "config-error.png")


def test_read_only_session_has_no_admin_controls_and_forged_posts_fail(
    browser: Any, live_server: LiveServer
) -> None:
    from playwright.sync_api import expect

    page = open_dashboard(browser, live_server, READ_KEY)
    expect(page.locator("#row-echo")).to_be_visible()
    expect(page.locator("#admin")).to_have_count(0)
    expect(page.get_by_role("button", name="Disable")).to_have_count(0)
    statuses = page.evaluate(
        """async () => {
            const form = {'Content-Type': 'application/x-www-form-urlencoded'};
            const post = (body) => fetch('/dashboard/plugins/echo/enabled', {
                method: 'POST', body, headers: form});
            const noToken = await post('enabled=false');
            const forged = await post('enabled=false&csrf_token=forged');
            return [noToken.status, forged.status];
        }"""
    )
    assert statuses == [403, 403]
    expect(page.locator("#row-echo .badge")).to_have_text(re.compile("enabled"))
    page.context.close()


def test_admin_forged_post_without_csrf_is_refused(admin_page: Any) -> None:
    status = admin_page.evaluate(
        """async () => (await fetch('/dashboard/plugins/echo/enabled', {method: 'POST',
            body: 'enabled=false',
            headers: {'Content-Type': 'application/x-www-form-urlencoded'}})).status"""
    )
    assert status == 403


def test_phone_width_and_dark_mode_screenshots(browser: Any, live_server: LiveServer) -> None:
    from playwright.sync_api import expect

    page = open_dashboard(browser, live_server, ADMIN_KEY, viewport=PHONE)
    live_server.fire(times=4)
    expect(cell(page, "echo", "invocations")).to_have_text("4")
    expect(page.locator("#history-body tr")).to_have_count(4)
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= PHONE["width"], f"page scrolls sideways at phone width ({width}px)"
    page.screenshot(path=ARTIFACTS / "dashboard-phone.png", full_page=True)
    page.screenshot(path=ARTIFACTS / "dashboard-phone-top.png")
    page.locator("#timeline").screenshot(path=ARTIFACTS / "dashboard-phone-timeline.png")
    page.locator("#admin-configured").screenshot(path=ARTIFACTS / "dashboard-phone-admin.png")
    page.context.close()

    dark = open_dashboard(browser, live_server, READ_KEY, color_scheme="dark")
    expect(cell(dark, "echo", "invocations")).to_have_text("4")
    dark.screenshot(path=ARTIFACTS / "dashboard-dark-readonly.png", full_page=True)
    dark.context.close()


def test_keyboard_reaches_the_controls(admin_page: Any) -> None:
    admin_page.keyboard.press("Tab")
    assert admin_page.evaluate("document.activeElement.textContent") == "Skip to content"
    reached = set()
    for _ in range(40):
        admin_page.keyboard.press("Tab")
        reached.add(
            admin_page.evaluate("document.activeElement.id || document.activeElement.textContent")
        )
    assert "pair" in reached
    assert "Log out" in reached
