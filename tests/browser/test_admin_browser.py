"""Administration in Chromium: conflicts resolved from the page, work kept across live updates,
busy buttons, focus, notices and the keyboard."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest

from tests.api.dashboard_app import ADMIN_KEY, READ_KEY
from tests.browser.conftest import ARTIFACTS, LiveServer
from tests.browser.console import open_console, same_document


@pytest.fixture
def admin(browser: Any, live_server: LiveServer) -> Iterator[Any]:
    page = open_console(browser, live_server, ADMIN_KEY, "/dashboard/admin")
    yield page
    assert page.errors == []
    page.context.close()


def test_a_clean_card_follows_a_change_made_elsewhere(admin: Any, live_server: LiveServer) -> None:
    from playwright.sync_api import expect

    card = admin.locator("#admin-echo")
    live_server.set_enabled("echo", False)
    expect(card.get_by_role("button", name="Enable echo")).to_be_visible()
    expect(card.locator("[data-changed-banner]")).to_be_hidden()
    assert same_document(admin)


def test_a_dirty_form_survives_a_live_update(admin: Any, live_server: LiveServer) -> None:
    from playwright.sync_api import expect

    card = admin.locator("#admin-configured")
    editor = card.get_by_label(re.compile("^Raw JSON"))
    editor.fill('{"channel": "#mine", "retries": 9}')
    live_server.set_config("configured", {"channel": "#theirs", "retries": 1})
    banner = card.locator("[data-changed-banner]")
    expect(banner).to_be_visible()
    expect(banner).to_contain_text("configured changed elsewhere")
    expect(editor).to_have_value('{"channel": "#mine", "retries": 9}')
    card.get_by_role("button", name="Load current values").click()
    editor = admin.locator("#admin-configured").get_by_label(re.compile("^Raw JSON"))
    expect(editor).to_have_value(re.compile('"#theirs"'))
    expect(admin.locator("#admin-configured [data-changed-banner]")).to_be_hidden()
    assert same_document(admin)


def test_a_412_conflict_is_shown_and_resolved_from_the_page(
    browser: Any, admin: Any, live_server: LiveServer
) -> None:
    from playwright.sync_api import expect

    card = admin.locator("#admin-configured")
    card.get_by_label("retries").fill("5")
    # Another operator disables the plugin through REST while this form is being edited.
    live_server.set_enabled("configured", False)
    expect(card.locator("[data-changed-banner]")).to_be_visible()
    card.get_by_role("button", name="Save settings").click()
    conflict = admin.locator("#admin-configured .conflict")
    expect(conflict).to_contain_text("Not saved: configured was changed by someone else")
    diff = conflict.locator("table.diff")
    expect(diff).to_contain_text("enabled")
    expect(diff.get_by_role("row", name="enabled true false")).to_have_count(1)
    expect(diff.get_by_role("row", name='state "enabled" "disabled"')).to_have_count(1)
    expect(admin.locator("#admin-configured").get_by_label("retries")).to_have_value("5")
    assert "retries: 5" not in live_server.manifest.read_text()
    for name, options in [
        ("1280", {}),
        ("390", {"viewport": {"width": 390, "height": 844}}),
        ("dark", {"color_scheme": "dark"}),
    ]:
        shot = admin if not options else _conflict_page(browser, live_server, options)
        shot.locator("#admin-configured .conflict").scroll_into_view_if_needed()
        # caret="initial": hiding the caret leaves style="" on inputs, which htmx's settle step
        # would then copy, against the page's CSP.
        shot.screenshot(path=ARTIFACTS / f"console-admin-conflict-{name}.png", caret="initial")
        if shot is not admin:
            shot.context.close()
    admin.get_by_role("button", name="Load current values").click()
    card = admin.locator("#admin-configured")
    expect(card.locator(".conflict")).to_have_count(0)
    expect(card.get_by_role("button", name="Enable configured")).to_be_visible()
    expect(card.get_by_label("retries")).to_have_value("2")
    card.get_by_label("retries").fill("6")
    card.get_by_role("button", name="Save settings").click()
    expect(admin.locator("#notices li")).to_contain_text("Saved the config of configured.")
    assert "retries: 6" in live_server.manifest.read_text()


def _conflict_page(browser: Any, server: LiveServer, options: dict[str, Any]) -> Any:
    """Another admin page brought into the same conflict, for the screenshots."""
    from playwright.sync_api import expect

    page = open_console(browser, server, ADMIN_KEY, "/dashboard/admin", **options)
    card = page.locator("#admin-configured")
    current = card.locator("input[name=base]").first.get_attribute("value") or ""
    page.evaluate(
        """(base) => document.querySelectorAll('#admin-configured input[name=base]')
            .forEach(i => { i.value = base.replace('"enabled":false', '"enabled":true'); })""",
        current,
    )
    page.evaluate(
        """() => document.querySelectorAll('#admin-configured input[name=revision]')
            .forEach(i => { i.value = '0'; })"""
    )
    card.get_by_label("retries").fill("5")
    card.get_by_role("button", name="Save settings").click()
    expect(page.locator("#admin-configured .conflict")).to_be_visible()
    return page


def test_buttons_are_busy_while_their_request_runs_and_focus_returns(
    admin: Any, live_server: LiveServer
) -> None:
    from playwright.sync_api import expect

    admin.evaluate(
        """() => {
            window.__busy = false;
            new MutationObserver(() => {
                const b = document.getElementById('toggle-echo');
                if (b && b.disabled && b.closest('form').getAttribute('aria-busy') === 'true')
                    window.__busy = true;
            }).observe(document.getElementById('admin-cards'),
                       {subtree: true, attributes: true, childList: true});
        }"""
    )
    toggle = admin.locator("#toggle-echo")
    toggle.focus()
    admin.keyboard.press("Enter")
    expect(admin.locator("#admin-echo").get_by_role("button", name="Enable echo")).to_be_visible()
    assert admin.evaluate("window.__busy") is True
    expect(admin.locator("#toggle-echo")).to_be_focused()
    expect(admin.locator("#toggle-echo")).to_be_enabled()
    assert "enabled: false" in live_server.manifest.read_text()


def test_notices_are_timestamped_live_in_their_region_and_expire(admin: Any) -> None:
    from playwright.sync_api import expect

    region = admin.locator("#notices")
    expect(region).to_have_attribute("role", "status")
    admin.locator("#reload-echo").click()
    notice = region.locator("li")
    expect(notice).to_have_count(1)
    expect(notice).to_contain_text(
        re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC · Reloaded echo\.")
    )
    expect(notice).to_have_count(0, timeout=30_000)


def test_keyboard_alone_saves_a_config_and_sees_a_json_error(
    admin: Any, live_server: LiveServer
) -> None:
    from playwright.sync_api import expect

    admin.locator("#config-configured").focus()
    admin.keyboard.press("Control+A")
    admin.keyboard.type('{\n"channel": "#kb",\n"retries" 3\n}')
    admin.keyboard.press("Tab")
    expect(admin.locator("#save-json-configured")).to_be_focused()
    admin.keyboard.press("Enter")
    error = admin.locator("#config-error-configured")
    expect(error).to_contain_text("line 3, column 11: Expecting ':' delimiter")
    expect(admin.locator("#save-json-configured")).to_be_focused()
    expect(admin.locator("#config-configured")).to_have_attribute("aria-invalid", "true")
    admin.locator("#config-configured").focus()
    admin.keyboard.press("Control+A")
    admin.keyboard.type('{"channel": "#kb", "retries": 3}')
    admin.keyboard.press("Tab")
    admin.keyboard.press("Enter")
    expect(admin.locator("#notices li")).to_contain_text("Saved the config of configured.")
    assert "#kb" in live_server.manifest.read_text()


def test_read_only_session_has_no_admin_and_forged_posts_fail(
    browser: Any, live_server: LiveServer
) -> None:
    from playwright.sync_api import expect

    page = open_console(browser, live_server, READ_KEY)
    expect(page.get_by_role("link", name="Administration")).to_have_count(0)
    statuses = page.evaluate(
        """async () => {
            const form = {'Content-Type': 'application/x-www-form-urlencoded'};
            const post = (body) => fetch('/dashboard/plugins/echo/enabled', {
                method: 'POST', body, headers: form});
            return [(await post('enabled=false&revision=0')).status,
                    (await post('enabled=false&revision=0&csrf_token=forged')).status,
                    (await fetch('/dashboard/admin')).status];
        }"""
    )
    assert statuses == [403, 403, 403]
    page.context.close()
