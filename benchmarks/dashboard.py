"""Is the dashboard still responsive under 2,000 hook samples per second?

Starts the dashboard on a real uvicorn (the test application from ``tests/api/dashboard_app``
with four async plugins), opens it in Debian's chromium, and records the main thread's long tasks
(``PerformanceObserver('longtask')``, tasks over 50 ms) and the longest gap between animation
frames: first for ``--seconds`` with the page idle (the same-run baseline), then for ``--seconds``
while the server fires hooks at ``--rate`` samples per second.

    uv run python benchmarks/dashboard.py [--rate 2000] [--seconds 10]
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
MANIFEST = "".join(
    f"- name: echo{i}\n  module: tests.fixtures.plugins:Echo\n  enabled: true\n"
    for i in range(PLUGINS)
)
OBSERVER = """
window.__longtasks = [];
window.__frameGaps = [];
window.__messages = 0;
new PerformanceObserver((list) => {
  for (const entry of list.getEntries()) window.__longtasks.push(entry.duration);
}).observe({type: 'longtask', buffered: true});
let last = performance.now();
const frame = (now) => {
  window.__frameGaps.push(now - last); last = now; requestAnimationFrame(frame);
};
requestAnimationFrame(frame);
document.addEventListener('htmx:ws:after:message:incoming', () => { window.__messages += 1; });
"""
TAKE = """() => {
  const result = {tasks: window.__longtasks, gaps: window.__frameGaps, messages: window.__messages};
  window.__longtasks = []; window.__frameGaps = []; window.__messages = 0;
  return result;
}"""


async def drive(request: Request) -> JSONResponse:
    """Fire ``post_plan`` in the server's own loop at ``rate`` samples/s for ``seconds``."""
    registry = request.app.state.registry
    rate = float(request.query_params["rate"])
    seconds = float(request.query_params["seconds"])
    fires_per_tick = max(1, round(rate / PLUGINS / 100))  # 100 ticks a second
    start_seq, start = registry.bus.seq, time.monotonic()
    tick = 0
    while time.monotonic() - start < seconds:
        for _ in range(fires_per_tick):
            await registry.fire("post_plan", plan={"n": tick})
        tick += 1
        await anyio.sleep(max(0.0, start + tick / 100 - time.monotonic()))
    elapsed = time.monotonic() - start
    return JSONResponse({"samples": registry.bus.seq - start_seq, "elapsed": elapsed})


def summary(label: str, data: dict[str, Any], seconds: float) -> dict[str, float]:
    tasks = sorted(data["tasks"])
    gaps = sorted(data["gaps"][1:]) or [0.0]
    result = {
        "long_tasks": len(tasks),
        "max_long_task_ms": max(tasks, default=0.0),
        "p95_long_task_ms": statistics.quantiles(tasks, n=20)[-1]
        if len(tasks) > 1
        else max(tasks, default=0.0),
        "max_frame_gap_ms": gaps[-1],
        "p95_frame_gap_ms": gaps[int(len(gaps) * 0.95) - 1] if len(gaps) > 1 else gaps[0],
        "updates_per_s": data["messages"] / seconds,
    }
    print(
        f"{label:>8}: long tasks {result['long_tasks']:3d}"
        f"  max {result['max_long_task_ms']:6.1f} ms  p95 {result['p95_long_task_ms']:6.1f} ms"
        f"  | frame gap max {result['max_frame_gap_ms']:6.1f} ms"
        f"  p95 {result['p95_frame_gap_ms']:5.1f} ms"
        f"  | live updates {result['updates_per_s']:4.1f}/s"
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=2000.0, help="samples per second")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each phase")
    args = parser.parse_args()
    if not CHROMIUM.exists():
        sys.exit(f"{CHROMIUM} is missing: apt-get install -y chromium")
    from playwright.sync_api import expect, sync_playwright

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
                page = browser.new_page(viewport={"width": 1280, "height": 900})
                page.add_init_script(OBSERVER)
                page.goto(f"{url}/login")
                page.get_by_label("API key").fill(ADMIN_KEY)
                page.get_by_role("button", name="Log in").click()
                expect(page.locator("#conn")).to_have_attribute("data-state", "live")
                page.evaluate(TAKE)
                page.wait_for_timeout(args.seconds * 1000)
                idle = summary("idle", page.evaluate(TAKE), args.seconds)
                result: dict[str, Any] = {}

                def run_load() -> None:
                    params = {"rate": args.rate, "seconds": args.seconds}
                    with httpx.Client(headers={"X-API-Key": ADMIN_KEY}, timeout=None) as client:
                        result.update(client.post(f"{url}/bench/drive", params=params).json())

                driver = threading.Thread(target=run_load)
                driver.start()
                page.wait_for_timeout(args.seconds * 1000)
                driver.join()
                loaded = summary("loaded", page.evaluate(TAKE), args.seconds)
                browser.close()
        finally:
            server.should_exit = True
            thread.join(10)
    rate = result["samples"] / result["elapsed"]
    print(f"delivered {result['samples']} samples in {result['elapsed']:.1f} s = {rate:,.0f}/s")
    base = max(idle["max_frame_gap_ms"], 1.0)
    print(
        f"loaded vs idle: max long task {loaded['max_long_task_ms']:.1f}"
        f" vs {idle['max_long_task_ms']:.1f} ms,"
        f" max frame gap ratio {loaded['max_frame_gap_ms'] / base:.2f}x"
    )


if __name__ == "__main__":
    main()
