"""The console in Debian's Chromium against the real app: pages, URL state, live updates."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest

from tests.api.dashboard_app import ADMIN_KEY, READ_KEY, SECRET_VALUE
from tests.browser.conftest import ARTIFACTS, LiveServer
from tests.browser.console import NARROW, PHONE, open_console, same_document

PLUGINS = ["echo", "configured", "failing", "secretive", "needs_token", "broken"]


@pytest.fixture
def admin_page(browser: Any, live_server: LiveServer) -> Iterator[Any]:
    page = open_console(browser, live_server, ADMIN_KEY)
    yield page
    assert page.errors == []
    page.context.close()


def test_overview_shows_every_plugin_worst_first(admin_page: Any) -> None:
    from playwright.sync_api import expect

    for name in PLUGINS:
        expect(admin_page.locator(f"#row-{name}")).to_be_visible()
    expect(admin_page.locator("#overview-body tr").first).to_have_id("row-broken")
    expect(admin_page.locator("#row-broken")).to_contain_text("not a PluginBase subclass")
    expect(admin_page.locator("#status-strip")).to_contain_text("1 plugin invalid")
    assert SECRET_VALUE not in admin_page.content()


def test_fired_hooks_patch_counters_in_place(admin_page: Any, live_server: LiveServer) -> None:
    from playwright.sync_api import expect

    live_server.fire(times=3)
    expect(admin_page.locator("#c-echo-calls")).to_have_text("3")
    expect(admin_page.locator("#c-failing-errors")).to_have_text("3")
    expect(admin_page.locator("#c-failing-ratio")).to_have_text("100 %")
    expect(admin_page.locator("#c-echo-spark polyline")).to_have_count(2)
    expect(admin_page.locator("#conn .updated")).to_contain_text(re.compile(r"updated \d+ s ago"))
    assert same_document(admin_page)


def test_sorting_and_filters_live_in_the_url(admin_page: Any, live_server: LiveServer) -> None:
    from playwright.sync_api import expect

    live_server.fire(times=2)
    admin_page.get_by_role("link", name="Plugin", exact=True).click()
    expect(admin_page).to_have_url(re.compile(r"sort=name$"))
    expect(admin_page.locator("#overview-body tr").first).to_have_id("row-broken")
    admin_page.get_by_role("link", name=re.compile("^Plugin")).click()
    expect(admin_page).to_have_url(re.compile(r"sort=name&dir=desc$"))
    expect(admin_page.locator("#overview-body tr").first).to_have_id("row-secretive")
    admin_page.get_by_label("Health", exact=True).select_option("skipping")
    expect(admin_page).to_have_url(re.compile(r"health=skipping"))
    expect(admin_page.locator("#overview-body tr")).to_have_count(1)
    admin_page.reload()
    expect(admin_page.get_by_label("Health", exact=True)).to_have_value("skipping")
    expect(admin_page.locator("#overview-body tr")).to_have_count(1)


def test_plugin_page_keeps_hook_and_status_in_the_url_and_prepends_rows(
    admin_page: Any, live_server: LiveServer
) -> None:
    from playwright.sync_api import expect

    live_server.fire(times=2)
    live_server.fire("pre_plan")
    admin_page.locator("#row-echo a.name").click()
    expect(admin_page).to_have_url(re.compile(r"/dashboard/plugins/echo$"))
    admin_page.get_by_label("Hook", exact=True).select_option("pre_plan")
    expect(admin_page).to_have_url(re.compile(r"hook=pre_plan"))
    expect(admin_page.locator("#history-body tr[data-seq]")).to_have_count(1)
    expect(admin_page.locator("#conn")).to_have_attribute("data-state", "live")
    admin_page.evaluate("window.__sameDocument = true")
    live_server.fire("pre_plan", times=2)
    expect(admin_page.locator("#history-body tr[data-seq]")).to_have_count(3)
    time_cell = admin_page.locator("#history-body tr time").first
    expect(time_cell).to_have_text(re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} UTC$"))
    assert same_document(admin_page)


def test_status_filter_and_copyable_seq(browser: Any, live_server: LiveServer) -> None:
    from playwright.sync_api import expect

    live_server.fire(times=2)
    page = open_console(
        browser, live_server, READ_KEY, "/dashboard/plugins/failing?status=error",
        permissions=["clipboard-read", "clipboard-write"],
    )  # fmt: skip
    rows = page.locator("#history-body tr[data-seq]")
    expect(rows).to_have_count(2)
    expect(page.locator("#history-body .status-error")).to_have_count(2)
    seq = rows.first.get_attribute("data-seq")
    page.get_by_role("button", name=f"Copy seq {seq}").click()
    expect(page.get_by_role("button", name=f"Copy seq {seq}")).to_have_text("Copied")
    assert page.evaluate("navigator.clipboard.readText()") == seq
    page.goto(f"{live_server.url}/dashboard/plugins/failing?status=success")
    expect(page.locator("#history-body")).to_contain_text("No success calls")
    page.context.close()


def test_chart_has_readable_axes_and_clips_an_outlier(
    admin_page: Any, live_server: LiveServer
) -> None:
    from playwright.sync_api import expect

    live_server.fire(times=12)
    admin_page.goto(f"{live_server.url}/dashboard/plugins/failing")
    chart = admin_page.locator("#latency-chart svg")
    expect(chart).to_be_visible()
    ticks = chart.locator("text.tick")
    assert ticks.count() >= 9  # at least four on each axis, plus the caption
    expect(chart.locator(".mark")).to_have_count(12)
    expect(chart.locator("text.tick").last).to_contain_text("UTC")


def test_pause_holds_updates_and_resume_catches_up(
    admin_page: Any, live_server: LiveServer
) -> None:
    from playwright.sync_api import expect

    live_server.fire()
    expect(admin_page.locator("#c-echo-calls")).to_have_text("1")
    pause = admin_page.get_by_role("button", name="Pause updates")
    pause.click()
    expect(admin_page.locator("#conn")).to_have_attribute("data-state", "paused")
    expect(admin_page.get_by_role("button", name="Resume updates")).to_have_attribute(
        "aria-pressed", "true"
    )
    live_server.fire(times=2)
    # A tick and a half of observation: nothing may change while paused.
    admin_page.wait_for_timeout(1500)
    expect(admin_page.locator("#c-echo-calls")).to_have_text("1")
    admin_page.get_by_role("button", name="Resume updates").click()
    expect(admin_page.locator("#c-echo-calls")).to_have_text("3")
    expect(admin_page.locator("#conn")).to_have_attribute("data-state", "live")


def test_reconnect_resumes_without_losing_samples(admin_page: Any, live_server: LiveServer) -> None:
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
    expect(admin_page.locator("#c-echo-calls")).to_have_text("2")
    live_server.drop_live()
    live_server.fire(times=3)
    admin_page.wait_for_function("window.__states.includes('reconnecting')")
    expect(admin_page.locator("#conn")).to_have_attribute("data-state", "live")
    expect(admin_page.locator("#c-echo-calls")).to_have_text("5")
    assert same_document(admin_page)


def test_a_lost_server_greys_the_data_and_marks_it_stale(
    browser: Any, live_server: LiveServer
) -> None:
    from playwright.sync_api import expect

    page = open_console(browser, live_server, READ_KEY)
    expect(page.locator("#stale-banner")).to_be_hidden()
    live_server.stop()
    expect(page.locator("#main")).to_have_class(re.compile(r"\bstale\b"))
    banner = page.locator("#stale-banner")
    expect(banner).to_be_visible()
    expect(banner).to_contain_text(re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC"))
    expect(page.locator("#conn")).to_have_attribute("data-state", "reconnecting")
    opacity = page.evaluate("getComputedStyle(document.querySelector('.table-wrap')).opacity")
    assert float(opacity) < 1
    page.context.close()


def test_manifest_error_banner_until_a_good_edit(browser: Any, watched_server: LiveServer) -> None:
    from playwright.sync_api import expect

    page = open_console(browser, watched_server, READ_KEY)
    good = watched_server.manifest.read_text()
    watched_server.manifest.write_text("- name: [unclosed\n")
    banner = page.locator("#manifest-errors .banner")
    expect(banner).to_contain_text("The manifest file was not applied", timeout=15_000)
    page.screenshot(path=ARTIFACTS / "console-manifest-error-1280.png")
    watched_server.manifest.write_text(good.replace("enabled: true", "enabled: true", 1) + "\n")
    expect(banner).to_have_count(0, timeout=15_000)
    page.context.close()


def test_layout_has_no_clipped_columns_from_1024_px(browser: Any, live_server: LiveServer) -> None:
    live_server.fire(times=3)
    page = open_console(browser, live_server, ADMIN_KEY, viewport=NARROW)
    for path in [
        "/dashboard", "/dashboard/plugins/failing", "/dashboard/admin", "/dashboard/activity",
    ]:  # fmt: skip
        page.goto(f"{live_server.url}{path}")
        clipped = page.evaluate(
            """() => [...document.querySelectorAll('.table-wrap, .card')]
                .filter(el => el.scrollWidth > el.clientWidth + 1)
                .map(el => el.id || el.className)"""
        )
        assert clipped == [], (path, clipped)
        assert page.evaluate("document.documentElement.scrollWidth") <= NARROW["width"]
    page.context.close()


def test_phone_overview_fits_in_two_screens_with_44px_targets(
    browser: Any, live_server: LiveServer
) -> None:
    live_server.fire(times=3)
    page = open_console(browser, live_server, ADMIN_KEY, viewport=PHONE)
    height = page.evaluate("document.documentElement.scrollHeight")
    assert height <= 2.25 * PHONE["height"], height
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    for path in [
        "/dashboard", "/dashboard/plugins/failing", "/dashboard/admin", "/dashboard/activity",
    ]:  # fmt: skip
        page.goto(f"{live_server.url}{path}")
        small = page.evaluate(
            """() => [...document.querySelectorAll(
                    'a, button, select, input:not([type=hidden]), summary')]
                .filter(el => el.offsetParent !== null && !el.closest('.skip'))
                .filter(el => { const r = el.getBoundingClientRect();
                                return r.height < 44 || r.width < 44; })
                .map(el => `${el.tagName} ${el.id || el.textContent.trim().slice(0, 30)}`)"""
        )
        assert small == [], (path, small)
    page.context.close()


def test_skip_link_moves_focus_and_anchors_clear_the_sticky_header(
    admin_page: Any, live_server: LiveServer
) -> None:
    from playwright.sync_api import expect

    admin_page.keyboard.press("Tab")
    expect(admin_page.locator(".skip")).to_be_focused()
    admin_page.keyboard.press("Enter")
    expect(admin_page.locator("#main")).to_be_focused()
    live_server.fire(times=30)
    admin_page.goto(f"{live_server.url}/dashboard/plugins/echo#history")
    header = admin_page.locator("header.top").bounding_box()
    heading = admin_page.locator("#history-h").bounding_box()
    assert header is not None and heading is not None
    assert heading["y"] >= header["y"] + header["height"], (heading, header)
    admin_page.goto(f"{live_server.url}/dashboard/plugins/echo#config")
    heading = admin_page.locator("#config-h").bounding_box()
    header = admin_page.locator("header.top").bounding_box()
    assert heading is not None and header is not None
    assert heading["y"] >= header["y"] + header["height"]
