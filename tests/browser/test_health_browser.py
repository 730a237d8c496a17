"""Health in Chromium: failing and quarantined plugins shown within a second, the window
selector, per-hook quarantine reset."""

from __future__ import annotations

import re
from typing import Any

from tests.api.dashboard_app import ADMIN_KEY, READ_KEY
from tests.browser.conftest import LiveServer
from tests.browser.console import open_console, same_document

# Records, in the page's own clock, when each plugin's health cell first shows each state: a
# mutation observer runs as the DOM changes, so the time does not depend on how often the
# test looks.
WATCH_HEALTH = """() => {
    window.__healthSeen = {};
    const note = () => {
        for (const badge of document.querySelectorAll('[id$="-health"] .badge')) {
            const key = badge.closest('td').id + ':' + badge.className;
            if (!(key in window.__healthSeen)) window.__healthSeen[key] = performance.now();
        }
    };
    new MutationObserver(note).observe(document.getElementById('main'),
        {subtree: true, childList: true, characterData: true});
}"""
# Fires the hook from the page itself, so the clock starts in the same place it stops: right
# before the request that makes the plugin change state leaves the browser.
FIRE = """async ([key, hook]) => {
    window.__fired = performance.now();
    const answer = await fetch('/hooks/' + hook, {method: 'POST', headers: {'X-API-Key': key}});
    if (!answer.ok) throw new Error('fire answered ' + answer.status);
    return performance.now() - window.__fired;
}"""
SEEN = "([cell, state]) => window.__healthSeen[cell + ':badge badge-' + state]"
LIMIT_MS = 1000


def shown_within_a_second(page: Any, cell: str, state: str) -> float:
    """Fire the call that changes ``cell``'s health; return how long the page took to show
    ``state``, waiting no longer than what is left of one second after the call left."""
    page.evaluate(FIRE, [ADMIN_KEY, "post_plan"])
    left = LIMIT_MS - page.evaluate("performance.now() - window.__fired")
    # Waiting at least one poll reads a change that already happened within the second.
    page.wait_for_function(SEEN, arg=[cell, state], timeout=max(left, 50), polling="raf")
    seen = page.evaluate(SEEN, [cell, state]) - page.evaluate("window.__fired")
    assert seen <= LIMIT_MS, f"{state} shown {seen:.0f} ms after the call"
    return float(seen)


def test_failing_then_quarantined_shown_on_the_overview_within_a_second(
    browser: Any, live_server: LiveServer
) -> None:
    from playwright.sync_api import expect

    page = open_console(browser, live_server, READ_KEY)
    page.evaluate(WATCH_HEALTH)
    # Nine failed calls: degraded (failures among fewer than the ten calls health needs).
    live_server.fire(times=9)
    expect(page.locator("#c-failing-calls")).to_have_text("9")
    expect(page.locator("#c-failing-health .badge")).to_contain_text("degraded")
    # The tenth failed call makes the plugin failing.
    shown_within_a_second(page, "c-failing-health", "failing")
    expect(page.locator("#c-failing-health")).to_contain_text("10 of 10 calls failed")
    expect(page.locator("#status-strip")).to_contain_text("plugins failing")
    # Twenty failed calls open the breaker: quarantined.
    live_server.fire(times=9)
    expect(page.locator("#c-failing-calls")).to_have_text("19")
    shown_within_a_second(page, "c-failing-health", "quarantined")
    expect(page.locator("#overview-body tr").first).to_have_id(
        re.compile("row-(failing|secretive)")
    )
    expect(page.locator("#status-strip")).to_contain_text("plugins quarantined")
    live_server.fire()
    expect(page.locator("#c-failing-quarantined")).to_have_text("1")
    assert same_document(page) and page.errors == []
    page.context.close()


def test_window_selector_lives_in_the_url_and_keeps_updating(
    browser: Any, live_server: LiveServer
) -> None:
    from playwright.sync_api import expect

    live_server.fire(times=2)
    page = open_console(browser, live_server, READ_KEY)
    windows = page.get_by_role("navigation", name="Time window")
    expect(windows.get_by_role("link", name="5 min")).to_have_attribute("aria-current", "true")
    windows.get_by_role("link", name="1 h").click()
    expect(page).to_have_url(re.compile(r"/dashboard\?window=1h$"))
    expect(page.locator("table.overview caption")).to_contain_text("over the last hour")
    expect(windows.get_by_role("link", name="1 h")).to_have_attribute("aria-current", "true")
    page.get_by_role("link", name="Calls", exact=True).click()
    expect(page).to_have_url(re.compile(r"sort=calls&window=1h$"))
    expect(page.locator("#conn")).to_have_attribute("data-state", "live")
    live_server.fire()
    expect(page.locator("#c-echo-calls")).to_have_text("3")
    page.get_by_role("link", name="since start").click()
    expect(page).to_have_url(re.compile(r"window=all"))
    expect(page.locator("table.overview caption")).to_contain_text("since start")
    page.locator("#row-echo a.name").click()
    expect(page).to_have_url(re.compile(r"/dashboard/plugins/echo\?window=all$"))
    expect(page.locator("#trends-h")).to_contain_text("since start")
    page.get_by_role("navigation", name="Time window").get_by_role("link", name="24 h").click()
    expect(page).to_have_url(re.compile(r"/dashboard/plugins/echo\?hook=post_plan&window=24h$"))
    expect(page.locator("#trends-h")).to_contain_text("over the last 24 h")
    expect(page.locator("#series-charts svg")).to_have_count(2)
    assert page.locator("#series-charts svg").first.locator("text.tick").count() >= 9
    page.get_by_label("Hook", exact=True).select_option("pre_plan")
    expect(page).to_have_url(re.compile(r"hook=pre_plan&status=&window=24h"))
    page.reload()
    expect(page.locator("#trends-h")).to_contain_text("pre_plan")
    assert page.errors == []
    page.context.close()


def test_quarantine_is_reset_per_hook_then_for_all(browser: Any, twice_server: LiveServer) -> None:
    from playwright.sync_api import expect

    twice_server.fire(times=3)
    twice_server.fire("pre_plan", times=3)
    page = open_console(browser, twice_server, ADMIN_KEY, "/dashboard/plugins/twice")
    panel = page.locator("#quarantine-panel")
    expect(panel.locator("tr.breaker-open")).to_have_count(2)
    page.get_by_role("button", name="Reset the quarantine of twice hook pre_plan").click()
    expect(panel.locator("tr.breaker-open")).to_have_count(1)
    expect(panel.locator('tr[data-hook="pre_plan"]')).to_contain_text("closed")
    expect(panel.locator('tr[data-hook="post_plan"]')).to_contain_text("open")
    expect(page.locator("#notices")).to_contain_text("Quarantine of twice, hook pre_plan, reset.")
    expect(page.locator("#quarantine-h")).to_be_focused()
    # The rest from the keyboard alone: the reset-all button, then Enter.
    page.get_by_role("button", name="Reset the quarantine of every hook of twice").focus()
    page.keyboard.press("Enter")
    expect(panel.locator("tr.breaker-open")).to_have_count(0)
    expect(page.locator("#c-twice-health, #plugin-summary .badge").first).not_to_contain_text(
        "quarantined"
    )
    assert same_document(page) and page.errors == []
    page.context.close()
