"""What one open console tab costs: bytes per second, long tasks and frame gaps, under load.

Starts the console on a real uvicorn (the test application from ``tests/api/dashboard_app`` with
four async plugins), opens it in Debian's chromium and, for the overview and a plugin page,
measures three phases of ``--seconds`` each: idle (the same-run baseline), the demo's rate
(``serve --demo`` sends 4 requests/s, each firing the hook on its 4 plugins: 16 samples/s) and
``--rate`` samples/s. For each phase it reports the live channel's payload per tab (the
WebSocket messages' text as the page receives it, before any compression on the wire), the
main thread's long tasks (``PerformanceObserver('longtask')``, over 50 ms) and the largest gap
between animation frames. Each figure is the median of ``--runs`` runs.

    uv run python benchmarks/dashboard.py [--rate 2000] [--seconds 8] [--runs 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import anyio
import httpx
import uvicorn
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.api.dashboard_app import ADMIN_KEY, build_app  # noqa: E402
from tests.browser.conftest import CHROMIUM, LAUNCH_ARGS, _free_port  # noqa: E402

PLUGINS = 4
DEMO_RATE = 16.0
PAGES = {"overview": "/dashboard", "plugin page": "/dashboard/plugins/echo0?hook=post_plan"}
MANIFEST = "".join(
    f"- name: echo{i}\n  module: tests.fixtures.plugins:Echo\n  enabled: true\n"
    for i in range(PLUGINS)
)
OBSERVER = """
window.__longtasks = [];
window.__frameGaps = [];
new PerformanceObserver((list) => {
  for (const entry of list.getEntries()) window.__longtasks.push(entry.duration);
}).observe({type: 'longtask', buffered: true});
let last = performance.now();
const frame = (now) => {
  window.__frameGaps.push(now - last); last = now; requestAnimationFrame(frame);
};
requestAnimationFrame(frame);
"""
TAKE = """() => {
  const result = {tasks: window.__longtasks, gaps: window.__frameGaps};
  window.__longtasks = []; window.__frameGaps = [];
  return result;
}"""


async def drive(request: Request) -> JSONResponse:
    """Fire ``post_plan`` in the server's own loop at ``rate`` samples/s for ``seconds``."""
    registry = request.app.state.registry
    rate = float(request.query_params["rate"])
    seconds = float(request.query_params["seconds"])
    ticks_per_s = min(100.0, rate / PLUGINS)
    fires_per_tick = max(1, round(rate / PLUGINS / ticks_per_s))
    start_seq, start = registry.bus.seq, time.monotonic()
    tick = 0
    while time.monotonic() - start < seconds:
        for _ in range(fires_per_tick):
            await registry.fire("post_plan", plan={"n": tick})
        tick += 1
        await anyio.sleep(max(0.0, start + tick / ticks_per_s - time.monotonic()))
    elapsed = time.monotonic() - start
    return JSONResponse({"samples": registry.bus.seq - start_seq, "elapsed": elapsed})


class Tab:
    """One console tab and the bytes its live channel received."""

    def __init__(self, browser: Any, url: str, path: str) -> None:
        from playwright.sync_api import expect

        self.bytes = 0
        self.messages = 0
        self.page = browser.new_page(viewport={"width": 1280, "height": 900})
        self.page.add_init_script(OBSERVER)
        self.page.on("websocket", self._watch)
        self.page.goto(f"{url}/login")
        self.page.get_by_label("API key").fill(ADMIN_KEY)
        self.page.get_by_role("button", name="Log in").click()
        self.page.goto(f"{url}{path}")
        expect(self.page.locator("#conn")).to_have_attribute("data-state", "live")
        self.page.wait_for_timeout(2000)  # let the first render settle before the idle phase

    def _watch(self, socket: Any) -> None:
        socket.on("framereceived", self._count)

    def _count(self, payload: str | bytes) -> None:
        self.bytes += len(payload.encode() if isinstance(payload, str) else payload)
        self.messages += 1

    def take(self, seconds: float) -> dict[str, float]:
        data = self.page.evaluate(TAKE)
        gaps = sorted(data["gaps"][1:]) or [0.0]
        result = {
            "kb_per_s": self.bytes / 1024 / seconds,
            "messages_per_s": self.messages / seconds,
            "long_tasks": float(len(data["tasks"])),
            "max_frame_gap_ms": gaps[-1],
        }
        self.bytes = self.messages = 0
        return result


def phase(tab: Tab, url: str, rate: float, seconds: float) -> dict[str, float]:
    tab.take(1.0)  # start clean
    if rate == 0:
        tab.page.wait_for_timeout(seconds * 1000)
        return tab.take(seconds)
    done: dict[str, Any] = {}

    def run() -> None:
        params = {"rate": rate, "seconds": seconds}
        with httpx.Client(headers={"X-API-Key": ADMIN_KEY}, timeout=None) as client:
            done.update(client.post(f"{url}/bench/drive", params=params).json())

    driver = threading.Thread(target=run)
    driver.start()
    tab.page.wait_for_timeout(seconds * 1000)
    driver.join()
    result = tab.take(done["elapsed"])
    result["samples_per_s"] = done["samples"] / done["elapsed"]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=2000.0, help="samples per second")
    parser.add_argument("--seconds", type=float, default=8.0, help="length of each phase")
    parser.add_argument("--runs", type=int, default=3, help="runs whose median is reported")
    args = parser.parse_args()
    if not CHROMIUM.exists():
        sys.exit(f"{CHROMIUM} is missing: apt-get install -y chromium")
    from playwright.sync_api import sync_playwright

    rates = {"idle": 0.0, "demo": DEMO_RATE, f"{args.rate:,.0f}/s": args.rate}
    runs: dict[tuple[str, str], list[dict[str, float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        manifest = Path(tmp) / "plugins.yaml"
        manifest.write_text(MANIFEST)
        app = build_app(manifest)
        app.router.routes.append(Route("/bench/drive", drive, methods=["POST"]))
        port = _free_port()
        server = uvicorn.Server(uvicorn.Config(app, port=port, log_level="warning"))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        while not server.started:
            time.sleep(0.02)
        url = f"http://127.0.0.1:{port}"
        try:
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(
                    executable_path=str(CHROMIUM), args=LAUNCH_ARGS
                )
                for _ in range(args.runs):
                    for page_name, path in PAGES.items():
                        tab = Tab(browser, url, path)
                        for label, rate in rates.items():
                            result = phase(tab, url, rate, args.seconds)
                            runs.setdefault((page_name, label), []).append(result)
                        tab.page.close()
                browser.close()
        finally:
            server.should_exit = True
            thread.join(10)
    report(runs, args.runs)


def report(runs: dict[tuple[str, str], list[dict[str, float]]], count: int) -> None:
    print(f"median of {count} runs; payload is the live channel's text per tab")
    print(f"{'page':<12} {'phase':<9} {'samples/s':>9} {'KB/s':>6} {'msgs/s':>6}"
          f" {'long tasks':>10} {'max frame gap':>14} {'vs idle':>7}")  # fmt: skip
    for page_name in PAGES:
        idle_gap = statistics.median(r["max_frame_gap_ms"] for r in runs[(page_name, "idle")])
        for (name, label), results in runs.items():
            if name != page_name:
                continue
            median = {
                key: statistics.median(r.get(key, 0.0) for r in results) for key in results[0]
            }
            print(
                f"{name:<12} {label:<9} {median.get('samples_per_s', 0.0):>9,.0f}"
                f" {median['kb_per_s']:>6.2f} {median['messages_per_s']:>6.2f}"
                f" {median['long_tasks']:>10.0f} {median['max_frame_gap_ms']:>11.1f} ms"
                f" {median['max_frame_gap_ms'] / max(idle_gap, 1.0):>6.2f}x"
            )


if __name__ == "__main__":
    main()
