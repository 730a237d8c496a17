"""The console over time windows: the overview's window selector and trends, the plugin page's
rate and percentile charts, per-hook quarantine reset, isolation and loop-block blocks."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import anyio
from starlette.testclient import TestClient

from agent_pm.api.dashboard._runtime import isolation_facts, loop_block_view
from agent_pm.api.dashboard._series import latency_series_chart, rate_chart, series_span, trend
from agent_pm.plugins.windows import WindowRecorder
from tests.api.dashboard.conftest import HX, csrf_of, fire, login, registry
from tests.api.dashboard_app import READ_KEY, TWICE, build_app
from tests.fixtures.clock import FakeClock


def row_of(page: str, name: str) -> str:
    start = page.index(f'id="row-{name}"')
    return page[start : page.index("</tr>", start)]


def cell(page: str, name: str, key: str) -> str:
    match = re.search(rf'id="c-{name}-{key}"[^>]*>(.*?)</td>', page, re.S)
    assert match is not None, (name, key)
    return match.group(1)


def test_overview_figures_follow_the_window_in_the_url(
    clocked: TestClient, clock: FakeClock
) -> None:
    login(clocked)
    fire(clocked, times=4)
    clock.advance(400)  # out of the last 5 minutes, inside the last hour
    fire(clocked)
    five = clocked.get("/dashboard").text
    assert cell(five, "echo", "calls") == "1" and cell(five, "failing", "errors") == "1"
    hour = clocked.get("/dashboard?window=1h").text
    assert cell(hour, "echo", "calls") == "5" and cell(hour, "failing", "errors") == "5"
    assert cell(hour, "failing", "ratio").strip() == "100 %"
    assert cell(hour, "needs_token", "skipped") == "5"
    assert "over the last hour" in hour and 'aria-current="true" data-window="1h"' in hour
    # Every link of the page keeps the window: sorting, the strip, the filter form.
    assert 'href="/dashboard?sort=calls&amp;window=1h"' in hour
    assert 'name="window" value="1h"' in hour
    assert "&#34;query&#34;: &#34;window=1h&#34;" in hour
    assert "since start" in clocked.get("/dashboard?window=all").text
    assert cell(clocked.get("/dashboard?window=bogus").text, "echo", "calls") == "1"


def test_overview_trend_draws_calls_and_failures_per_point(
    clocked: TestClient, clock: FakeClock
) -> None:
    login(clocked)
    fire(clocked, times=3)
    clock.advance(60)
    fire(clocked)
    spark = cell(clocked.get("/dashboard").text, "failing", "spark")
    assert 'class="s-calls"' in spark and 'class="s-failed"' in spark
    assert 'aria-label="4 calls, at most 3 per 10.0 s; failed calls in red"' in spark
    assert "no calls" in cell(clocked.get("/dashboard").text, "broken", "spark")


def test_overview_counts_quarantined_calls_and_shows_the_state(
    clocked: TestClient, clock: FakeClock
) -> None:
    login(clocked)
    fire(clocked, times=25)  # the breaker opens after 20 failed calls: 5 are quarantined
    page = clocked.get("/dashboard").text
    assert cell(page, "failing", "quarantined") == "5"
    assert "badge-quarantined" in row_of(page, "failing")
    assert re.search(r"<strong>2</strong> plugins quarantined", page)
    assert page.index('id="row-failing"') < page.index('id="row-echo"')


def test_trend_sums_hooks_and_scales_past_one_burst() -> None:
    clock = FakeClock(1_800_000_000.0)
    a, b = WindowRecorder(clock), WindowRecorder(clock)
    for _ in range(2):
        a.record("success", 1.0)
    clock.advance(10)
    for _ in range(500):
        b.record("error", 1.0)
    drawn = trend([a.series("5m", 30), b.series("5m", 30)])
    assert drawn is not None and (drawn.total, drawn.peak, drawn.points) == (502, 500, 30)
    assert trend([]) is None
    assert series_span("all", 100) == "5m" and series_span("all", 4000) == "24h"
    assert series_span("1h", 5) == "1h"


def test_rate_and_percentile_charts_have_ticks_and_pin_one_outlier() -> None:
    clock = FakeClock(1_800_000_000.0)
    recorder = WindowRecorder(clock)
    for second in range(30):
        clock.advance(10 if second else 0)
        for _ in range(10):
            recorder.record("success" if second % 3 else "error", 20.0)
        recorder.record("success", 6000.0 if second == 15 else 25.0)
    points = recorder.series("5m", 30)
    rates = rate_chart(points)
    assert rates is not None and [line.name for line in rates.lines] == ["calls", "failed"]
    assert len(rates.y_ticks) >= 5 and len(rates.x_axis.ticks) >= 4
    assert rates.calls == 330
    latency = latency_series_chart(points)
    assert latency is not None and [line.name for line in latency.lines] == ["p50", "p95", "p99"]
    assert len(latency.y_ticks) >= 5 and len(latency.x_axis.ticks) >= 4
    # The one slow point is pinned at the top; the axis stays near the bulk (about 25 ms).
    assert latency.scale.top < 100 and latency.pinned_count >= 1
    assert rate_chart([]) is None and latency_series_chart([]) is None


def test_plugin_page_window_charts_and_hook_figures(clocked: TestClient, clock: FakeClock) -> None:
    login(clocked)
    fire(clocked, times=3)
    clock.advance(30)
    fire(clocked, times=2)
    page = clocked.get("/dashboard/plugins/echo?window=1h").text
    assert 'aria-current="true" data-window="1h"' in page
    assert 'name="window" value="1h"' in page and "?hook=pre_plan&amp;window=1h" in page
    assert "Calls and failures per second" in page and "Latency percentiles" in page
    assert 'class="l-calls"' in page and 'class="l-p95"' in page and 'class="l-p99"' in page
    hooks = page[page.index('id="hooks-table"') : page.index('id="trends"')]
    assert '<td id="h-post_plan-calls" data-label="Calls" class="num">5</td>' in hooks
    assert 'data-label="p50"' in hooks and 'data-label="p99"' in hooks
    view = json.loads(re.search(r'data-view="([^"]+)"', page).group(1).replace("&#34;", '"'))  # type: ignore[union-attr]
    assert view["window"] == "1h"
    idle = clocked.get("/dashboard/plugins/echo?hook=pre_plan").text
    assert "No calls of <code>pre_plan</code> over the last 5 min" in idle


def test_per_hook_quarantine_reset_from_the_plugin_page(manifest: Path) -> None:
    manifest.write_text(TWICE)
    with TestClient(build_app(manifest)) as client:
        login(client)
        fire(client, times=3)
        fire(client, "pre_plan", times=3)
        _reset_each_hook(client)


def _reset_each_hook(client: TestClient) -> None:
    page = client.get("/dashboard/plugins/twice").text
    panel = page[page.index('id="quarantine-panel"') : page.index('id="latency"')]
    assert panel.count(">Reset</button>") == 2 and 'id="quarantine-reset"' in panel
    assert "3 of 3 calls failed" in panel and "UTC" in panel
    csrf = csrf_of(page)
    url = "/dashboard/plugins/twice/quarantine/reset"
    answer = client.post(url, data={"csrf_token": csrf, "hook": "pre_plan"}, headers=HX)
    assert answer.status_code == 200 and "Quarantine of twice, hook pre_plan, reset." in answer.text
    quarantine = registry(client).metadata_for("twice").quarantine
    assert quarantine["pre_plan"].state == "closed" and quarantine["post_plan"].state == "open"
    assert answer.text.count(">Reset</button>") == 1
    unknown = client.post(url, data={"csrf_token": csrf, "hook": "nope"}, headers=HX)
    assert unknown.status_code == 404 and "has no hook" in unknown.text
    plain = client.post(url, data={"csrf_token": csrf}, follow_redirects=False)
    assert plain.status_code == 303 and plain.headers["location"].endswith("#quarantine")
    assert registry(client).metadata_for("twice").quarantine["post_plan"].state == "closed"
    log = client.app.state.audit  # type: ignore[attr-defined]
    records = [r for r in anyio.run(log.read) if r.action == "reset_quarantine"]
    assert [(r.source, r.outcome, r.after) for r in records] == [
        ("dashboard", "ok", {"quarantine.pre_plan": "closed"}),
        ("dashboard", "error", {}),
        ("dashboard", "ok", {"quarantine.post_plan": "closed", "quarantine.pre_plan": "closed"}),
    ]
    login(client, READ_KEY)
    read = client.get("/dashboard/plugins/twice").text
    assert ">Reset</button>" not in read and 'id="quarantine-panel"' in read
    forged = client.post(url, data={"csrf_token": csrf_of(read)})
    assert forged.status_code == 403


def test_isolation_facts_show_known_fields_then_new_ones() -> None:
    meta: dict[str, Any] = {
        "isolation": {
            "promotion": {"reason": "blocked the loop 3 times", "at": "2026-12-02T03:00:00Z"},
            "new_field": 7,
            "hold_until": None,
            "restarts": 2,
            "mode": "process",
            "pid": 4242,
            "state": "running",
            "last_exit": "worker died of SIGKILL",
            "memory_mb": 256,
        }
    }
    facts = isolation_facts(meta)
    labels = [label for label, _ in facts]
    assert labels[:6] == ["Runs", "Worker", "PID", "Restarts", "Last exit", "Memory limit"]
    assert dict(facts)["Runs"] == "in its own process" and dict(facts)["PID"] == "4,242"
    assert dict(facts)["Promotion"] == [
        ("Reason", "blocked the loop 3 times"),
        ("At", "2026-12-02 03:00:00 UTC"),
    ]
    assert dict(facts)["New field"] == "7" and "No promotion before" not in labels
    assert isolation_facts({}) == []
    promoted = isolation_facts(
        {"isolation": {"mode": "process", "declared": "auto", "promoted": True,
                       "why": "held the loop 250 ms", "by": "platform",
                       "when": "2026-12-02T03:00:00+00:00", "promotions": 1}}
    )  # fmt: skip
    assert promoted[:4] == [
        ("Runs", "in its own process"),
        ("Manifest asks for", "auto"),
        ("Promoted", "yes"),
        ("Last move, why", "held the loop 250 ms"),
    ]
    assert ("Last move, when", "2026-12-02 03:00:00 UTC") in promoted


def test_loop_block_view_sums_up_histogram_and_worst_steps() -> None:
    meta = {
        "loop_blocks": {
            "warn_ms": 100.0,
            "bounds_ms": [1.0, 5.0, 10.0],
            "hooks": {
                "post_plan": {
                    "counts": [8, 0, 1, 1],
                    "steps": 10,
                    "total_ms": 250.0,
                    "max_ms": 180.0,
                    "over_threshold": 1,
                }
            },
            "worst": [{"ms": 180.0, "hook": "post_plan", "at": 1_800_000_000.0}],
        }
    }
    view = loop_block_view(meta)
    assert view is not None and view.warn_ms == 100.0
    [row] = view.rows
    assert (row.steps, row.mean_ms, row.max_ms, row.over) == (10, 25.0, 180.0, 1)
    assert row.buckets == [("≤ 1.00 ms", 8), ("≤ 10.0 ms", 1), ("> 10.0 ms", 1)]
    assert view.worst == [("180 ms", "post_plan", "2027-01-15 08:00:00 UTC")]
    assert loop_block_view({"loop_blocks": None}) is None


def test_window_links_keep_the_cluster_node_a_page_shows() -> None:
    from agent_pm.api._figures import FigureScope
    from agent_pm.api.dashboard._render import render
    from agent_pm.api.dashboard._view import WINDOWS, Filters

    query = Filters.from_query({"sort": "calls"}).query
    kept = {"windows": WINDOWS, "base": "/dashboard?", "query": query, "current": "1h"}
    nav = str(render("partials/windows.html", **kept, figures=FigureScope("node", ["node a"])))
    assert 'href="/dashboard?sort=calls&amp;window=24h&amp;node=node%20a"' in nav
    summed = str(render("partials/windows.html", **kept, figures=FigureScope("cluster", ["a"])))
    assert "node=" not in summed and 'aria-current="true" data-window="1h"' in summed
