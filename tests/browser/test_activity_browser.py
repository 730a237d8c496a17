"""The activity feed in Chromium: a REST change and a rejected file edit appear live."""

from __future__ import annotations

import re
from typing import Any

from tests.api.dashboard_app import ADMIN_KEY
from tests.browser.conftest import ARTIFACTS, LiveServer
from tests.browser.console import PHONE, axe_violations, open_console, same_document


def test_feed_shows_a_rest_change_and_a_rejected_file_edit_live(
    browser: Any, watched_server: LiveServer
) -> None:
    from playwright.sync_api import expect

    page = open_console(browser, watched_server, ADMIN_KEY, "/dashboard/activity")
    expect(page.get_by_role("link", name="Activity")).to_have_attribute("aria-current", "page")
    body = page.locator("#activity-body")
    expect(body).to_contain_text("No admin action recorded yet.")
    watched_server.set_config("configured", {"channel": "#from-rest", "retries": 3})
    rest = body.locator("tr[data-audit]").first
    expect(rest).to_contain_text("changed the config of configured")
    expect(rest.locator('td[data-label="From"]')).to_have_text("REST")
    expect(rest.locator('td[data-label="Who"]')).to_contain_text("ADMIN_API_KEY")
    expect(rest).to_contain_text('config.channel: "#ops" → "#from-rest"')
    expect(rest.locator('td[data-label="Outcome"]')).to_contain_text("ok")
    good = watched_server.manifest.read_text()
    watched_server.manifest.write_text("- name: [unclosed\n")
    rejected = body.locator("tr.outcome-error").first
    expect(rejected).to_contain_text("an edit of the manifest file, rejected", timeout=15_000)
    expect(rejected.locator('td[data-label="From"]')).to_have_text("file watcher")
    expect(rejected.locator('td[data-label="Who"]')).to_contain_text(str(watched_server.manifest))
    expect(rejected).to_contain_text("not valid YAML")
    expect(body.locator("tr[data-audit]")).to_have_count(2)
    assert same_document(page) and page.errors == []
    assert axe_violations(page) == []
    page.screenshot(path=ARTIFACTS / "console-activity-1280.png", full_page=True)
    for name, options in [("390", {"viewport": PHONE}), ("dark", {"color_scheme": "dark"})]:
        shot = open_console(browser, watched_server, ADMIN_KEY, "/dashboard/activity", **options)
        expect(shot.locator("#activity-body tr[data-audit]")).to_have_count(2)
        assert axe_violations(shot) == [], name
        shot.screenshot(path=ARTIFACTS / f"console-activity-{name}.png", full_page=True)
        shot.context.close()
    # A good edit is recorded as applied; the filter for errors, kept in the URL, hides it.
    watched_server.manifest.write_text(good)
    expect(body.locator("tr[data-audit]")).to_have_count(3, timeout=15_000)
    expect(body.locator("tr[data-audit]").first).to_contain_text("applied")
    page.get_by_label("Outcome").select_option("error")
    expect(page).to_have_url(re.compile(r"/dashboard/activity\?.*outcome=error"))
    expect(page.locator("#activity-body tr[data-audit]")).to_have_count(1)
    page.context.close()
